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
        np.testing.assert_array_equal(rel[1], perm_i[plain[1]])
        np.testing.assert_array_equal(rel[2], plain[2])
        np.testing.assert_array_equal(rel[3], plain[3])
    users, items, values, ptr = plain
    # every rating once, each in the block its user's and item's positions name
    got = sp.csr_matrix((values, (users, items)), shape=csr.shape)
    assert (got != csr).nnz == 0
    n_u, n_i = csr.shape
    for blk in range(n_blocks * n_blocks):
        a, b = divmod(blk, n_blocks)
        lo, hi = ptr[blk], ptr[blk + 1]
        assert np.all(perm_u[users[lo:hi]].astype(np.int64) * n_blocks // n_u == a)
        assert np.all(perm_i[items[lo:hi]].astype(np.int64) * n_blocks // n_i == b)
        assert np.all(np.diff(perm_u[users[lo:hi]]) >= 0)  # by position, so memory order


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
    rows = 2 * _threads.NORMAL_CHUNK_ROWS + 17
    one = _threads.standard_normal(np.random.default_rng(5), rows, 3, 0.1, 1)
    two = _threads.standard_normal(np.random.default_rng(5), rows, 3, 0.1, 2)
    np.testing.assert_array_equal(one, two)
    assert one.dtype == np.float32 and one.shape == (rows, 3)
    assert abs(float(one.std()) - 0.1) < 0.002 and abs(float(one.mean())) < 0.002
    # chunks are not copies of one another
    c = _threads.NORMAL_CHUNK_ROWS
    assert not np.array_equal(one[:100], one[c:c + 100])


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
