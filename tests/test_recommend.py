"""The serving API every FactorModel shares: recommend, similar_items/users, fold_in."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mfrec import Ratings
from mfrec.kernels.topn import (rank_stats, rank_stats_reference, sgd_fold_in,
                                sgd_fold_in_reference, topn, topn_reference)
from mfrec.models.base import FactorModel, FoldedUsers


def _model(P, Q, bu=None, bi=None, mu=0.0, seen=None, user_ids=None, item_ids=None):
    """A FactorModel with given factors (no training), for known answers."""
    P, Q = np.asarray(P, np.float32), np.asarray(Q, np.float32)
    seen = sp.csr_matrix((P.shape[0], Q.shape[0]), dtype=np.float32) if seen is None else seen
    coo = sp.coo_matrix(seen)
    if coo.nnz == 0:  # Ratings needs one entry; the seen matrix is replaced below
        coo = sp.coo_matrix(([1.0], ([0], [0])), shape=(P.shape[0], Q.shape[0]))
    r = Ratings(coo.row, coo.col, coo.data, user_vocab=_vocab(user_ids, P.shape[0], "user"),
                item_vocab=_vocab(item_ids, Q.shape[0], "item"))
    m = FactorModel()
    # factors first: with the data state set, rows without training data would be zeroed
    m._set_factor_state(P, Q, bu, bi, mu)
    m._set_data_state(r)
    m.user_items_ = sp.csr_matrix(seen, dtype=np.float32)
    return m


def _vocab(ids, n, name):
    from mfrec import Vocabulary
    if ids is None:
        return Vocabulary.identity(n, name=name)
    return Vocabulary(np.asarray(ids), name=name)


# ---------------------------------------------------------------------- kernel vs reference
@pytest.mark.parametrize("restrict", [False, True])
def test_topn_kernel_matches_numpy_reference(restrict):
    # blocks of users and tiles of items, seen masking, excluded items and candidate maps
    rng = np.random.default_rng(0)
    m, c, k, n = 150, 5000, 8, 7
    U = rng.standard_normal((m, k)).astype(np.float32)
    Qall = rng.standard_normal((c, k)).astype(np.float32)
    seen = sp.random(m, c, density=0.02, format="csr", random_state=1)
    seen.sort_indices()
    rows = np.arange(m, dtype=np.int64)
    rows[::7] = -1
    if restrict:
        cand = np.sort(rng.choice(c, 300, replace=False))
        pos = np.full(c, -1, np.int64)
        pos[cand] = np.arange(cand.size)
        Q = np.ascontiguousarray(Qall[cand])
    else:
        pos = np.empty(0, np.int64)
        Q = Qall
    bias = rng.standard_normal(Q.shape[0]).astype(np.float32)
    bias[[3, 10]] = -np.inf
    indptr = seen.indptr.astype(np.int64)  # the dtypes the library passes: one compiled kernel
    got = topn(U, Q, bias, indptr, seen.indices, rows, pos, n)
    want = topn_reference(U, Q, bias, indptr, seen.indices, rows, pos, n)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_topn_pads_when_too_few_candidates():
    # 3 candidates, one seen: 2 real results then padding (-1, -inf)
    U = np.ones((1, 2), np.float32)
    Q = np.array([[1, 0], [2, 0], [3, 0]], np.float32)
    seen = sp.csr_matrix(np.array([[0, 1, 0]], np.float32))
    idx, sc = topn(U, Q, np.zeros(3, np.float32), seen.indptr.astype(np.int64), seen.indices,
                   np.zeros(1, np.int64), np.empty(0, np.int64), 4)
    assert idx.tolist() == [[2, 0, -1, -1]]
    assert sc[0, :2].tolist() == [3.0, 1.0] and np.all(np.isneginf(sc[0, 2:]))


def test_rank_stats_kernel_matches_reference():
    # first relevant rank and AUC, with seen masking and a tie
    rng = np.random.default_rng(3)
    m, c, k = 70, 300, 4
    U = rng.standard_normal((m, k)).astype(np.float32)
    Q = rng.standard_normal((c, k)).astype(np.float32)
    Q[5] = Q[6]
    bias = np.zeros(c, np.float32)
    seen = sp.random(m, c, density=0.05, format="csr", random_state=4)
    seen.sort_indices()
    rel = sp.random(m, c, density=0.05, format="csr", random_state=5)
    rel = (rel - rel.multiply(seen > 0)).tocsr()
    rel.eliminate_zeros()
    rel.sort_indices()
    rows = np.arange(m, dtype=np.int64)
    got = rank_stats(U, Q, bias, seen.indptr.astype(np.int64), seen.indices, rows,
                     rel.indptr.astype(np.int64), rel.indices)
    want = rank_stats_reference(U, Q, bias, seen.indptr, seen.indices, rows, rel.indptr,
                                rel.indices)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, equal_nan=True)


def test_sgd_fold_in_kernel_reaches_closed_form_optimum():
    # SGD on one user's ratings (items fixed) converges to the ridge solution it descends
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((30, 3)).astype(np.float32) * 0.5
    bi = rng.standard_normal(30).astype(np.float32) * 0.1
    indptr = np.array([0, 12, 20], np.int64)
    items = np.r_[np.sort(rng.choice(30, 12, replace=False)),
                  np.sort(rng.choice(30, 8, replace=False))].astype(np.int32)
    values = rng.uniform(1, 5, 20).astype(np.float32)
    P, bu = sgd_fold_in(indptr, items, values, Q, bi, np.float32(3.0), 0.01, 0.05, 0.02, 400, True,
                        0)
    Pr, bur = sgd_fold_in_reference(indptr, items, values, Q, bi, 3.0, 0.01, 0.05, 0.02, 400, True)
    np.testing.assert_allclose(P, Pr, atol=0.03)
    np.testing.assert_allclose(bu, bur, atol=0.03)


# ---------------------------------------------------------------------- recommend
def test_recommend_known_answer_with_raw_ids_and_biases():
    # user "a" likes dimension 0, user "b" dimension 1; item "z" has a large bias
    P = [[1, 0], [0, 1]]
    Q = [[3, 0], [2, 0], [0, 3], [0, 0.5], [0, 0]]
    bi = [0, 0, 0, 0, 2.5]
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], np.float32))
    m = _model(P, Q, bu=[0.5, -1.0], bi=bi, mu=3.0, seen=seen, user_ids=["a", "b"],
               item_ids=["v", "w", "x", "y", "z"])
    ids, scores = m.recommend(["a", "b"], n=3)
    assert ids.tolist() == [["z", "w", "x"], ["x", "z", "y"]]
    # scores are full model scores: mu + b_u + b_i + p.q
    np.testing.assert_allclose(scores, [[6.0, 5.5, 3.5], [5.0, 4.5, 2.5]], rtol=1e-6)
    np.testing.assert_allclose(scores[0], m.predict(["a"] * 3, ids[0], clip=False), rtol=1e-6)
    # seen item "v" comes back when not excluded
    ids, _ = m.recommend("a", n=1, exclude_seen=False)
    assert ids.tolist() == [["z"]] or ids.tolist() == [["v"]]
    assert m.recommend("a", n=2, exclude_seen=False)[0].tolist() == [["v", "z"]]


def test_recommend_single_user_is_batch_of_one_and_items_exclude():
    m = _model([[1, 0], [0, 1]], [[3, 0], [2, 0], [1, 0], [0, 1]])
    ids, scores = m.recommend(0, n=2)
    assert ids.shape == scores.shape == (1, 2)
    assert ids.tolist() == [[0, 1]]
    assert m.recommend(0, n=2, items=[1, 2, 3])[0].tolist() == [[1, 2]]
    assert m.recommend(0, n=2, exclude=[0])[0].tolist() == [[1, 2]]
    assert m.recommend(0, n=2, items=[1, 2, 3], exclude=[1])[0].tolist() == [[2, 3]]


def test_recommend_padding_for_int_and_string_ids():
    seen = sp.csr_matrix(np.array([[1, 0, 1]], np.float32))
    m = _model([[1.0]], [[1.0], [2.0], [3.0]], seen=seen)
    ids, scores = m.recommend(0, n=3)
    assert ids.tolist() == [[1, -1, -1]]
    assert np.isfinite(scores[0, 0]) and np.all(np.isneginf(scores[0, 1:]))
    m = _model([[1.0]], [[1.0], [2.0], [3.0]], seen=seen, user_ids=["u"], item_ids=["a", "b", "c"])
    ids, _ = m.recommend("u", n=2)
    assert ids.tolist() == [["b", ""]]


def test_recommend_errors():
    m = _model([[1, 0], [0, 1]], [[3, 0], [2, 0]], user_ids=["a", "b"], item_ids=["x", "y"])
    with pytest.raises(KeyError, match="unknown user id"):
        m.recommend(["a", "nobody"])
    with pytest.raises(KeyError, match="unknown item id"):
        m.recommend("a", items=["x", "nothing"])
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        m.recommend("a", n=0)
    with pytest.raises(TypeError, match="exclude_seen must be True or False"):
        m.recommend("a", exclude_seen="yes")
    with pytest.raises(Exception, match="not fitted"):
        FactorModel().recommend(0)


def test_similar_items_and_users_by_cosine():
    Q = [[1, 0], [2, 0.1], [0, 1], [-1, 0], [0, 0]]
    m = _model([[1, 0], [1, 0.01], [0, 5]], Q)
    ids, scores = m.similar_items([0, 2], n=2)
    assert ids.tolist() == [[1, 2], [1, 0]]   # itself left out; zero vector scores 0
    np.testing.assert_allclose(scores[0, 0], 2 / np.sqrt(4.01), rtol=1e-6)
    assert scores[0, 1] == pytest.approx(0.0, abs=1e-7)
    uids, uscores = m.similar_users(0, n=2)
    assert uids.tolist() == [[1, 2]]
    assert uscores[0, 0] > 0.99
    with pytest.raises(KeyError):
        m.similar_items([99])


# ---------------------------------------------------------------------- fold-in
def test_fold_in_ridge_recovers_exact_vector_and_recommends():
    # a new user whose ratings are exactly mu + b_i + p.q_i: ridge with tiny reg recovers p
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((20, 3))
    bi = rng.standard_normal(20) * 0.2
    m = _model(rng.standard_normal((4, 3)), Q, bu=np.array([0.1, 0.2, 0.3, 0.4]), bi=bi, mu=3.0,
               item_ids=[f"i{j}" for j in range(20)])
    m.regularization = 1e-8
    p_true, b_true = np.array([0.5, -1.0, 0.25]), 0.3
    items = [f"i{j}" for j in range(0, 20, 2)]
    values = 3.0 + b_true + bi[::2] + Q[::2] @ p_true
    folded = m.fold_in(dict(zip(items, values)))
    assert isinstance(folded, FoldedUsers) and folded.ids is None
    np.testing.assert_allclose(folded.factors[0], p_true, atol=1e-4)
    assert folded.bias[0] == pytest.approx(b_true, abs=1e-4)
    ids, scores = m.recommend(folded, n=3)
    assert not set(ids[0]) & set(items)        # the items folded in count as seen
    want = 3.0 + b_true + bi + Q @ p_true
    want[::2] = -np.inf
    assert ids[0].tolist() == [f"i{j}" for j in np.argsort(-want)[:3]]
    np.testing.assert_allclose(scores[0], np.sort(want)[::-1][:3], rtol=1e-4)


def test_fold_in_input_forms_agree():
    rng = np.random.default_rng(1)
    m = _model(rng.standard_normal((2, 2)), rng.standard_normal((6, 2)), item_ids=list("abcdef"))
    m.regularization = 0.1
    a = m.fold_in({"a": 4.0, "c": 2.0})
    b = m.fold_in((["c", "a"], [2.0, 4.0]))
    c = m.fold_in(pd.DataFrame({"user": ["new", "new", "x"], "item": ["a", "c", "b"],
                                "rating": [4.0, 2.0, 1.0]}))
    d = m.fold_in(pd.Series({"a": 4.0, "c": 2.0}))
    np.testing.assert_allclose(a.factors, b.factors)
    np.testing.assert_allclose(a.factors, d.factors)
    assert c.ids.tolist() == ["new", "x"]
    np.testing.assert_allclose(c.factors[0], a.factors[0], rtol=1e-6)
    ones = m.fold_in(["a", "b"])
    assert ones.seen.data.tolist() == [1.0, 1.0]


def test_fold_in_errors_and_unknown_items():
    m = _model([[1.0]], [[1.0], [2.0]], item_ids=["a", "b"])
    with pytest.raises(KeyError, match="unknown item id"):
        m.fold_in({"a": 1.0, "zz": 2.0})
    folded = m.fold_in({"a": 1.0, "zz": 2.0}, unknown_items="ignore")
    assert folded.seen.nnz == 1
    with pytest.raises(ValueError, match="unknown_items must be one of"):
        m.fold_in({"a": 1.0}, unknown_items="drop")
    with pytest.raises(ValueError, match="more than once"):
        m.fold_in((["a", "a"], [1.0, 2.0]))
    with pytest.raises(ValueError, match="finite"):
        m.fold_in({"a": np.nan})
    with pytest.raises(TypeError, match="fold_in takes"):
        m.fold_in(3.5)
