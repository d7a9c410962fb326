import sys, time
from harness import *
D = load()
W = windows(30, 12)
base = run(D, fixed(), W)
rows = []
def go(name, meth, add="yes"):
    r = run(D, meth, W)
    rows.append(fmt(name, summary(r, base), add))
    print(rows[-1], flush=True)
    return r
for lam in [0.2, 0.4]:
    for wide in [2.0, 3.0]:
        go(f"two-scale spread: {lam} of counts at {wide} h", two_scale(lam, wide))
for beta in [0.5, 1.0, 2.0]:
    for hl2 in [14.0, 30.0, 90.0]:
        go(f"two timescales: + {beta} x counts at half-life {hl2:g} d", two_timescale(beta, hl2))
for rho in [0.25, 0.5]:
    for ph in [30.0, 90.0]:
        go(f"prior base: {rho} of population at half-life {ph:g} d", recent_pop(rho, ph))
for a in [8.0, 16.0]:
    go(f"fixed prior {a:g}", fixed(a=a))
for bw in [0.75, 1.25]:
    go(f"fixed bw {bw:g}", fixed(bw=bw))
