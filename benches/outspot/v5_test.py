"""Test period (>= 2022-07-01, warm contacts, as replicate.py scores the current model) for the two
candidates that passed the adoption rule on validation (REPORT-v5.md). Nothing here is tuned: the
variants and their constants were fixed on the training period."""
import v5_lib as L
import numpy as np
from sim import *

D = load()
st = State(D, SPLIT, hl=480)
everything = State(D, 10**12, hl=480)
idx = window_events(D, SPLIT, 10**12, st, exclude=everything.machine)
c, h = D["c"][idx], D["hour"][idx]
print("warm contacts", len(np.unique(c)), "test opens", len(idx))

# what the binary's auto calibration (28 d, 3-SE rule) picks at the split, training data only
for key, scaled, name in [(None, False, "open counts"), ("dh", False, "distinct day-hour"), ("day", True, "day counts, scaled prior")]:
    m = L.auto_fit(key, scaled=scaled)
    m(D, SPLIT)
    print(f"auto fit at the split, {name}: prior {m.chosen[-1][1]}, bandwidth {m.chosen[-1][2]}")

ex = L._extras(D, st, SPLIT)
warm = (st.eng >= 3) & ~st.machine
ratio = ex["Hday"][warm].sum() / st.H[warm].sum()
variants = {
    "current model (480/12/1)": st.scores(c, 12.0, 1.0),
    "distinct day-hour counts, prior 12": L.expert("dh12", D, st, SPLIT, c),
    f"day counts, prior 12 x {ratio:.3f} = {12 * ratio:.2f}": st.scores(c, 12 * ratio, 1.0, pop=L.pop_of(st, ex["Hday"]), H=ex["Hday"]),
}
res = {k: tally(P, h) for k, P in variants.items()}
uc, inv = np.unique(c, return_inverse=True)
rng = np.random.default_rng(2022)
B = rng.integers(0, len(uc), (2000, len(uc)))
def per_contact(x):
    return np.bincount(inv, weights=x, minlength=len(uc))
n_c = np.bincount(inv, minlength=len(uc)).astype(float)
base_hit, base_nll = res["current model (480/12/1)"]
print("\n| variant | hit@3 [95 %] | NLL [95 %] | Δhit@3 [95 %] | ΔNLL (+ = better) [95 %] |")
print("|---|---|---|---|---|")
for k, (hit, nll) in res.items():
    ph, pn, dh, dn = per_contact(hit), per_contact(nll), per_contact(hit - base_hit), per_contact(base_nll - nll)
    n = n_c[B].sum(1)
    ci = lambda v: np.percentile(v[B].sum(1) / n, [2.5, 97.5])
    a, b, cc, d = ci(ph), ci(pn), ci(dh), ci(dn)
    print(f"| {k} | {hit.mean():.4f} [{a[0]:.3f}, {a[1]:.3f}] | {nll.mean():.4f} [{b[0]:.3f}, {b[1]:.3f}] | "
          f"{(hit - base_hit).mean():+.4f} [{cc[0]:+.3f}, {cc[1]:+.3f}] | {(base_nll - nll).mean():+.4f} [{d[0]:+.3f}, {d[1]:+.3f}] |")
print(f"\ncurrent model exact: hit@3 {base_hit.mean():.8f}, NLL {base_nll.mean():.8f} (binary: 0.292 / 2.892)")
