"""Validation windows inside the training period and nested fitting procedures.

A *method* maps (D, cutoff) -> a function scoring contacts (array) -> hour-of-day distributions,
using only events before `cutoff` (everything it fits, it fits on those).
"""
import numpy as np
from sim import *

PRIORS = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 1024, 1e6]
BWS = [0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]


def windows(days=30, k=10, end=SPLIT):
    return [(end - j * days * DAY, end - (j - 1) * days * DAY) for j in range(1, k + 1)]


_state_cache = {}


def state(D, until, hl, pop_hl=None):
    key = (until, hl, pop_hl)
    if key not in _state_cache:
        _state_cache[key] = State(D, until, hl=hl, pop_hl=pop_hl)
    return _state_cache[key]


def run(D, method, wins, exclude=None):
    """Per window: (contacts, hits, nll) arrays over warm events."""
    out = []
    for (s, e) in wins:
        st0 = state(D, s, 480.0)  # warm and machine judged on the history before the window
        idx = window_events(D, s, e, st0, exclude=exclude)
        c, h = D["c"][idx], D["hour"][idx]
        P = method(D, s)(c)
        hit, nll = tally(P, h)
        out.append((c, hit, nll))
    return out


def summary(res, base=None):
    """Pooled hit@3 and NLL over windows; with `base`, paired gains (mean over windows, SE
    over windows, windows won) and a contact-clustered bootstrap interval for the pooled gain."""
    hits = np.concatenate([r[1] for r in res])
    nlls = np.concatenate([r[2] for r in res])
    d = dict(events=len(hits), hit3=hits.mean(), nll=nlls.mean(),
             win_hit=np.array([r[1].mean() for r in res]), win_nll=np.array([r[2].mean() for r in res]))
    if base is not None:
        dh = d["win_hit"] - np.array([r[1].mean() for r in base])
        dn = np.array([r[2].mean() for r in base]) - d["win_nll"]
        k = len(dh)
        d.update(dhit=dh.mean(), dhit_se=dh.std(ddof=1) / np.sqrt(k), dnll=dn.mean(),
                 dnll_se=dn.std(ddof=1) / np.sqrt(k), nll_wins=int((dn > 0).sum()),
                 hit_wins=int((dh > 0).sum()), k=k)
        # bootstrap over (window, contact) clusters of the pooled gain
        rows = []
        for r, b in zip(res, base):
            c = r[0]
            for u in np.unique(c):
                m = c == u
                rows.append((m.sum(), r[1][m].sum() - b[1][m].sum(), b[2][m].sum() - r[2][m].sum()))
        rows = np.array(rows)
        rng = np.random.default_rng(2022)
        bs = rng.integers(0, len(rows), (2000, len(rows)))
        n = rows[bs, 0].sum(1)
        d["boot_hit"] = np.percentile(rows[bs, 1].sum(1) / n, [2.5, 97.5])
        d["boot_nll"] = np.percentile(rows[bs, 2].sum(1) / n, [2.5, 97.5])
    return d


def fmt(name, d, additive="yes"):
    s = f"| {name} | {d['hit3']:.4f} | {d['nll']:.4f} |"
    if "dhit" in d:
        s += (f" {d['dhit']:+.4f} ± {d['dhit_se']:.4f} ({d['hit_wins']}/{d['k']}) |"
              f" {d['dnll']:+.4f} ± {d['dnll_se']:.4f} ({d['nll_wins']}/{d['k']}) |"
              f" [{d['boot_hit'][0]:+.3f}, {d['boot_hit'][1]:+.3f}] / [{d['boot_nll'][0]:+.3f}, {d['boot_nll'][1]:+.3f}] |")
    return s + f" {additive} |"


# ---------------------------------------------------------------- methods

def fixed(hl=480.0, a=12.0, bw=1.0):
    def m(D, cut):
        st = state(D, cut, hl)
        pop = st.population(bw)
        return lambda c: st.scores(c, a, bw, pop=pop)
    return m


def grid_losses(D, cut, hl, sub_days, n_sub, priors=PRIORS, bws=BWS, week=False):
    """Summed hour-of-day (or hour-of-week-free proxy) NLL per (a, bw) and per contact over
    n_sub back-to-back sub-windows of sub_days before `cut`, each predicted from what precedes it."""
    tot = {}
    per_contact = {}
    n_ev = 0
    for j in range(1, n_sub + 1):
        s, e = cut - j * sub_days * DAY, cut - (j - 1) * sub_days * DAY
        st = state(D, s, hl)
        idx = window_events(D, s, e, st)
        c, h = D["c"][idx], D["hour"][idx]
        n_ev += len(idx)
        for bw in bws:
            pop = st.population(bw)
            for a in priors:
                P = st.scores(c, a, bw, pop=pop)
                nll = -np.log(np.maximum(P[np.arange(len(h)), h], 1e-12))
                tot[(a, bw)] = tot.get((a, bw), 0.0) + nll.sum()
                pc = per_contact.setdefault((a, bw), {})
                # per (contact, sub-window) cluster sums, for standard errors
                key = c * 100 + j
                uk, inv = np.unique(key, return_inverse=True)
                sums = np.bincount(inv, weights=nll)
                for kk, vv in zip(uk, sums):
                    pc[kk] = pc.get(kk, 0.0) + vv
    return tot, per_contact, n_ev


def temporal_fit(hl=480.0, sub_days=30, n_sub=3, rule_se=0.0, default=(12.0, 1.0), bws=BWS,
                 hls=None):
    """Fit (prior, bandwidth[, half-life]) on the last n_sub*sub_days days before the cutoff.
    rule_se > 0: keep `default` unless a candidate beats it by > rule_se standard errors."""
    def m(D, cut):
        best = None
        for h in (hls or [hl]):
            tot, pc, n = grid_losses(D, cut, h, sub_days, n_sub, bws=bws)
            if n == 0:
                continue
            for key, v in tot.items():
                if best is None or v < best[0]:
                    best = (v, h, key)
            if rule_se > 0 and h == hl:
                dk = default
                base = pc[dk]
                ok = []
                for key in tot:
                    diffs = np.array([base[k] - pc[key][k] for k in base])
                    gain = diffs.sum()
                    se = np.sqrt(len(diffs) * diffs.var())
                    if gain > rule_se * se:
                        ok.append((tot[key], key))
                best = (0, hl, min(ok)[1] if ok else dk)
        _, h, (a, bw) = best
        m.chosen.append((cut, h, a, bw))
        st = state(D, cut, h)
        pop = st.population(bw)
        return lambda c: st.scores(c, a, bw, pop=pop)
    m.chosen = []
    return m


# ---------------------------------------------------------------- marginal likelihood fits
import math
_lg = np.frompyfunc(math.lgamma, 1, 1)


def lgam(x):
    return _lg(np.asarray(x, dtype=float)).astype(float)


def dm_evidence(Ncounts, m, a):
    """Dirichlet-multinomial log evidence of count rows Ncounts under Dirichlet(a*m)."""
    N = Ncounts.sum(1)
    return (len(N) * math.lgamma(a) - lgam(N + a).sum()
            + (lgam(Ncounts + a * m) - lgam(a * m)).sum())


def dm_fit(Ncounts, m):
    """argmax_a of the DM evidence (what Minka's fixed point converges to), on a log grid
    refined by golden section."""
    grid = np.exp(np.linspace(np.log(0.5), np.log(5000), 60))
    ev = [dm_evidence(Ncounts, m, a) for a in grid]
    i = int(np.argmax(ev))
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if dm_evidence(Ncounts, m, np.exp(x1)) > dm_evidence(Ncounts, m, np.exp(x2)):
            hi = x2
        else:
            lo = x1
    return float(np.exp((lo + hi) / 2))


def dm_method(hl=480.0, bw_fit=0.0, bw_score=1.0, counts="raw"):
    """Prior strength from the DM marginal likelihood of warm training contacts' hour-of-day
    counts (`raw`: integer counts; `decayed`: the model's decayed counts), spread at bw_fit,
    base measure the population at bw_fit."""
    def m(D, cut):
        st = state(D, cut, hl)
        warm = (st.eng >= 3) & ~st.machine
        X = (st.raw_counts if counts == "raw" else st.H)[warm]
        X = spread24(X, bw_fit)
        a = dm_fit(X, st.population(bw_fit))
        m.chosen.append((cut, a))
        pop = st.population(bw_score)
        return lambda c: st.scores(c, a, bw_score, pop=pop)
    m.chosen = []
    return m


def lodo_losses(st, D, cut, priors, bws, unit="day"):
    """Leave-one-day-out (or leave-one-event-out) hour-of-day NLL of warm training contacts'
    events, per (a, bw): each day's opens predicted from the contact's other days."""
    sel = D["t"] < cut
    c, day, hour = D["c"][sel], D["day"][sel], D["hour"][sel]
    w = np.power(0.5, (st.ref - day) / st_hl(st)).astype(np.float32).astype(np.float64)
    warm = (st.eng >= 3) & ~st.machine
    keep = warm[c]
    c, day, hour, w = c[keep], day[keep], hour[keep], w[keep]
    if unit == "day":
        g = c * 100000 + day
    else:
        g = np.arange(len(c))
    ug, inv = np.unique(g, return_inverse=True)
    G = np.zeros((len(ug), 24))
    np.add.at(G, (inv, hour), w)
    gc = ug // 100000 if unit == "day" else c
    out = {}
    for bw in bws:
        pop = st.population(bw)
        Hs = spread24(st.H, bw)
        Gs = spread24(G, bw)
        rest = Hs[gc] - Gs  # the contact's other days, spread
        rest_tot = st.H[gc].sum(1) - G.sum(1)
        for a in priors:
            P = (np.maximum(rest[inv, hour], 0) + a * pop[hour]) / (rest_tot[inv] + a)
            out[(a, bw)] = -np.log(np.maximum(P, 1e-12)).sum()
    return out


def st_hl(st):
    return st.hl


def lodo_method(hl=480.0, unit="day", bws=BWS):
    def m(D, cut):
        st = state(D, cut, hl)
        st.hl = hl
        L = lodo_losses(st, D, cut, PRIORS[:-1], bws, unit)
        a, bw = min(L, key=L.get)
        m.chosen.append((cut, a, bw))
        pop = st.population(bw)
        return lambda c: st.scores(c, a, bw, pop=pop)
    m.chosen = []
    return m


# ---------------------------------------------------------------- scoring-time variants

def two_scale(lam, wide, hl=480.0, a=12.0, bw=1.0):
    """A contact's counts spread at bw, with share lam spread at a wide bandwidth instead."""
    def m(D, cut):
        st = state(D, cut, hl)
        pop = st.population(bw)
        def f(c):
            raw = st.H[c]
            tot = raw.sum(1, keepdims=True)
            sp = (1 - lam) * spread24(raw, bw) + lam * spread24(raw, wide)
            out = (sp + a * pop) / (tot + a)
            out[(tot[:, 0] <= 0) | st.machine[c]] = pop
            return out
        return f
    return m


def two_timescale(beta, hl2, hl=480.0, a=12.0, bw=1.0):
    """Counts = long-half-life counts + beta * short-half-life counts (both additive)."""
    def m(D, cut):
        st = state(D, cut, hl)
        st2 = state(D, cut, hl2)
        pop = st.population(bw)
        H = st.H + beta * st2.H
        return lambda c: st.scores(c, a, bw, pop=pop, H=H)
    return m


def recent_pop(rho, pop_hl, hl=480.0, a=12.0, bw=1.0):
    """Prior base measure: (1-rho) * population + rho * population with a short half-life."""
    def m(D, cut):
        st = state(D, cut, hl)
        st2 = state(D, cut, pop_hl)
        pop = (1 - rho) * st.population(bw) + rho * st2.population(bw)
        return lambda c: st.scores(c, a, bw, pop=pop)
    return m


def weekday_prior(k=7.0, hl=480.0, a=12.0, bw=1.0):
    """Prior base measure per contact: the population's hour-of-day given the weekday, averaged
    over the contact's own weekday mix (smoothed with k pseudo-events toward the population's).
    Additive: uses only the contact's per-slot counts and the pooled population counts."""
    def m(D, cut):
        st = state(D, cut, hl)
        if not hasattr(st, "H168"):
            sel = D["t"] < cut
            c, day, slot = D["c"][sel], D["day"][sel], D["slot"][sel]
            w = np.power(0.5, (st.ref - day) / hl).astype(np.float32).astype(np.float64)
            st.H168 = np.zeros((st.n, 168))
            np.add.at(st.H168, (c, slot), w)
        H7 = st.H168.reshape(st.n, 7, 24)
        popc = H7[(st.eng > 0) & ~st.machine].sum(0)  # 7 x 24
        pop_dh = spread24(popc, bw)  # spread within day (close enough to the weekly circle)
        tot = pop_dh.sum()
        pop_dh = (1 - FLOOR) * pop_dh / tot + FLOOR / 168
        pop_day = pop_dh.sum(1)
        cond = pop_dh / pop_day[:, None]  # p(h | d)
        pop = st.population(bw)
        def f(c):
            nd = H7[c].sum(2)  # contact x 7
            pi = (nd + k * pop_day) / (nd.sum(1, keepdims=True) + k)
            base = pi @ cond  # contact x 24
            raw = st.H[c]
            t = raw.sum(1, keepdims=True)
            out = (spread24(raw, bw) + a * base) / (t + a)
            out[(t[:, 0] <= 0) | st.machine[c]] = pop
            return out
        return f
    return m
