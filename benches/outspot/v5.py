"""Third Outspot study: every variant on the 12 validation windows (REPORT-v5.md).
Run: OUTSPOT_CSV=... python v5.py > v5.out. The test period is not read here (see v5_test.py)."""
import time
import warnings
warnings.filterwarnings('ignore', category=RuntimeWarning)
from v5_lib import *

D = load()
W = windows(30, 12)
NAMES = ["pop", "m12", "m4", "m48", "rec3", "rec5", "rec10", "day6", "day8", "day12", "day16", "day24", "dh12"]
pq = Preq(D, NAMES)
base = run(D, fixed(), W)
early = [w for w in W if w[0] < SPLIT - 180 * DAY]
late = [w for w in W if w[0] >= SPLIT - 180 * DAY]
print(fmt("current model 480/12/1", summary(base)))
RES = {}


def go(name, meth, add="yes", split=False):
    t = time.time()
    r = run(D, meth, W)
    d = summary(r, base)
    RES[name] = d
    print(fmt(name, d, add), f"{time.time() - t:.1f}s", flush=True)
    if hasattr(meth, "chosen") and meth.chosen:
        ch = meth.chosen[-12:]
        if isinstance(ch[0][-1], np.ndarray):  # stacker: training size and the last fit's weights
            print("   training events per window:", [x[1] for x in ch], "; last weights (rows: features, cols: experts):",
                  np.array2string(ch[-1][2], separator=",").replace("\n", ""), flush=True)
        else:
            print("   chosen:", [tuple(float(v) if isinstance(v, (float, np.floating)) else v for v in x[1:]) for x in ch], flush=True)
    if split:
        for tag, ws in [("early 6", early), ("late 6", late)]:
            b = run(D, fixed(), ws)
            print(fmt(f"   {name} [{tag}]", summary(run(D, meth, ws), b), add), flush=True)
    return r


print("\n## A. Prequential per-contact trust (Bayesian model averaging with time-ordered evidence)")
go("BMA {model, population}, tau 1 (no fitted value)", bma(pq, ["m12", "pop"]))
go("BMA {model, population}, nested (tau, score half-life)", bma_nested(pq, ["m12", "pop"]))
go("BMA {model, recent-5}, tau 1", bma(pq, ["m12", "rec5"]))
go("BMA {model, recent-5, population}, nested", bma_nested(pq, ["m12", "rec5", "pop"]))

print("\n## B. Per-contact prior strength")
go("BMA over priors {4, 12, 48}, tau 1 (mixture-of-Dirichlets prior)", bma(pq, ["m4", "m12", "m48"]))
go("BMA over priors {4, 12, 48} + population, nested", bma_nested(pq, ["m4", "m12", "m48", "pop"]))
for g in [0.25, 0.5, 1.0]:
    go(f"dispersion prior a_c = 12 (kappa_c/median)^-{g}", dispersion_prior(g))
go("dispersion prior, gamma nested in {0, .25, .5, 1}",
   nested_method({g: (fixed() if g == 0 else dispersion_prior(g)) for g in [0.0, 0.25, 0.5, 1.0]}))

print("\n## C. Counting open days instead of opens")
go("day counts (each contact-day weight 1 split over its opens), prior 12", single("day12"), split=True)
go("distinct day-hour counts, prior 12", single("dh12"), split=True)
go("day counts, prior 12 x (day mass / open mass) (no fitted value)", daycount_scaled("day"), split=True)
go("first open of each day only, prior 12", single("fo12"), split=True)
go("each day weight 1 split equally over its distinct open hours, prior 12", single("du12"))
go("distinct day-hour counts, prior 12 x (mass ratio)", daycount_scaled("dh"), split=True)
go("first open of each day, prior 12 x (mass ratio)", daycount_scaled("fo"))
for a in ["day6", "day8", "day16", "day24"]:
    go(f"day counts, prior {a[3:]} (context, not nested)", single(a))
go("day counts, prior nested in {6, 8, 12, 16, 24}", nested_choice(pq, ["day6", "day8", "day12", "day16", "day24"]))

print("\n## C2. With the binary's auto calibration (28 d, 3-SE rule, nested) on top")
go("open counts (current) + auto", auto_fit())
go("day counts + auto (default 12)", auto_fit("day"))
go("day counts + auto (default 12 x mass ratio)", auto_fit("day", scaled=True))
go("distinct day-hour counts + auto (default 12)", auto_fit("dh"))

print("\n## D. Recency: mixture with a last-K-opens histogram (fixed grid, not nested)")
for K in [3, 5, 10]:
    for lam in [0.1, 0.2]:
        go(f"(1-{lam}) model + {lam} recent-{K}", fixed_mix({"m12": 1 - lam, f"rec{K}": lam}))

print("\n## E. Stacker: mixture weights softmax(features @ W), fitted on earlier blocks' prequential events")
go("stacker {model, population, recent-5}", stacker(pq, ["m12", "pop", "rec5"]))
go("stacker {model, population, recent-5, day counts}", stacker(pq, ["m12", "pop", "rec5", "day12"]))

print("\n## F. Combinations with day counting")
go("BMA {day counts, population}, tau 1", bma(pq, ["day12", "pop"]))
go("BMA {day counts, model}, tau 1", bma(pq, ["day12", "m12"]))
go("0.5 day counts + 0.5 model (fixed)", fixed_mix({"day12": 0.5, "m12": 0.5}))

print("\n## Test candidates. Rule written after a first pass had shown sections A-C1 (not C's fo/du/dh-scaled")
print("## rows, C2, D-F) and before the test period was read: among passing variants with no grid-picked")
print("## value, (1) the largest NLL z among those addable as plain sums with a per-contact last-day")
print("## marker (first open of the day / distinct day-hour), (2) the largest NLL z overall.")
print("## -> (1) distinct day-hour counts, prior 12; (2) day counts, prior 12 x mass ratio. See v5_test.py.")
print("\n## Adoption rule: mean NLL gain > 2 SE over windows and mean hit@3 gain >= 0")
for name, d in RES.items():
    ok = d["dnll"] > 2 * d["dnll_se"] and d["dhit"] >= 0
    print(f"{'PASS' if ok else 'fail'}  {d['dnll'] / max(d['dnll_se'], 1e-12):+5.2f} SE  {name}")
