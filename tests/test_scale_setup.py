"""Set-up at scale: the SGD block layout in permuted storage order, huge-page buffers, chunked
random starts, the column-count kernel, and model files whose seen-item matrix is built only
when asked (so a one-off recommend never imports SciPy)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import mfrec
from mfrec import _alloc, _threads
from mfrec.kernels import sgd as K
from mfrec.data import column_counts
from mfrec.kernels.ratings import count_columns


def random_csr(seed, n_users=300, n_items=120, density=0.05):
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=density, random_state=rng, format="csr",
                  dtype=np.float32)
    m.data = (rng.integers(1, 6, m.nnz)).astype(np.float32)
    m.sort_indices()
    return m


@pytest.mark.parametrize("n_blocks", [1, 3, 8])
def test_relabelled_blocks_are_the_same_entries_at_their_positions(n_blocks):
    csr = random_csr(n_blocks)
    rng = np.random.default_rng(7)
    perm_u = K.ordered_within_blocks(rng.permutation(csr.shape[0]), n_blocks)
    perm_i = rng.permutation(csr.shape[1]).astype(np.int32)
    plain = K.scatter_blocks(csr.indptr, csr.indices, csr.data, perm_u, perm_i, n_blocks, 1)
    for threads in (1, 2):
        rel = K.scatter_blocks(csr.indptr, csr.indices, csr.data, perm_u, perm_i, n_blocks,
                               threads, relabel=True)
        np.testing.assert_array_equal(rel[0], perm_u[plain[0]])
        np.testing.assert_array_equal(rel[0], np.arange(csr.shape[0]))
        np.testing.assert_array_equal(rel[1], plain[1])  # the same runs
        np.testing.assert_array_equal(rel[2], perm_i[plain[2]])
        np.testing.assert_array_equal(rel[3], plain[3])
        np.testing.assert_array_equal(rel[4], plain[4])
    rows, runs, items, values, ptr = plain
    users = K.block_users(rows, runs, ptr)
    # every rating once, each in the block its user's and item's positions name
    got = sp.csr_matrix((values, (users, items)), shape=csr.shape)
    assert (got != csr).nnz == 0
    n_u, n_i = csr.shape
    # the runs count each position's ratings per column block
    np.testing.assert_array_equal(runs.sum(axis=0), np.diff(csr.indptr)[rows])
    for blk in range(n_blocks * n_blocks):
        a, b = divmod(blk, n_blocks)
        lo, hi = ptr[blk], ptr[blk + 1]
        assert np.all(perm_u[users[lo:hi]].astype(np.int64) * n_blocks // n_u == a)
        assert np.all(perm_i[items[lo:hi]].astype(np.int64) * n_blocks // n_i == b)
        assert np.all(np.diff(perm_u[users[lo:hi]]) >= 0)  # by position, so memory order
        mine = np.arange(n_u) * n_blocks // n_u == a  # the positions of row block a
        assert runs[b, mine].sum() == hi - lo  # the block is its positions' runs


@pytest.mark.parametrize("n_blocks", [1, 3, 8])
def test_relabelled_item_counts_are_the_column_counts_by_position(n_blocks):
    csr = random_csr(n_blocks + 10)
    rng = np.random.default_rng(3)
    perm_u = K.ordered_within_blocks(rng.permutation(csr.shape[0]), n_blocks)
    perm_i = rng.permutation(csr.shape[1]).astype(np.int32)
    _, _, items, _, ptr = K.scatter_blocks(csr.indptr, csr.indices, csr.data, perm_u, perm_i,
                                           n_blocks, 2, relabel=True)
    want = np.zeros(csr.shape[1], dtype=np.int64)
    want[perm_i] = np.bincount(csr.indices, minlength=csr.shape[1])
    for threads in (1, 2):
        got = K.relabelled_item_counts(items, ptr, csr.shape[1], n_blocks, threads)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)


def test_take_rows_is_numpys_gather():
    rng = np.random.default_rng(4)
    for n, dtype in ((5, np.float32), (3 * K._TAKE_ROWS + 7, np.float64)):
        F = rng.normal(size=(n, 3)).astype(dtype)
        rows = rng.permutation(n)
        for threads in (1, 2):
            got = K.take_rows(F, rows, threads)
            assert got.dtype == dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, F[rows])
    assert K.take_rows(np.ones((4, 2), np.float32), np.array([], dtype=np.int32)).shape == (0, 2)


@pytest.mark.parametrize("longest, dtype", [(3, np.uint8), (255, np.uint8), (256, np.uint16),
                                             (65535, np.uint16), (65536, np.int32)])
def test_user_runs_take_the_narrowest_type_and_train_alike(longest, dtype):
    # user 0 rates `longest` items, all in one block (one column block); users 1-2 a few
    n_items = max(longest, 10)
    rows = [np.arange(longest), np.array([1, 5]), np.array([0, 2, 9])]
    indptr = np.concatenate([[0], np.cumsum([r.size for r in rows])])
    indices = np.concatenate(rows).astype(np.int32)
    values = (1 + indices % 5).astype(np.float32)
    blocks = K.make_blocks(indptr, indices, values, n_items, 1, np.random.default_rng(0))
    want = K.make_blocks_reference(indptr, indices, values, n_items, 1, np.random.default_rng(0))
    assert blocks[1].dtype == dtype and want[1].dtype == dtype
    for a, b in zip(blocks, want):
        np.testing.assert_array_equal(a, b)
    # the epoch walks the runs the same whatever their type
    rng = np.random.default_rng(1)
    start = [rng.normal(0, 0.1, s).astype(np.float32) for s in ((3, 4), (n_items, 4), 3, n_items)]
    args = [np.float32(x) for x in (3.0, 0.01, 0.01, 0.02, 0.02, 0.02, 0.02)]
    results = []
    for runs in (blocks[1], blocks[1].astype(np.int32)):
        state = [x.copy() for x in start]
        err = np.zeros(1)
        K.sgd_epoch(blocks[0], runs, *blocks[2:], 1, *state, *args, err, 1)
        results.append(state + [err])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    if longest <= 256:  # the NumPy reference, on the smaller cases
        ref = [x.copy() for x in start] + [np.zeros(1)]
        K.sgd_epoch_reference(*blocks, 1, *ref[:4], *args, ref[4])
        for a, b in zip(results[0], ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weighted_square_sum_matches_reference_on_any_threads():
    rng = np.random.default_rng(8)
    for n, k in ((1, 3), (5, 0), (2 * K._SQUARE_ROWS + 3, 4)):
        F = rng.normal(size=(n, k)).astype(np.float32)
        w = rng.integers(0, 9, n).astype(np.float64)
        one = K.weighted_square_sum(F, w, 1)
        assert one == K.weighted_square_sum(F, w, 2)
        assert one == pytest.approx(K.weighted_square_sum_reference(F, w), rel=1e-6)


def test_mean_rating_is_numpys_and_ignores_threads():
    from mfrec.models.sgd import _MEAN_CHUNK, mean_rating
    rng = np.random.default_rng(9)
    small = rng.random(1000, dtype=np.float32)
    assert mean_rating(small, 2) == float(small.mean(dtype=np.float64))
    big = rng.random(2 * _MEAN_CHUNK + 5, dtype=np.float32) * 4 + 1
    assert mean_rating(big, 1) == mean_rating(big, 2)
    assert mean_rating(big, 2) == pytest.approx(float(big.mean(dtype=np.float64)), rel=1e-12)


def test_scatter_blocks_refuses_users_out_of_index_order():
    csr = random_csr(0, n_users=40)
    perm_u = np.arange(40)[::-1].copy()  # one block: positions must rise with the index
    with pytest.raises(ValueError, match="ordered_within_blocks"):
        K.scatter_blocks(csr.indptr, csr.indices, csr.data, perm_u, np.arange(120), 1)
    # the same permutation is fine split into 40 blocks of one user each
    K.scatter_blocks(csr.indptr, csr.indices, csr.data, perm_u, np.arange(120), 40)


def test_ordered_within_blocks_keeps_blocks_and_sorts_inside_them():
    rng = np.random.default_rng(1)
    for n, n_blocks in ((1, 8), (10, 3), (1000, 8), (997, 16)):
        perm = rng.permutation(n)
        out = K.ordered_within_blocks(perm, n_blocks)
        assert sorted(out) == list(range(n))
        np.testing.assert_array_equal(out.astype(np.int64) * n_blocks // n,
                                      perm.astype(np.int64) * n_blocks // n)
        order = np.argsort(out)
        blocks = out[order].astype(np.int64) * n_blocks // n
        for a in np.unique(blocks):
            assert np.all(np.diff(order[blocks == a]) > 0)


def test_make_blocks_is_the_same_with_any_number_of_threads():
    csr = random_csr(3, n_users=500)
    one = K.make_blocks(csr.indptr, csr.indices, csr.data, csr.shape[1], 8,
                        np.random.default_rng(0), 1)
    two = K.make_blocks(csr.indptr, csr.indices, csr.data, csr.shape[1], 8,
                        np.random.default_rng(0), 2)
    ref = K.make_blocks_reference(csr.indptr, csr.indices, csr.data, csr.shape[1], 8,
                                  np.random.default_rng(0))
    for a, b, c in zip(one, two, ref):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_count_columns_matches_bincount():
    rng = np.random.default_rng(2)
    for dtype in (np.int32, np.int64):
        idx = rng.integers(0, 50, 10_000).astype(dtype)
        np.testing.assert_array_equal(count_columns(idx, 60), np.bincount(idx, minlength=60))
    big = rng.integers(0, 7, (1 << 20) + 3).astype(np.int32)  # the kernel's side of the switch
    np.testing.assert_array_equal(column_counts(big, 7), np.bincount(big))


def test_empty_huge_gives_ordinary_writable_arrays():
    small = _alloc.empty_huge((3, 4))
    assert small.shape == (3, 4) and small.dtype == np.float32 and small.flags.writeable
    n = _alloc.MIN_BYTES // 4 + 5
    big = _alloc.empty_huge(n, np.int32)
    assert big.shape == (n,) and big.dtype == np.int32
    assert big.flags.c_contiguous and big.flags.writeable
    big[:] = 7
    big[-1] = 3
    assert int(big.sum()) == 7 * (n - 1) + 3


def test_standard_normal_small_is_numpys_and_large_ignores_threads():
    small = _threads.standard_normal(np.random.default_rng(5), 100, 4, 0.5, 2)
    want = np.random.default_rng(5).standard_normal((100, 4), dtype=np.float32) * np.float32(0.5)
    np.testing.assert_array_equal(small, want)
    rows = 2 * _threads.NUMPY_NORMAL_MAX_ROWS + 17
    one = _threads.standard_normal(np.random.default_rng(5), rows, 3, 0.1, 1)
    two = _threads.standard_normal(np.random.default_rng(5), rows, 3, 0.1, 2)
    np.testing.assert_array_equal(one, two)
    assert one.dtype == np.float32 and one.shape == (rows, 3)
    assert abs(float(one.std()) - 0.1) < 0.002 and abs(float(one.mean())) < 0.002
    other = _threads.standard_normal(np.random.default_rng(6), rows, 3, 0.1, 2)
    assert abs(np.corrcoef(one.ravel(), other.ravel())[0, 1]) < 0.01  # the seed matters


def test_spread_normal_matches_reference_and_looks_normal():
    for seed, shape in ((0, (1, 1)), (2**64 - 1, (37, 5)), (12345, (3 * K._SPREAD_ROWS + 1, 2))):
        got = K.spread_normal(seed, *shape, 0.3, 2)
        np.testing.assert_array_equal(got, K.spread_normal_reference(seed, *shape, 0.3))
    x = K.spread_normal(7, 200_000, 5, 1.0, 1).astype(np.float64)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1.0) < 0.01
    assert np.abs(x).max() <= 2 * np.sqrt(3) + 1e-6  # a sum of four uniforms: bounded
    # neighbours (within a row, across rows) are uncorrelated; columns are alike
    assert abs(np.corrcoef(x[:, 0], x[:, 1])[0, 1]) < 0.01
    assert abs(np.corrcoef(x[:-1, 0], x[1:, 0])[0, 1]) < 0.01
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=0.01)
    # the share within one standard deviation: 0.669 for a sum of four uniforms (0.683 for a
    # normal, 0.577 for a single uniform)
    assert abs(float(np.mean(np.abs(x) < 1.0)) - 0.669) < 0.005


def test_biased_mf_returns_each_users_own_state_in_index_order():
    # every user rates at their own level: a factor or bias row given back to the wrong user
    # (the trainer stores them in permuted order) would predict another user's level
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 60
    level = 1.0 + (np.arange(n_users) * 7 % 5)
    u = np.repeat(np.arange(n_users), 20)
    i = np.concatenate([rng.choice(n_items, 20, replace=False) for _ in range(n_users)])
    kw = dict(n_factors=2, n_epochs=30, learning_rate=0.02, bias_regularization=0.0,
              random_state=0, num_threads=1)
    a = mfrec.BiasedMF(**kw).fit((u, i, level[u]))
    b = mfrec.BiasedMF(**kw).fit((u, i, level[u]))
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    users = np.arange(n_users)
    pred = a.predict(users, rng.integers(0, n_items, n_users))
    np.testing.assert_allclose(pred, level, atol=0.25)


def test_validation_and_early_stopping_see_index_order(tmp_path):
    from mfrec.evaluation.splits import train_test_split
    rng = np.random.default_rng(0)
    P, Q = rng.normal(0, 1, (200, 3)), rng.normal(0, 1, (90, 3))
    u, i = np.nonzero(rng.random((200, 90)) < 0.4)
    data = mfrec.as_ratings((u, i, 3 + np.einsum("ij,ij->i", P[u], Q[i])))
    train, val = train_test_split(data, test_size=0.2, random_state=0)
    m = mfrec.BiasedMF(n_factors=3, n_epochs=60, learning_rate=0.02, regularization=0.001,
                       early_stopping=8, random_state=1).fit(train, validation=val)
    # the recorded validation RMSE is that of the returned model on the same ratings
    vu, vi, vr = val.user_vocab.to_ids(val.user_index), val.item_vocab.to_ids(val.csr.indices), \
        val.csr.data
    best = np.sqrt(np.mean((m.predict(vu, vi) - vr) ** 2))
    assert best == pytest.approx(min(m.validation_history_), rel=1e-4)
    assert min(m.validation_history_) < 0.5 * m.validation_history_[0]


def _fitted_file(tmp_path):
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 50, 800), rng.integers(0, 40, 800)
    m = mfrec.BiasedMF(n_factors=4, n_epochs=2, random_state=0).fit(
        mfrec.as_ratings((u, i, rng.integers(1, 6, 800)), duplicates="last"))
    path = tmp_path / "m.mfrec"
    m.save(path)
    return m, path


def test_loaded_model_builds_its_seen_matrix_when_asked(tmp_path):
    m, path = _fitted_file(tmp_path)
    loaded = mfrec.load(path)
    assert "user_items_" not in vars(loaded)  # not built by loading
    np.testing.assert_array_equal(loaded.recommend([1, 2], n=5)[0], m.recommend([1, 2], n=5)[0])
    assert "user_items_" not in vars(loaded)  # nor by the common recommend
    ui = loaded.user_items_
    assert isinstance(ui, sp.csr_matrix) and (ui != m.user_items_).nnz == 0
    assert loaded.user_items_ is ui and "_seen_parts" not in vars(loaded)
    # saving a loaded model (built or not) keeps the matrix
    again = mfrec.load(path)
    again.save(tmp_path / "again.mfrec")
    assert (mfrec.load(tmp_path / "again.mfrec").user_items_ != m.user_items_).nnz == 0
    # refitting drops the file's parts
    again.fit((np.array([0, 1]), np.array([0, 0]), np.array([1.0, 2.0])))
    assert "_seen_parts" not in vars(again) and again.user_items_.shape == (2, 1)
    assert not hasattr(mfrec.BiasedMF(), "user_items_")


def test_one_off_recommend_never_imports_scipy(tmp_path):
    _, path = _fitted_file(tmp_path)
    code = ("import sys, json, mfrec.persist as p\n"
            f"m = p.load({str(path)!r})\n"
            "ids, _ = m.recommend([1], n=3)\n"
            "print(json.dumps([sorted(k for k in sys.modules if k.startswith('scipy')), "
            "ids.tolist()]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    loaded_scipy, ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded_scipy == [] and len(ids[0]) == 3


def test_cli_fit_refuses_a_device_output_before_reading(tmp_path, capsys):
    from mfrec.cli import main
    missing = tmp_path / "never-read.tsv"  # the output is refused before the data is opened
    assert main(["fit", str(missing), "-m", "biased-mf", "-o", "/dev/null"]) != 0
    assert "'/dev/null': it is a character device" in capsys.readouterr().err
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["tune", str(missing), "-m", "biased-mf", "--grid", "n_factors=2",
                 "-o", str(fifo)]) != 0
    assert "FIFO" in capsys.readouterr().err
    link = tmp_path / "recs.parquet"
    link.symlink_to("/dev/null")
    assert main(["recommend", "whatever.mfrec", "--all-users", "-o", str(link)]) != 0
    assert "character device" in capsys.readouterr().err
