from harness import *
D = load()
W = windows(30, 12)
base = run(D, fixed(), W)
for k in [0.0, 7.0, 28.0]:
    r = run(D, weekday_prior(k=k), W)
    print(fmt(f"prior base: population hour given weekday, contact's weekday mix (k={k:g})", summary(r, base)), flush=True)
# fairness check: windows outside the default's tuning range (before 2022-01-02)
early = [w for w in W if w[0] < SPLIT - 180 * DAY]
late = [w for w in W if w[0] >= SPLIT - 180 * DAY]
print(len(early), len(late))
import harness as H
for name, meth in [("6x30 d fit", temporal_fit(sub_days=30, n_sub=6)), ("3x30 d fit", temporal_fit(sub_days=30, n_sub=3)),
                   ("leave-one-day-out", lodo_method()), ("DM raw, score bw 1", dm_method()),
                   ("recent pop 0.5@30", recent_pop(0.5, 30.0)), ("two timescales 2x@14", two_timescale(2.0, 14.0))]:
    for tag, ws in [("early 6 windows", early), ("late 6 windows", late)]:
        b = run(D, fixed(), ws)
        print(fmt(f"{name} [{tag}]", summary(run(D, meth, ws), b)), f"default there: {summary(b)['hit3']:.4f} {summary(b)['nll']:.4f}", flush=True)
