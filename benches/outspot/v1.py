import sys, time
from harness import *
D = load()
W = windows(30, 10)
for s,e in W[::-1]:
    st=state(D,s,480.0); idx=window_events(D,s,e,st); print(time.strftime('%Y-%m-%d',time.gmtime(s)), len(idx), len(np.unique(D['c'][idx])))
t=time.time()
base = run(D, fixed(), W)
print(fmt("default 480/12/1", summary(base)), time.time()-t)
pop = run(D, fixed(a=1e6), W)
print(fmt("population only", summary(pop, base)))
