"""Replicate `sendtime backtest --split 2022-07-01` (warm group, hour of day)."""
import numpy as np
from sim import *

D = load()
st = State(D, SPLIT, hl=480)
everything = State(D, 10**12, hl=480)
excl = everything.machine
idx = window_events(D, SPLIT, 10**12, st, exclude=excl)
c, h = D["c"][idx], D["hour"][idx]
print("warm contacts", len(np.unique(c)), "test opens", len(idx), "machines excluded", excl.sum())

def report(name, P, ranked=False):
    hit, nll = tally(P, h)
    hit1 = (np.argsort(-P, axis=1, kind="stable")[:, 0] == h).mean()
    print(f"{name:<32} hit@1 {hit1:.3f} hit@3 {hit.mean():.3f}" + ("" if ranked else f" NLL {nll.mean():.3f}"))

report("sendtime model (480/12/1)", st.scores(c, 12, 1.0))
hist = State(D, SPLIT, hl=1e9)
report("histogram + population prior", hist.scores(c, 24, 0.0))
pop = st.population(1.0)
report("population best hours", np.tile(pop, (len(c), 1)))
mode = st.raw_counts[c] + pop * 1e-6
report("contact's mode hour", mode, ranked=True)
fixed = np.zeros((len(c), 24)); fixed[:, [9, 10, 11]] = [3, 2, 1]
report("fixed hour", fixed, ranked=True)
