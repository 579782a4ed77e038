"""The NumPy top-N path for small batches gives the Numba kernel's answers: same ids, same
tie-breaking, same padding; and a model's recommend/similar_items agree on both paths."""
import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from mfrec.kernels import topn_numpy as T
from mfrec.kernels.topn import topn, topn_reference


def _case(seed, m, c, k, n, subset, levels):
    """Integer-valued factors (exact dot products in any summation order, many ties), a seen
    matrix, an optional candidate subset and some -inf biases."""
    rng = np.random.default_rng(seed)
    n_items = c + 3 if subset else c
    U = rng.integers(-levels, levels + 1, (m, k)).astype(np.float32)
    Q = rng.integers(-levels, levels + 1, (c, k)).astype(np.float32)
    bias = rng.integers(-2, 3, c).astype(np.float32)
    bias[rng.random(c) < 0.1] = -np.inf
    seen = sp.random(m, n_items, density=0.3, random_state=seed, format="csr")
    indptr = seen.indptr.astype(np.int64)
    indices = seen.indices.astype(np.int32)
    rows = np.where(rng.random(m) < 0.8, np.arange(m), -1).astype(np.int64)
    if subset:
        cand_pos = np.full(n_items, -1, np.int64)
        chosen = np.sort(rng.choice(n_items, c, replace=False))
        cand_pos[chosen] = np.arange(c)
    else:
        cand_pos = np.empty(0, np.int64)
    return U, Q, bias, indptr, indices, rows, cand_pos, n


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 6), c=st.integers(1, 40),
       k=st.integers(1, 4), n=st.integers(1, 45), subset=st.booleans(),
       levels=st.integers(0, 2))
def test_numpy_path_equals_kernel(seed, m, c, k, n, subset, levels):
    args = _case(seed, m, c, k, n, subset, levels)
    idx_np, sc_np = T.topn_numpy(*args)
    idx_k, sc_k = topn(*args)
    np.testing.assert_array_equal(idx_np, idx_k)
    np.testing.assert_array_equal(sc_np, sc_k)
    assert idx_np.dtype == np.int64 and sc_np.dtype == np.float32


def test_known_answer_with_ties_and_padding():
    # scores 1, 3, 3, -inf, 2 with item 4 seen: best two are items 1 and 2 (a tie, lower first);
    # asking for 5 pads after the three finite candidates left
    U = np.ones((1, 1), np.float32)
    Q = np.array([[1], [3], [3], [0], [2]], np.float32)
    bias = np.array([0, 0, 0, -np.inf, 0], np.float32)
    indptr, indices = np.array([0, 1], np.int64), np.array([4], np.int32)
    rows, cand = np.zeros(1, np.int64), np.empty(0, np.int64)
    idx, sc = T.topn_numpy(U, Q, bias, indptr, indices, rows, cand, 2)
    assert idx.tolist() == [[1, 2]] and sc.tolist() == [[3, 3]]
    idx, sc = T.topn_numpy(U, Q, bias, indptr, indices, rows, cand, 5)
    assert idx.tolist() == [[1, 2, 0, -1, -1]]
    assert sc.tolist() == [[3, 3, 1, -np.inf, -np.inf]]
    ref_idx, _ = topn_reference(U, Q, bias, indptr, indices, rows, cand, 5)
    assert ref_idx.tolist() == idx.tolist()


def test_model_recommend_same_on_both_paths(monkeypatch):
    # a fitted model answers a few users by NumPy; forcing the kernel gives the same ids and
    # scores (float32 products may differ in the last bit between BLAS call shapes)
    import mfrec
    rng = np.random.default_rng(3)
    X = sp.random(60, 90, density=0.2, random_state=3, format="csr",
                  data_rvs=lambda s: rng.integers(1, 6, s).astype(float))
    model = mfrec.ALS(n_factors=6, n_epochs=4, random_state=0, num_threads=1).fit(X)
    users, cands = [0, 5, 17], np.arange(0, 90, 2)
    calls = {"fast": [model.recommend(users, n=12),
                      model.recommend(users, n=7, items=cands, exclude=[4, 6]),
                      model.similar_items([1, 2], n=9)]}
    monkeypatch.setattr(T, "MAX_CELLS", 0)  # every batch takes the kernel path
    calls["kernel"] = [model.recommend(users, n=12),
                       model.recommend(users, n=7, items=cands, exclude=[4, 6]),
                       model.similar_items([1, 2], n=9)]
    for (ids_f, sc_f), (ids_k, sc_k) in zip(calls["fast"], calls["kernel"]):
        np.testing.assert_array_equal(ids_f, ids_k)
        np.testing.assert_allclose(sc_f, sc_k, rtol=1e-6)
    assert 4 not in calls["fast"][1][0] and 6 not in calls["fast"][1][0]
