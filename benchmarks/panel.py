"""The panel of data sets that mfrec's defaults are chosen on (see ``results/defaults.md``).

Real sets are read from ``$MFREC_DATA_DIR`` or ``../shared/data`` and never copied; synthetic
sets are generated deterministically from a fixed seed, so every run sees the same panel.

API::

    SYNTH_SHAPES                    -> {name: dict(n_users, n_items, density, kind)}
    synth(name)                     -> PanelSet (the whole generated set)
    ml100k_ratings()                -> PanelSet of u.data as explicit ratings
    ml100k_binary()                 -> PanelSet of u.data as binary interactions
    gowalla_train()                 -> PanelSet of Gowalla's train.txt only (never test.txt)
    gowalla_test_csr(shape)         -> Gowalla's test.txt, for the final report only
    ranking_split(csr, seed)        -> (train csr, validation csr): per-user holdout
    rating_split(csr, seed)         -> (train csr, validation csr): random 10% of the entries
    panel(kind)                     -> [PanelSet, ...] for kind "implicit" or "explicit"

A ``PanelSet`` has ``name``, ``csr`` (users x items, float32) and ``kind`` ("explicit" for
ratings, "implicit" for counts or binary interactions).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent

#: synthetic shapes: users >> items, items >> users, density 0.01% .. 5%; interactions <= ~1M
SYNTH_SHAPES = {
    "tall": dict(n_users=40_000, n_items=1_000, density=0.01, kind="implicit"),
    "wide": dict(n_users=2_000, n_items=60_000, density=0.002, kind="implicit"),
    "sparse": dict(n_users=100_000, n_items=30_000, density=0.0001, kind="implicit"),
    "dense": dict(n_users=3_000, n_items=2_000, density=0.05, kind="implicit"),
    "tall-ratings": dict(n_users=40_000, n_items=1_000, density=0.01, kind="explicit"),
    "wide-ratings": dict(n_users=1_000, n_items=20_000, density=0.005, kind="explicit"),
    "dense-ratings": dict(n_users=3_000, n_items=2_000, density=0.05, kind="explicit"),
}


@dataclass
class PanelSet:
    name: str
    csr: sp.csr_matrix
    kind: str

    def describe(self):
        n_u, n_i = self.csr.shape
        return (f"{self.name}: {n_u} users x {n_i} items, {self.csr.nnz} entries, "
                f"density {self.csr.nnz / (n_u * n_i):.3%}, {self.kind}")


def data_dir():
    env = os.environ.get("MFREC_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------------- synthetic
def _zipf_weights(n, exponent, rng):
    w = (np.arange(1, n + 1, dtype=np.float64)) ** -exponent
    return w[rng.permutation(n)]


def synth(name, seed=20261201):
    """A latent-topic set with power-law item popularity and user activity.

    Each item belongs to one of ``n_topics`` topics and has a Zipf popularity; each user likes
    two topics and draws 80% of its items from them (by popularity) and 20% from the whole
    catalogue (by popularity). Activity per user is log-normal with the shape's mean. Implicit
    sets hold counts (1 + geometric); explicit sets hold 1..5 ratings from user and item biases
    plus topic affinity plus noise.
    """
    spec = SYNTH_SHAPES[name]
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    n_u, n_i, kind = spec["n_users"], spec["n_items"], spec["kind"]
    n_topics = 20
    pop = _zipf_weights(n_i, 1.0, rng)
    topic = rng.integers(0, n_topics, n_i)
    order = np.argsort(topic, kind="stable")
    bounds = np.searchsorted(topic[order], np.arange(n_topics + 1))
    cum_topic = [np.cumsum(pop[order[bounds[t]:bounds[t + 1]]]) for t in range(n_topics)]
    cum_all = np.cumsum(pop)
    mean_n = spec["density"] * n_i
    act = rng.lognormal(np.log(mean_n) - 0.5, 1.0, n_u)
    act = np.clip(np.round(act), 2, max(2, n_i // 2)).astype(np.int64)
    likes = rng.integers(0, n_topics, (n_u, 2))
    rows, cols = [], []
    for u in range(n_u):
        m = act[u]
        m_topic = rng.binomial(m, 0.8)
        picks = []
        for j, t in enumerate(likes[u]):
            mt = m_topic // 2 + (j == 0) * (m_topic % 2)
            c = cum_topic[t]
            if c.size == 0 or mt == 0:
                continue
            picks.append(order[bounds[t] + np.searchsorted(c, rng.random(mt) * c[-1])])
        picks.append(np.searchsorted(cum_all, rng.random(m - m_topic) * cum_all[-1]))
        items = np.unique(np.concatenate(picks))
        rows.append(np.full(items.size, u, np.int64))
        cols.append(items)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    cols = np.minimum(cols, n_i - 1)
    if kind == "implicit":
        vals = 1.0 + rng.geometric(0.4, rows.size) - 1.0
    else:
        ub, ib = rng.normal(0, 0.4, n_u), rng.normal(0, 0.5, n_i)
        affinity = (topic[cols] == likes[rows, 0]) | (topic[cols] == likes[rows, 1])
        raw = 3.3 + ub[rows] + ib[cols] + 0.8 * affinity - 0.4 + rng.normal(0, 0.8, rows.size)
        vals = np.clip(np.round(raw), 1, 5)
    csr = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n_u, n_i))
    csr.sum_duplicates()
    return PanelSet(f"synth-{name}", csr, kind)


# ---------------------------------------------------------------------- real sets
def _ml100k_frame():
    import pandas as pd
    path = data_dir() / "ml-100k" / "u.data"
    return pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "ts"])


def _ml_csr(frame, binary):
    u = frame.user.to_numpy() - 1
    i = frame.item.to_numpy() - 1
    v = np.ones(len(frame), np.float32) if binary else frame.rating.to_numpy(np.float32)
    return sp.csr_matrix((v, (u, i)), shape=(943, 1682))


def ml100k_ratings():
    return PanelSet("ml100k-ratings", _ml_csr(_ml100k_frame(), False), "explicit")


def ml100k_binary():
    return PanelSet("ml100k-binary", _ml_csr(_ml100k_frame(), True), "implicit")


def read_user_items(path, shape=None):
    """``user item item ...`` lines (0-based ids) as a binary csr matrix."""
    rows, cols = [], []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            ids = np.asarray(parts, dtype=np.int64)
            rows.append(np.full(ids.size - 1, ids[0]))
            cols.append(ids[1:])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    if shape is None:
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    csr = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=shape)
    csr.sum_duplicates()
    csr.data[:] = 1.0
    return csr


def gowalla_train():
    return PanelSet("gowalla", read_user_items(data_dir() / "gowalla" / "train.txt"), "implicit")


def gowalla_test_csr(shape):
    """Gowalla's test.txt: for the final report only, never for choosing anything."""
    return read_user_items(data_dir() / "gowalla" / "test.txt", shape)


# ---------------------------------------------------------------------- splits
def ranking_split(csr, seed=0, fraction=0.2):
    """Per-user holdout: of each user with >= 3 entries, ``fraction`` of them (at least 1)."""
    rng = np.random.default_rng(seed)
    csr = csr.tocsr()
    n = np.diff(csr.indptr)
    hold = np.zeros(csr.nnz, bool)
    for u in np.flatnonzero(n >= 3):
        s, e = csr.indptr[u], csr.indptr[u + 1]
        k = max(1, int(round(fraction * (e - s))))
        hold[s + rng.choice(e - s, k, replace=False)] = True
    return _mask(csr, ~hold), _mask(csr, hold)


def rating_split(csr, seed=0, fraction=0.1):
    """A random ``fraction`` of the entries."""
    rng = np.random.default_rng(seed)
    hold = rng.random(csr.nnz) < fraction
    return _mask(csr, ~hold), _mask(csr, hold)


def _mask(csr, keep):
    coo = csr.tocoo()
    out = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=csr.shape)
    out.sort_indices()
    return out


def panel(kind, real=True):
    """The panel sets of one kind, synthetic first."""
    sets = [synth(n) for n, s in SYNTH_SHAPES.items() if s["kind"] == kind]
    if real:
        if kind == "implicit":
            sets += [ml100k_binary(), gowalla_train()]
        else:
            sets += [ml100k_ratings()]
    return sets


if __name__ == "__main__":
    import time
    for n in SYNTH_SHAPES:
        t = time.perf_counter()
        p = synth(n)
        print(p.describe(), f"({time.perf_counter() - t:.1f} s)")
