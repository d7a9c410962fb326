"""Python replication of sendtime's hour-of-day backtest (src/model/{profile,backtest,calibrate}.rs).

Everything is in hour-of-day space: the model's hour-of-day scores do not depend on day pooling,
and a circular Gaussian spread over the 168 hour-of-week slots, summed by hour, equals the same
kernel spread circularly over 24 hours.
"""
import numpy as np
import polars as pl

DAY = 86400
import os

# Outspot's opens (`user_id,opened`); not in this repository.
DATA = os.environ.get("OUTSPOT_CSV")
SPLIT = 1656633600  # 2022-07-01 00:00 UTC
FLOOR = 0.01


def load(path=DATA):
    if not path:
        raise SystemExit("set OUTSPOT_CSV to Outspot's opens (user_id,opened): they are not in this repository")
    df = pl.read_csv(path, schema_overrides={"user_id": pl.Utf8})
    df = df.with_columns(
        pl.col("opened").str.replace(" UTC", "").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="ms")
    )
    t_ms = df["opened"].dt.epoch("ms").to_numpy().astype(np.int64)
    users = df["user_id"].to_numpy()
    _, c = np.unique(users, return_inverse=True)
    order = np.lexsort((t_ms, c))
    c, t_ms = c[order], t_ms[order]
    t = t_ms // 1000
    day = t_ms // (DAY * 1000)
    hour = (t_ms % (DAY * 1000)) // 3600000
    wd = (day + 3) % 7
    return dict(c=c.astype(np.int64), t=t, day=day.astype(np.int64), hour=hour.astype(np.int64),
                slot=(wd * 24 + hour).astype(np.int64), n=int(c.max()) + 1)


def kernel(bw):
    if bw <= 0:
        return np.array([1.0]), 0
    reach = int(np.ceil(3 * bw))
    j = np.arange(-reach, reach + 1)
    k = np.exp(-(j * j) / (2 * bw * bw))
    return k / k.sum(), reach


def spread24(x, bw):
    """Circular Gaussian spread over the last axis (24 hours)."""
    if bw <= 0:
        return x.copy()
    k, reach = kernel(bw)
    out = np.zeros_like(x)
    for i, kv in enumerate(k):
        out += kv * np.roll(x, i - reach, axis=-1)
    return out


class State:
    """Profiles built from events before `until` (seconds), decayed to day_of(until)."""

    def __init__(self, D, until, hl=480.0, mask=None, pop_hl=None):
        sel = D["t"] < until
        if mask is not None:
            sel &= mask
        self.ref = until // DAY
        c, day, hour = D["c"][sel], D["day"][sel], D["hour"][sel]
        n = D["n"]
        self.n = n
        age = self.ref - day
        w = np.power(0.5, age / hl).astype(np.float32).astype(np.float64)
        self.H = np.zeros((n, 24))
        np.add.at(self.H, (c, hour), w)
        self.eng = np.bincount(c, minlength=n)
        # active days: distinct (c, day)
        key = np.unique(c * 100000 + day)
        self.active = np.bincount(key // 100000, minlength=n)
        self.first = np.full(n, np.iinfo(np.int64).max)
        self.last = np.full(n, np.iinfo(np.int64).min)
        np.minimum.at(self.first, c, day)
        np.maximum.at(self.last, c, day)
        per_day = self.eng / np.maximum(self.active, 1)
        years = np.maximum((self.last - self.first + 1) / 365.0, 1.0)
        self.machine = (self.eng > 0) & ((per_day > 25) | (self.eng / years > 5000))
        self.raw_counts = np.zeros((n, 24))
        np.add.at(self.raw_counts, (c, hour), 1.0)
        if pop_hl is not None:
            wp = np.power(0.5, age / pop_hl)
            Hp = np.zeros((n, 24))
            np.add.at(Hp, (c, hour), wp)
            self.pop_counts = Hp[(self.eng > 0) & ~self.machine].sum(0)
        else:
            self.pop_counts = self.H[(self.eng > 0) & ~self.machine].sum(0)
        self._c, self._day, self._hour = c, day, hour

    def population(self, bw, counts=None):
        s = spread24(self.pop_counts if counts is None else counts, bw)
        tot = s.sum()
        emp = s / tot if tot > 0 else np.full(24, 1 / 24)
        return (1 - FLOOR) * emp + FLOOR / 24

    def scores(self, contacts, prior, bw, pop=None, H=None):
        """Hour-of-day distributions for `contacts` (array), as Profiles::scores summed by hour."""
        if pop is None:
            pop = self.population(bw)
        H = self.H if H is None else H
        raw = H[contacts]
        tot = raw.sum(1, keepdims=True)
        sp = spread24(raw, bw)
        out = (sp + prior * pop) / (tot + prior)
        nohist = (tot[:, 0] <= 0) | self.machine[contacts] | (prior >= 1e6)
        out[nohist] = pop
        return out


def top3(P):
    # best first, ties by lower index (stable sort of -p)
    return np.argsort(-P, axis=1, kind="stable")[:, :3]


def tally(P, hours):
    """P: per-event distributions (rows), hours: true hours. Returns (hits@3 array, nll array)."""
    t3 = top3(P)
    hit = (t3 == hours[:, None]).any(1)
    nll = -np.log(np.maximum(P[np.arange(len(hours)), hours], 1e-12))
    return hit.astype(float), nll


def window_events(D, start, end, st, warm_from=3, exclude=None):
    """Warm, non-machine test events in [start, end): indices into D."""
    sel = (D["t"] >= start) & (D["t"] < end)
    idx = np.nonzero(sel)[0]
    c = D["c"][idx]
    keep = (st.eng[c] >= warm_from) & ~st.machine[c]
    if exclude is not None:
        keep &= ~exclude[c]
    return idx[keep]
