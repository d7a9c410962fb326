"""Replicate `sendtime backtest --split 2022-07-01 --relearn DAYS` (warm group, hour of day),
and give 95% intervals for the model's own hit@3 and NLL by resampling contacts.

Each step of the test period is scored by predictors built from the events before the step's
start only; contacts are warm by their history before the split, as in the frozen backtest.
"""
import numpy as np
from sim import *

D = load()
everything = State(D, 10**12, hl=480)
excl = everything.machine
at_split = State(D, SPLIT, hl=480)
END = int(D["t"].max()) + 1


def interval(c, x, n=2000):
    """95% interval of the mean of x per event, resampling contacts."""
    u, inv = np.unique(c, return_inverse=True)
    sums, counts = np.bincount(inv, weights=x), np.bincount(inv)
    rng = np.random.default_rng(2022)
    pick = rng.integers(0, len(u), (n, len(u)))
    return np.percentile(sums[pick].sum(1) / counts[pick].sum(1), [2.5, 97.5])


print("| relearn | events | model hit@3 [95%] | model NLL [95%] | simple smoothing | population best hours |")
print("|---|---|---|---|---|---|")
for step in [None, 30, 7, 1]:
    starts = [SPLIT] if step is None else list(range(SPLIT, END, step * DAY))
    C, H, N, HS, NS, HP, NP = ([] for _ in range(7))
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else END
        idx = window_events(D, s, e, at_split, exclude=excl)
        if len(idx) == 0:
            continue
        c, h = D["c"][idx], D["hour"][idx]
        st = State(D, s, hl=480)
        for (hs, ns), P in [((H, N), st.scores(c, 12, 1.0)),
                            ((HS, NS), State(D, s, hl=1e9).scores(c, 24, 0.0)),
                            ((HP, NP), np.tile(st.population(1.0), (len(c), 1)))]:
            hit, nll = tally(P, h)
            hs.append(hit)
            ns.append(nll)
        C.append(c)
    C, H, N, HS, NS, HP, NP = map(np.concatenate, (C, H, N, HS, NS, HP, NP))
    ih, il = interval(C, H), interval(C, N)
    print(f"| {'frozen at the split' if step is None else f'every {step} d'} | {len(H)} "
          f"| {H.mean():.3f} [{ih[0]:.3f}, {ih[1]:.3f}] | {N.mean():.3f} [{il[0]:.3f}, {il[1]:.3f}] "
          f"| {HS.mean():.3f} / {NS.mean():.3f} | {HP.mean():.3f} / {NP.mean():.3f} |")
