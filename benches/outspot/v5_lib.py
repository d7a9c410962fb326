"""Third Outspot study (REPORT-v5.md): prequential per-contact trust, per-contact prior strength,
day counting, recency experts and a nested stacker.

Time is cut into 30-day blocks aligned on the split (2022-07-01); the 12 validation windows of
REPORT.md are the 12 blocks before the split. Every event is scored *prequentially*: from the
profiles as of the start of its own block (what the batch-by-batch model would have predicted
for it), never from anything later. Per-contact accumulated log scores at a cutoff therefore use
only events before that cutoff, and every fitted value of a method scored on a window is fitted
on events before that window.
"""
import re
import numpy as np
from harness import *  # noqa: F401,F403  (sim + harness: load, State, spread24, run, summary, ...)
import harness

SPLIT_DAY = SPLIT // DAY
A0, BW0, HL0 = 12.0, 1.0, 480.0


def block_starts(D):
    lo = int(D["day"].min())
    hi = int(D["day"].max())
    k0 = -((SPLIT_DAY - lo) // 30 + 1)
    k1 = (hi - SPLIT_DAY) // 30 + 1
    return [(SPLIT_DAY + 30 * k) * DAY for k in range(k0, k1 + 1)]


# ---------------------------------------------------------------- experts (all from a State at a cut)

def _extras(D, st, cut):
    """Per-contact extras for a State: last-K raw hour counts, day-counted profiles, last open day."""
    if hasattr(st, "_ex"):
        return st._ex
    ex = {}
    sel = D["t"] < cut
    c, day, hour = D["c"][sel], D["day"][sel], D["hour"][sel]
    n = st.n
    w = np.power(0.5, (st.ref - day) / HL0).astype(np.float32).astype(np.float64)
    # day-split counts: each contact-day has weight 1 split over its opens
    g = c * 100000 + day
    ug, inv, cnt = np.unique(g, return_inverse=True, return_counts=True)
    Hd = np.zeros((n, 24))
    np.add.at(Hd, (c, hour), w / cnt[inv])
    ex["Hday"] = Hd
    # distinct (contact, day, hour): weight 1 each
    g2 = g * 24 + hour
    _, first_idx = np.unique(g2, return_index=True)
    Hdh = np.zeros((n, 24))
    np.add.at(Hdh, (c[first_idx], hour[first_idx]), w[first_idx])
    ex["Hdayhour"] = Hdh
    # first open of each contact-day only (weight 1)
    _, fo = np.unique(g, return_index=True)
    Hfo = np.zeros((n, 24))
    np.add.at(Hfo, (c[fo], hour[fo]), w[fo])
    ex["Hfirst"] = Hfo
    # each contact-day weight 1 split equally over its distinct open hours
    ud, dinv = np.unique(g2, return_inverse=True)
    gd = ud // 24
    _, kinv, kcnt = np.unique(gd, return_inverse=True, return_counts=True)
    Hdu = np.zeros((n, 24))
    np.add.at(Hdu, (c[first_idx], hour[first_idx]), w[first_idx] / kcnt[kinv][np.searchsorted(ud, g2[first_idx])])
    ex["Hdayuniq"] = Hdu
    # last-K opens (events are sorted by contact, then time)
    ex["c"], ex["hour"], ex["day"] = c, hour, day
    end = np.searchsorted(c, np.arange(n), side="right")
    start = np.searchsorted(c, np.arange(n), side="left")
    ex["start"], ex["end"] = start, end
    ex["cums"] = np.vstack([np.zeros(24), np.cumsum(np.eye(24)[hour], axis=0)])
    last = np.full(n, -10**6)
    has = end > start
    last[has] = day[end[has] - 1]
    ex["last_day"] = last
    st._ex = ex
    return ex


def lastK(D, st, cut, contacts, K):
    ex = _extras(D, st, cut)
    e, s = ex["end"][contacts], ex["start"][contacts]
    b = np.maximum(e - K, s)
    return ex["cums"][e] - ex["cums"][b]


HKEYS = {"day": "Hday", "dh": "Hdayhour", "fo": "Hfirst", "du": "Hdayuniq"}


def pop_of(st, counts_matrix, bw=BW0):
    return st.population(bw, counts=counts_matrix[(st.eng > 0) & ~st.machine].sum(0))


def expert(name, D, st, cut, c):
    """Hour-of-day distributions of expert `name` for contacts c, from the State at `cut`."""
    pop = st.population(BW0)
    if name == "pop":
        return np.tile(pop, (len(c), 1))
    if name.startswith("m"):  # m12, m4, m48: the current model at prior a
        return st.scores(c, float(name[1:]), BW0, pop=pop)
    if name.startswith("rec"):  # last K opens, spread 1 h, smoothed toward the model with 2 pseudo-opens
        K = int(name[3:])
        R = lastK(D, st, cut, c, K)
        m = st.scores(c, A0, BW0, pop=pop)
        out = (spread24(R, BW0) + 2.0 * m) / (R.sum(1, keepdims=True) + 2.0)
        return out
    pre = re.match(r"[a-z]+", name).group(0)
    if pre in HKEYS:  # day-counted profiles, e.g. day12 = split day counts at prior 12
        ex = _extras(D, st, cut)
        a = float(name[len(pre):])
        Hx = ex[HKEYS[pre]]
        popx = pop_of(st, Hx)
        return st.scores(c, a, BW0, pop=popx, H=Hx)
    raise KeyError(name)


# ---------------------------------------------------------------- prequential table

class Preq:
    """Every non-machine event scored by each expert from the profiles at its block's start."""

    def __init__(self, D, names):
        self.names = list(names)
        self.starts = block_starts(D)
        rows = dict(c=[], day=[], block=[], warm=[], ell=[], hour=[])
        self.states = []
        for b, s in enumerate(self.starts):
            st = harness.state(D, s, HL0)
            self.states.append(st)
            e = s + 30 * DAY
            idx = np.nonzero((D["t"] >= s) & (D["t"] < e))[0]
            c = D["c"][idx]
            keep = ~st.machine[c]
            idx, c = idx[keep], c[keep]
            if len(idx) == 0:
                continue
            h = D["hour"][idx]
            Ps = np.stack([expert(nm, D, st, s, c) for nm in self.names], 1)  # n x K x 24
            rows["ell"].append(np.log(np.maximum(Ps[np.arange(len(h)), :, h], 1e-12)))
            rows["c"].append(c); rows["day"].append(D["day"][idx]); rows["hour"].append(h)
            rows["block"].append(np.full(len(idx), b)); rows["warm"].append(st.eng[c] >= 3)
        for k, v in rows.items():
            setattr(self, k, np.concatenate(v))
        self.n = D["n"]
        self.block_of = {s: b for b, s in enumerate(self.starts)}

    def S(self, cut, hs=np.inf, cols=None):
        """Per-contact accumulated log scores of events before `cut`, each weighted 2^{-age/hs}."""
        sel = self.day < cut // DAY
        ell = self.ell[sel] if cols is None else self.ell[sel][:, cols]
        w = np.ones(sel.sum()) if not np.isfinite(hs) else np.power(0.5, (cut // DAY - self.day[sel]) / hs)
        out = np.zeros((self.n, ell.shape[1]))
        np.add.at(out, self.c[sel], ell * w[:, None])
        return out

    def nscored(self, cut):
        sel = self.day < cut // DAY
        return np.bincount(self.c[sel], minlength=self.n)


def softmax_w(S, tau):
    z = tau * S
    z = z - z.max(1, keepdims=True)
    w = np.exp(z)
    return w / w.sum(1, keepdims=True)


# ---------------------------------------------------------------- methods

def bma(pq, names, tau=1.0, hs=np.inf):
    """Per-contact Bayesian model averaging (tau=1, hs=inf) of the experts, weights from the
    prequential evidence; tau tempers it, hs forgets old evidence."""
    cols = [pq.names.index(nm) for nm in names]
    def m(D, cut):
        st = harness.state(D, cut, HL0)
        W = softmax_w(pq.S(cut, hs, cols), tau)
        def f(c):
            E = np.stack([expert(nm, D, st, cut, c) for nm in names], 1)
            return (W[c][:, :, None] * E).sum(1)
        return f
    return m


def bma_nested(pq, names, taus=(0.25, 0.5, 1.0, 2.0), hss=(60.0, 180.0, np.inf), n_sub=6):
    """(tau, hs) chosen by the lowest NLL over the n_sub blocks before the cutoff (warm events,
    each scored with the weights and experts as of its own block's start)."""
    cols = [pq.names.index(nm) for nm in names]
    def m(D, cut):
        b = pq.block_of[cut]
        best = None
        for tau in taus:
            for hs in hss:
                tot = 0.0
                for bb in range(max(b - n_sub, 0), b):
                    sel = (pq.block == bb) & pq.warm
                    if not sel.any():
                        continue
                    W = softmax_w(pq.S(pq.starts[bb], hs, cols), tau)[pq.c[sel]]
                    p = (W * np.exp(pq.ell[sel][:, cols])).sum(1)
                    tot -= np.log(p).sum()
                if best is None or tot < best[0]:
                    best = (tot, tau, hs)
        m.chosen.append((cut, best[1], best[2]))
        return bma(pq, names, best[1], best[2])(D, cut)
    m.chosen = []
    return m


def features(pq, D, st, cut, c):
    """Stacker features of contacts c at `cut`: 1, log(1+decayed opens), log(1+days since the last
    open), prequential mean log-ratio model-vs-population, log(1+scored events), normalized entropy
    of the spread history."""
    ex = _extras(D, st, cut)
    tot = st.H[c].sum(1)
    since = np.clip(cut // DAY - ex["last_day"][c], 0, 3650)
    S = pq.S(cut, np.inf, [pq.names.index("m12"), pq.names.index("pop")])[c]
    n = pq.nscored(cut)[c]
    lr = (S[:, 0] - S[:, 1]) / (n + 5.0)
    q = spread24(st.H[c], BW0) + 1e-9
    q = q / q.sum(1, keepdims=True)
    ent = -(q * np.log(q)).sum(1) / np.log(24)
    return np.column_stack([np.ones(len(c)), np.log1p(tot), np.log1p(since), lr, np.log1p(n), ent])


def fit_mixture(X, E, l2=1e-2, iters=400, lr=0.05):
    """Softmax-linear mixture weights: max sum log sum_k softmax(X W)_k E_k (expert 0 fixed at 0)."""
    n, F = X.shape
    K = E.shape[1]
    mu, sd = X[:, 1:].mean(0), X[:, 1:].std(0) + 1e-9
    Xs = np.column_stack([X[:, :1], (X[:, 1:] - mu) / sd])
    Wt = np.zeros((F, K))
    m_, v_ = np.zeros_like(Wt), np.zeros_like(Wt)
    for it in range(1, iters + 1):
        z = Xs @ Wt
        z -= z.max(1, keepdims=True)
        pi = np.exp(z); pi /= pi.sum(1, keepdims=True)
        p = (pi * E).sum(1, keepdims=True)
        r = pi * E / p
        g = Xs.T @ (r - pi) / n - l2 * Wt
        g[:, 0] = 0
        m_ = 0.9 * m_ + 0.1 * g
        v_ = 0.999 * v_ + 0.001 * g * g
        Wt += lr * (m_ / (1 - 0.9 ** it)) / (np.sqrt(v_ / (1 - 0.999 ** it)) + 1e-8)
    return Wt, mu, sd


def stacker(pq, names, n_train=None):
    """Mixture of experts with weights softmax(features @ W), W fitted on warm prequential events
    of the blocks before the cutoff (all of them, or the last n_train)."""
    cols = [pq.names.index(nm) for nm in names]
    assert names[0] == "m12"
    feat_cache = {}
    def feats_at(D, bb, c):
        s = pq.starts[bb]
        if bb not in feat_cache:
            st = pq.states[bb]
            feat_cache[bb] = features(pq, D, st, s, np.arange(pq.n))
        return feat_cache[bb][c]
    def m(D, cut):
        b = pq.block_of[cut]
        lo = 0 if n_train is None else max(b - n_train, 0)
        X, E = [], []
        for bb in range(lo, b):
            sel = (pq.block == bb) & pq.warm
            if not sel.any():
                continue
            X.append(feats_at(D, bb, pq.c[sel]))
            E.append(np.exp(pq.ell[sel][:, cols]))
        X, E = np.vstack(X), np.vstack(E)
        Wt, mu, sd = fit_mixture(X, E)
        m.chosen.append((cut, len(X), np.round(Wt, 2)))
        st = harness.state(D, cut, HL0)
        def f(c):
            Xc = feats_at(D, b, c)
            Xs = np.column_stack([Xc[:, :1], (Xc[:, 1:] - mu) / sd])
            z = Xs @ Wt
            z -= z.max(1, keepdims=True)
            pi = np.exp(z); pi /= pi.sum(1, keepdims=True)
            Ex = np.stack([expert(nm, D, st, cut, c) for nm in names], 1)
            return (pi[:, :, None] * Ex).sum(1)
        return f
    m.chosen = []
    return m


def single(name):
    def m(D, cut):
        st = harness.state(D, cut, HL0)
        return lambda c: expert(name, D, st, cut, c)
    return m


def fixed_mix(weights):
    """Fixed global mixture {expert: weight}."""
    def m(D, cut):
        st = harness.state(D, cut, HL0)
        def f(c):
            return sum(w * expert(nm, D, st, cut, c) for nm, w in weights.items())
        return f
    return m


def daycount_scaled(key="day"):
    """Day-counted profile with the prior scaled by the warm population's mass ratio
    (day-counted mass / open-counted mass) at the cutoff: no fitted value."""
    def m(D, cut):
        st = harness.state(D, cut, HL0)
        ex = _extras(D, st, cut)
        Hx = ex[HKEYS[key]]
        warm = (st.eng >= 3) & ~st.machine
        a = A0 * Hx[warm].sum() / st.H[warm].sum()
        m.chosen.append((cut, round(a, 2)))
        popx = pop_of(st, Hx)
        return lambda c: st.scores(c, a, BW0, pop=popx, H=Hx)
    m.chosen = []
    return m


def nested_choice(pq, cands, n_sub=6):
    """Choose among fixed expert names by the lowest prequential NLL on the n_sub blocks before
    the cutoff (warm events)."""
    cols = {nm: pq.names.index(nm) for nm in cands}
    def m(D, cut):
        b = pq.block_of[cut]
        sel = (pq.block >= b - n_sub) & (pq.block < b) & pq.warm
        loss = {nm: -pq.ell[sel, cols[nm]].sum() for nm in cands}
        nm = min(loss, key=loss.get)
        m.chosen.append((cut, nm))
        return single(nm)(D, cut)
    m.chosen = []
    return m


def dispersion_prior(gamma, key="Hdayhour"):
    """Per-contact prior strength a_c = 12 * (kappa_c / median kappa)^(-gamma), kappa_c the
    contact's collision probability sum_h p_h^2 (pairs of distinct day-hour opens in the same hour,
    smoothed with 20 pseudo-pairs at the population's value) over the population's sum_h pop_h^2.
    Concentrated contacts get a weaker prior, dispersed ones a stronger one."""
    def m(D, cut):
        st = harness.state(D, cut, HL0)
        ex = _extras(D, st, cut)
        # undecayed distinct day-hour counts
        c, day, hour = ex["c"], ex["day"], ex["hour"]
        g2 = (c * 100000 + day) * 24 + hour
        _, fi = np.unique(g2, return_index=True)
        N = np.zeros((st.n, 24))
        np.add.at(N, (c[fi], hour[fi]), 1.0)
        n = N.sum(1)
        pop = st.population(BW0)
        pi2 = (pop * pop).sum()
        # collision probability, smoothed with 20 pseudo-pairs at the population's, over the population's
        kap = (((N * N).sum(1) - n) + 20.0 * pi2) / (n * (n - 1) + 20.0) / pi2
        warm = (st.eng >= 3) & ~st.machine
        med = np.median(kap[warm])
        a = A0 * (kap / med) ** (-gamma)
        def f(cc):
            raw = st.H[cc]
            tot = raw.sum(1, keepdims=True)
            aa = a[cc][:, None]
            out = (spread24(raw, BW0) + aa * pop) / (tot + aa)
            out[(tot[:, 0] <= 0) | st.machine[cc]] = pop
            return out
        return f
    return m


def nested_method(cands, n_sub=6):
    """Choose among methods {name: method} by the lowest NLL over the n_sub 30-day blocks before
    the cutoff (warm events, each block predicted from what precedes it)."""
    def m(D, cut):
        subs = windows(30, n_sub, end=cut)
        loss = {}
        for nm, meth in cands.items():
            loss[nm] = sum(r[2].sum() for r in run(D, meth, subs))
        nm = min(loss, key=loss.get)
        m.chosen.append((cut, nm))
        return cands[nm](D, cut)
    m.chosen = []
    return m


def auto_fit(key=None, sub_days=28, rule_se=3.0, bws=(0.5, 1.0, 2.0), scaled=False):
    """The binary's `auto` calibration (last 28 days, grid prior x bandwidth, keep the default
    unless a candidate beats it by > 3 SE over contacts), on open counts (key None) or on
    day-counted profiles; default prior 12 (or 12 x mass ratio with scaled)."""
    def prof(D, st, cut):
        if key is None:
            return st.H, st.population
        Hx = _extras(D, st, cut)[HKEYS[key]]
        return Hx, (lambda bw: pop_of(st, Hx, bw))
    def a_def(D, st, cut):
        if not scaled:
            return A0
        Hx = _extras(D, st, cut)[HKEYS[key]]
        warm = (st.eng >= 3) & ~st.machine
        return A0 * Hx[warm].sum() / st.H[warm].sum()
    def m(D, cut):
        s = cut - sub_days * DAY
        st = harness.state(D, s, HL0)
        idx = window_events(D, s, cut, st)
        c, h = D["c"][idx], D["hour"][idx]
        Hx, popf = prof(D, st, s)
        dflt = (a_def(D, st, s), 1.0)
        uc, inv = np.unique(c, return_inverse=True)
        L = {}
        for bw in bws:
            pop = popf(bw)
            for a in list(PRIORS) + [dflt[0]]:
                P = st.scores(c, a, bw, pop=pop, H=Hx)
                nll = -np.log(np.maximum(P[np.arange(len(h)), h], 1e-12))
                L[(a, bw)] = np.bincount(inv, weights=nll, minlength=len(uc))
        base = L[dflt]
        ok = []
        for k, v in L.items():
            d = base - v
            if d.sum() > rule_se * np.sqrt(len(d) * d.var()):
                ok.append((v.sum(), k))
        a, bw = min(ok)[1] if ok else dflt
        st2 = harness.state(D, cut, HL0)
        if not ok:
            a = a_def(D, st2, cut)
        m.chosen.append((cut, round(float(a), 2), bw))
        Hx2, popf2 = prof(D, st2, cut)
        pop2 = popf2(bw)
        return lambda cc: st2.scores(cc, a, bw, pop=pop2, H=Hx2)
    m.chosen = []
    return m
