"""Shared fixtures. Data sets are read from ``$MFREC_DATA_DIR/<name>`` or ../shared/data/<name>
(the one variable for data, as the library's ``mfrec.datasets`` uses it); they are never copied
into the project. With MFREC_REQUIRE_DATA=1 (as CI sets) a missing data set fails instead of
skipping; either way the message names the paths tried and the variable to set."""
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]

SEED_MATRIX = np.array([[5, 3, 0, 2, 1], [4, 0, 0, 2, 1], [1, 3, 1, 0, 5], [1, 0, 2, 0, 4]],
                       dtype=float)


def data_candidates(name):
    """Folders tried for data set ``name``, in order."""
    env = os.environ.get("MFREC_DATA_DIR")
    candidates = [Path(env) / name] if env else []
    candidates.append(ROOT.parent / "shared" / "data" / name)
    return candidates


def find_data(name, marker):
    """Folder ``name`` of the shared data (``$MFREC_DATA_DIR/name`` or ../shared/data/name)
    holding file ``marker``, or None."""
    return next((c for c in data_candidates(name) if (c / marker).exists()), None)


def find_ml100k():
    # $MFREC_DATA_DIR may also name the ml-100k folder itself (as older instructions said)
    env = os.environ.get("MFREC_DATA_DIR")
    if env and (Path(env) / "u.data").exists():
        return Path(env)
    return find_data("ml-100k", "u.data")


def data_missing(what, name):
    """Skip (or, under MFREC_REQUIRE_DATA=1, fail) saying where ``name`` was looked for."""
    tried = ", ".join(str(c) for c in data_candidates(name))
    env = "" if os.environ.get("MFREC_DATA_DIR") else " ($MFREC_DATA_DIR is not set)"
    msg = (f"{what} not found: tried {tried}{env}; set MFREC_DATA_DIR to the folder that holds "
           f"{name}/")
    if os.environ.get("MFREC_REQUIRE_DATA") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def ml100k_dir():
    path = find_ml100k()
    if path is None:
        data_missing("MovieLens 100K", "ml-100k")
    return path


@pytest.fixture(scope="session")
def gowalla_dir():
    """LightGCN's Gowalla split (train.txt, test.txt); skipped, or failed under
    MFREC_REQUIRE_DATA=1, when absent."""
    path = find_data("gowalla", "train.txt")
    if path is None:
        data_missing("Gowalla", "gowalla")
    return path


def read_ml100k_split(path, name):
    """MovieLens 100K ``{name}.base`` and ``{name}.test`` from folder ``path``, as DataFrames with
    columns user, item, rating, timestamp."""
    import pandas as pd
    cols = ["user", "item", "rating", "timestamp"]
    return tuple(pd.read_csv(path / f"{name}.{part}", sep="\t", names=cols)
                 for part in ("base", "test"))


@pytest.fixture
def seed_matrix():
    return SEED_MATRIX.copy()


# ---------------------------------------------------------------------- helpers the tests import
def random_csr(n_rows, n_cols, density, seed, empty_rows=()):
    """A random float32 CSR matrix of 1..5 ratings, the given rows emptied, indices sorted."""
    rng = np.random.default_rng(seed)
    m = sp.random(n_rows, n_cols, density=density, random_state=seed, format="lil",
                  dtype=np.float32, data_rvs=lambda n: rng.integers(1, 6, n).astype(np.float32))
    for r in empty_rows:
        m[r, :] = 0
    m = m.tocsr()
    m.eliminate_zeros()
    m.sort_indices()
    return m


def low_rank_ratings(n_users=80, n_items=60, rank=3, frac=0.5, seed=0):
    """A noiseless rank-3 matrix plus biases, and a random half of its cells as training data."""
    rng = np.random.default_rng(seed)
    P = rng.normal(0, 0.7, (n_users, rank))
    Q = rng.normal(0, 0.7, (n_items, rank))
    bias_u, bias_i = rng.normal(0, 0.3, n_users), rng.normal(0, 0.3, n_items)
    full = 3.0 + bias_u[:, None] + bias_i[None, :] + P @ Q.T
    mask = rng.random(full.shape) < frac
    u, i = np.nonzero(mask)
    tu, ti = np.nonzero(~mask)
    return (u, i, full[u, i]), (tu, ti, full[tu, ti]), (n_users, n_items)


def two_blocks():
    """Two communities: users 0-3 use items 0-3, users 4-7 items 4-7; user 0 has not used item 0
    and user 5 not item 6 yet, so each one's top recommendation is known."""
    X = np.kron(np.eye(2), np.ones((4, 4)))
    X[0, 0] = 0
    X[5, 6] = 0
    return X


def damped_biases(r, regularization):
    """Global mean and damped user and item biases of Ratings ``r``: (mu, bu, bi)."""
    mu = float(r.values.mean())
    bu = np.bincount(r.user_index, r.values - mu, r.n_users) / (r.user_counts() + regularization)
    bi = np.bincount(r.item_index, r.values - mu - bu[r.user_index], r.n_items) / (
        r.item_counts() + regularization)
    return mu, bu, bi


def fold_in_errors(model, train, test, users=range(5)):
    """Mean test RMSE over ``users`` of each one's training ratings folded back in, and of the
    trained model: (folded, trained). The model's prediction is mean + biases + factors."""
    from mfrec.evaluation.metrics import rmse
    errs = []
    for u in users:
        sel, ts = train[0] == u, test[0] == u
        folded = model.fold_in((train[1][sel], train[2][sel]))
        items = test[1][ts]
        pred = (model.global_mean_ + folded.bias[0] + model.item_bias_[items]
                + model.item_factors_[items] @ folded.factors[0])
        errs.append((rmse(test[2][ts], pred),
                     rmse(test[2][ts], model.predict(test[0][ts], items, clip=False))))
    return np.mean(errs, axis=0)
