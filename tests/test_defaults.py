"""Defaults that travel: ImplicitALS() must beat popularity where the catalogue is large.

The data is a small latent-topic set shaped like the panel's "wide" set (benchmarks/panel.py):
few users, a catalogue 10 times larger, Zipf popularity. With a fixed alpha=0.5 and
regularization=0.025 the factors collapsed there and the model ranked like popularity.
"""
import numpy as np
import pytest
import scipy.sparse as sp

import mfrec


def _topic_set(n_users=1500, n_items=15000, per_user=20, n_topics=15, seed=0):
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1)
    pop = pop[rng.permutation(n_items)]
    topic = rng.integers(0, n_topics, n_items)
    rows, cols = [], []
    for u in range(n_users):
        t = rng.integers(0, n_topics)
        mine = np.flatnonzero(topic == t)
        w = pop[mine] / pop[mine].sum()
        n_t = int(0.8 * per_user)
        picks = np.concatenate([rng.choice(mine, n_t, p=w),
                                rng.choice(n_items, per_user - n_t, p=pop / pop.sum())])
        picks = np.unique(picks)
        rows.append(np.full(picks.size, u))
        cols.append(picks)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    # hold out a fifth of each user's items
    hold = rng.random(rows.size) < 0.2
    shape = (n_users, n_items)
    train = sp.csr_matrix((np.ones((~hold).sum(), np.float32), (rows[~hold], cols[~hold])), shape)
    test = sp.csr_matrix((np.ones(hold.sum(), np.float32), (rows[hold], cols[hold])), shape)
    return train, test


def _recall_at_20(scores, train, test):
    """LightGCN recall@20: all items ranked, training items masked."""
    scores = scores.copy()
    scores[train.nonzero()] = -np.inf
    users = np.flatnonzero(np.diff(test.indptr))
    top = np.argpartition(-scores[users], 20, axis=1)[:, :20]
    hits = np.take_along_axis(test[users].toarray() > 0, top, 1).sum(1)
    return float(np.mean(hits / np.diff(test.indptr)[users]))


@pytest.fixture(scope="module")
def wide():
    return _topic_set()


def test_implicit_als_default_beats_popularity_on_a_large_catalogue(wide):
    train, test = wide
    coo = train.tocoo()
    data = mfrec.Ratings.from_indices(coo.row, coo.col, coo.data, shape=train.shape)
    pop = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
    pop_recall = _recall_at_20(np.tile(pop, (train.shape[0], 1)), train, test)

    model = mfrec.ImplicitALS(random_state=0).fit(data)
    recall = _recall_at_20(model.user_factors_ @ model.item_factors_.T, train, test)
    # measured: popularity 0.150, ImplicitALS() 0.266
    assert pop_recall < 0.2
    assert recall > 1.5 * pop_recall
    # the old fixed defaults collapse here (recall 0.076), and the guard says so
    with pytest.warns(mfrec.FitWarning, match="ImplicitALS factors collapsed.*lower regulariz"):
        old = mfrec.ImplicitALS(alpha=0.5, regularization=0.025, random_state=0).fit(data)
    assert _recall_at_20(old.user_factors_ @ old.item_factors_.T, train, test) < pop_recall
    # "auto" resolved from the data: unobserved cells weigh 30 x density of a mean observation
    density = train.nnz / np.prod(train.shape)
    assert model.alpha_ == pytest.approx(1 / (30 * density) - 1, rel=1e-6)
    assert model.regularization_ == pytest.approx(0.01 * (1 + model.alpha_), rel=1e-6)


def test_auto_alpha_follows_the_unit_of_the_strengths(wide):
    # counts 3x larger: alpha 3x smaller, so every confidence 1 + alpha * r and the
    # regularization (in units of a mean observation's confidence) stay the same
    train, _ = wide
    coo = train.tocoo()
    a = mfrec.ImplicitALS(n_factors=4, n_epochs=3, random_state=0, num_threads=1).fit(
        mfrec.Ratings.from_indices(coo.row, coo.col, coo.data, shape=train.shape))
    b = mfrec.ImplicitALS(n_factors=4, n_epochs=3, random_state=0, num_threads=1).fit(
        mfrec.Ratings.from_indices(coo.row, coo.col, 3 * coo.data, shape=train.shape))
    assert b.alpha_ == pytest.approx(a.alpha_ / 3, rel=1e-6)
    assert b.regularization_ == pytest.approx(a.regularization_, rel=1e-6)


def test_dense_data_caps_the_unobserved_weight():
    # density 50%: 30 x density would weigh blanks above observations; the cap keeps them at half
    X = np.kron(np.eye(2), np.ones((4, 4)))
    m = mfrec.ImplicitALS(n_factors=2, random_state=0).fit(X)
    assert m.alpha_ == pytest.approx(1.0)        # w0 = 0.5 -> alpha = 1 / 0.5 - 1
    assert m.regularization_ == pytest.approx(0.02)
