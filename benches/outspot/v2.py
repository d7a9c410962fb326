import sys, time
from harness import *
D = load()
W = windows(30, 12)
base = run(D, fixed(), W)
rows = [fmt("default 480/12/1 (fixed)", summary(base))]
def go(name, meth, add="yes"):
    t = time.time()
    r = run(D, meth, W)
    rows.append(fmt(name, summary(r, base), add))
    print(rows[-1], f"{time.time()-t:.1f}s", flush=True)
    if hasattr(meth, "chosen"):
        print("   chosen:", [tuple(round(float(x), 2) for x in ch[1:]) for ch in meth.chosen], flush=True)
    return r
go("population only", fixed(a=1e6))
go("current auto: 28 d, 3-SE rule (approx.)", temporal_fit(sub_days=28, n_sub=1, rule_se=3, bws=[0.5, 1.0, 2.0]))
go("28 d fit, no rule", temporal_fit(sub_days=28, n_sub=1, bws=[0.5, 1.0, 2.0]))
go("3x30 d fit (a, bw)", temporal_fit(sub_days=30, n_sub=3))
go("6x30 d fit (a, bw)", temporal_fit(sub_days=30, n_sub=6))
go("3x30 d fit, 2-SE rule", temporal_fit(sub_days=30, n_sub=3, rule_se=2))
go("4x45 d fit (a, bw, half-life)", temporal_fit(sub_days=45, n_sub=4, hls=[120.0, 240.0, 480.0, 1e9]))
go("DM evidence, raw counts, bw 0 fit, score bw 1", dm_method())
go("DM evidence, raw counts, bw 0 fit and score", dm_method(bw_score=0.0))
go("DM evidence, decayed counts spread 1 h", dm_method(bw_fit=1.0, counts="decayed"))
go("leave-one-day-out fit (a, bw)", lodo_method())
go("leave-one-event-out fit (a, bw)", lodo_method(unit="event"))
print("\n".join(rows))
