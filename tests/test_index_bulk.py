"""Top-N for every user streamed to Parquet (mfrec.bulk) and the approximate index (mfrec.index)."""
import os

import numpy as np
import pytest

import mfrec
from mfrec.bulk import recommend_all

pq = pytest.importorskip("pyarrow.parquet")


def _clustered(n_users=400, n_items=1500, n_groups=12, per_user=25, seed=0):
    """Users in groups that each favour their own block of items: a clear top-N per user."""
    rng = np.random.default_rng(seed)
    group = rng.integers(n_groups, size=n_users)
    block = n_items // n_groups
    users, items = [], []
    for u in range(n_users):
        own = rng.choice(block, size=per_user, replace=False) + group[u] * block
        other = rng.choice(n_items, size=5, replace=False)
        chosen = np.unique(np.concatenate([own, other]))
        users.extend([u] * chosen.size)
        items.extend(chosen.tolist())
    return np.array(users), np.array(items), np.ones(len(users), np.float32)


@pytest.fixture(scope="module")
def ials():
    u, i, r = _clustered()
    return mfrec.ImplicitALS(n_factors=16, n_epochs=6, regularization=1.0, reg_exponent=0.0,
                             alpha=5.0, random_state=0, num_threads=1).fit((u, i, r))


def test_recommend_all_equals_recommend_chunk_by_chunk(ials, tmp_path):
    # every user's rows in the file are exactly model.recommend's, whatever the chunking
    out = tmp_path / "recs.parquet"
    count = recommend_all(ials, out, n=5, chunk_size=37)
    assert count == ials.n_users_
    table = pq.read_table(out).to_pandas()
    assert list(table.columns) == ["user", "rank", "item", "score"]
    assert len(table) == 5 * ials.n_users_
    users = ials.user_vocab_.ids
    ids, scores = ials.recommend(users, n=5)
    np.testing.assert_array_equal(table["user"].to_numpy(), np.repeat(users, 5))
    np.testing.assert_array_equal(table["rank"].to_numpy(), np.tile(np.arange(1, 6), users.size))
    np.testing.assert_array_equal(table["item"].to_numpy(), ids.ravel())
    np.testing.assert_allclose(table["score"].to_numpy(), scores.ravel(), rtol=1e-6)


def test_recommend_all_keeps_string_ids_and_drops_padding(tmp_path):
    # 3 items, user "a" saw 2 of them: one row for "a", n rows for the others; ids stay strings
    model = mfrec.ImplicitALS(n_factors=2, n_epochs=3, random_state=0, num_threads=1).fit(
        (["a", "a", "b", "c"], ["x", "y", "y", "z"], [1.0, 1.0, 1.0, 1.0]))
    out = tmp_path / "recs.parquet"
    recommend_all(model, out, n=2)
    table = pq.read_table(out)
    assert str(table.schema.field("user").type) == "string"
    assert str(table.schema.field("item").type) == "string"
    rows = table.to_pandas()
    assert (rows["user"] == "a").sum() == 1
    assert rows[rows["user"] == "a"]["item"].tolist() == ["z"]
    assert len(rows) == 1 + 2 + 2


def test_recommend_all_writes_only_regular_files(ials, tmp_path):
    fifo = tmp_path / "pipe.parquet"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        recommend_all(ials, fifo, n=3)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_recommend_all_bad_arguments(ials, tmp_path):
    with pytest.raises(ValueError, match="chunk_size"):
        recommend_all(ials, tmp_path / "r.parquet", chunk_size=0)
    with pytest.raises(ValueError, match="n"):
        recommend_all(ials, tmp_path / "r.parquet", n=0)


def test_write_atomically_keeps_the_old_file_on_failure(tmp_path):
    # the public save helpers: a failed write leaves the old content and no temporary file
    from mfrec.persist import save_target, write_atomically
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    target, mode = save_target(path)
    assert target == path.resolve() and mode == 0o640

    def fail(fh):
        fh.write(b"partial")
        raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomically(target, mode, fail)
    assert path.read_bytes() == b"old"
    write_atomically(target, mode, lambda fh: fh.write(b"new"))
    assert path.read_bytes() == b"new" and (os.stat(path).st_mode & 0o777) == 0o640
    assert os.listdir(tmp_path) == ["out.bin"]
    with pytest.raises(IsADirectoryError):
        save_target(tmp_path)


def _random_candidates(rng, m, c, n_items, n_users):
    """Ranked candidate rows with -1 padding at the end, and a CSR of unsorted seen items."""
    cand = np.stack([rng.choice(n_items, size=c, replace=False) for _ in range(m)])
    pad = rng.integers(0, c + 1, size=m)
    cand[np.arange(c)[None, :] >= (c - pad)[:, None]] = -1
    scores = -np.sort(rng.standard_normal((m, c)).astype(np.float32), axis=1)
    counts = rng.integers(0, 40, size=n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate([rng.choice(n_items, size=k, replace=False) for k in counts]
                             ).astype(np.int32)
    rows = rng.integers(-1, n_users, size=m).astype(np.int64)
    return cand.astype(np.int64), scores, indptr, indices, rows


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 5, 64])
def test_select_unseen_kernel_matches_reference(seed, n):
    from mfrec._ivf_select import select_unseen, select_unseen_reference
    rng = np.random.default_rng(seed)
    args = _random_candidates(rng, m=300, c=48, n_items=120, n_users=50)
    got = select_unseen(*args, n, 120)
    want = select_unseen_reference(*args, n, 120)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # and what both must mean: no seen item kept, candidate order kept, padding last
    cand, _, indptr, indices, rows = args
    pos, kept, found = got
    for r in range(pos.shape[0]):
        seen = (set(indices[indptr[rows[r]]:indptr[rows[r] + 1]].tolist()) if rows[r] >= 0
                else set())
        expected = [c for c in cand[r].tolist() if c >= 0 and c not in seen][:n]
        assert pos[r, :found[r]].tolist() == expected
        assert (pos[r, found[r]:] == -1).all() and np.isneginf(kept[r, found[r]:]).all()


@pytest.mark.parametrize("seed", range(4))
def test_seen_in_probed_kernel_matches_reference(seed):
    from mfrec._ivf_select import seen_in_probed, seen_in_probed_reference
    rng = np.random.default_rng(seed)
    n_items, n_lists, m = 120, 9, 200
    _, _, indptr, indices, rows = _random_candidates(rng, m=m, c=8, n_items=n_items, n_users=50)
    item_list = rng.integers(0, n_lists, size=n_items).astype(np.int32)
    probe = rng.integers(-1, n_lists, size=(m, 4)).astype(np.int64)  # repeats and -1 included
    got = seen_in_probed(probe, item_list, indptr, indices, rows, n_lists)
    np.testing.assert_array_equal(got, seen_in_probed_reference(probe, item_list, indptr,
                                                                indices, rows, n_lists))
    for r in range(m):  # the meaning, one row at a time
        seen = indices[indptr[rows[r]]:indptr[rows[r] + 1]] if rows[r] >= 0 else []
        assert got[r] == sum(item_list[i] in set(probe[r].tolist()) for i in seen)


faiss = pytest.importorskip("faiss")


def test_index_probing_every_list_is_exact(ials):
    # n_probe = n_lists scans the whole catalogue: the same items and scores as exact scoring
    from mfrec.index import ItemIndex
    index = ItemIndex(n_lists=20, n_probe=20, num_threads=1).fit(ials)
    users = ials.user_vocab_.ids
    got_ids, got_sc = index.recommend(users, n=10)
    ids, sc = ials.recommend(users, n=10)
    np.testing.assert_allclose(got_sc, sc, rtol=1e-5, atol=1e-6)
    same = (got_ids == ids).mean()
    assert same > 0.99  # ties aside


def test_index_recall_and_seen_items(ials):
    # the default probe recovers most of the exact top-10, and never a training item
    from mfrec.index import ItemIndex
    index = ItemIndex(num_threads=1).fit(ials)
    users = ials.user_vocab_.ids
    got, got_sc = index.recommend(users, n=10)
    exact, _ = ials.recommend(users, n=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
    assert recall >= 0.9
    csr = ials.user_items_
    for u in range(ials.n_users_):
        seen = set(ials.item_vocab_.ids[csr.indices[csr.indptr[u]:csr.indptr[u + 1]]])
        assert not seen & set(got[u])
    assert np.all(np.diff(got_sc, axis=1) <= 1e-12)  # best first


def test_index_scores_are_the_models_own(ials):
    # the inner-product scan's scores are the model's scores of the items returned
    from mfrec.index import ItemIndex
    index = ItemIndex(num_threads=1).fit(ials)
    users = ials.user_vocab_.ids[:60]
    ids, sc = index.recommend(users, n=7)
    want = ials.predict(np.repeat(users, 7), ids.ravel(), clip=False).reshape(sc.shape)
    np.testing.assert_allclose(sc, want, rtol=1e-5, atol=1e-5)


def test_index_rows_short_of_candidates_are_completed_exactly(ials):
    # one probed list of ~15 items cannot hold 40 unseen ones: those users are scored exactly,
    # so every row is full, best first, and free of seen items
    from mfrec.index import ItemIndex
    index = ItemIndex(n_lists=100, n_probe=1, num_threads=1).fit(ials)
    users = ials.user_vocab_.ids
    ids, sc = index.recommend(users, n=40)
    assert np.isfinite(sc).all()
    exact_ids, exact_sc = ials.recommend(users, n=40)
    short = np.isclose(sc, exact_sc).all(axis=1)
    assert short.mean() > 0.5  # most rows needed the exact path, and got its answer
    np.testing.assert_array_equal(ids[short], exact_ids[short])
    csr = ials.user_items_
    for u in range(ials.n_users_):
        assert not set(ials.item_vocab_.ids[csr.indices[csr.indptr[u]:csr.indptr[u + 1]]]) \
            & set(ids[u])


def test_index_without_seen_exclusion(ials):
    from mfrec.index import ItemIndex
    index = ItemIndex(n_lists=20, n_probe=20, num_threads=1).fit(ials)
    users = ials.user_vocab_.ids[:40]
    got, got_sc = index.recommend(users, n=5, exclude_seen=False)
    ids, sc = ials.recommend(users, n=5, exclude_seen=False)
    np.testing.assert_allclose(got_sc, sc, rtol=1e-5, atol=1e-6)


def test_recommend_all_through_the_index(ials, tmp_path):
    # the file holds exactly what index.recommend gives, chunk by chunk; another model's index
    # is refused
    from mfrec.index import ItemIndex
    index = ItemIndex(n_lists=30, n_probe=3, num_threads=1).fit(ials)
    out = tmp_path / "recs.parquet"
    assert recommend_all(ials, out, n=6, chunk_size=71, index=index) == ials.n_users_
    table = pq.read_table(out).to_pandas()
    users = ials.user_vocab_.ids
    ids, scores = index.recommend(users, n=6)
    np.testing.assert_array_equal(table["item"].to_numpy(), ids.ravel())
    np.testing.assert_allclose(table["score"].to_numpy(), scores.ravel(), rtol=1e-6)
    other = mfrec.load(_saved(ials, tmp_path))
    with pytest.raises(ValueError, match="another model"):
        recommend_all(other, tmp_path / "x.parquet", index=index)


def _saved(model, folder):
    path = folder / "copy.mfrec"
    model.save(path)
    return path


def test_index_heavy_users_fall_back_to_exact(ials):
    from mfrec.index import ItemIndex
    index = ItemIndex(n_probe=1, max_seen=0, num_threads=1).fit(ials)
    users = ials.user_vocab_.ids[:20]
    np.testing.assert_array_equal(index.recommend(users, n=5)[0], ials.recommend(users, n=5)[0])


def test_index_save_load_round_trip_and_checks(ials, tmp_path):
    from mfrec.index import ItemIndex
    index = ItemIndex(n_lists=16, n_probe=4, num_threads=1).fit(ials)
    path = tmp_path / "model.mfrec.index"
    index.save(path)
    again = ItemIndex.load(path, ials)
    users = ials.user_vocab_.ids[:50]
    np.testing.assert_array_equal(again.recommend(users, n=5)[0], index.recommend(users, n=5)[0])
    other = mfrec.ImplicitALS(n_factors=16, n_epochs=2, random_state=1, num_threads=1).fit(
        (np.repeat(np.arange(400), 2), np.arange(800) % 1500, np.ones(800, np.float32)))
    with pytest.raises(ValueError, match="other item factors|centroids"):
        ItemIndex.load(path, other)
    junk = tmp_path / "junk.index"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable mfrec index"):
        ItemIndex.load(junk, ials)


def test_cli_recommend_all_users(ials, tmp_path):
    from mfrec.cli import main
    model_path = tmp_path / "m.mfrec"
    ials.save(model_path)
    out = tmp_path / "all.parquet"
    assert main(["recommend", str(model_path), "--all-users", "-n", "3", "-o", str(out),
                 "--chunk-size", "50"]) == 0
    assert len(pq.read_table(out)) == 3 * ials.n_users_
    assert main(["recommend", str(model_path), "--all-users", "-o", str(tmp_path / "x.csv")]) == 2


def test_cli_recommend_all_users_through_a_saved_index(ials, tmp_path):
    # --index FILE: the saved centroids are read back for this model and give the index's rows
    from mfrec.cli import main
    from mfrec.index import ItemIndex
    model_path = tmp_path / "m.mfrec"
    ials.save(model_path)
    index = ItemIndex(n_lists=25, n_probe=4, num_threads=1).fit(ials)
    index.save(tmp_path / "m.index")
    out = tmp_path / "all.parquet"
    assert main(["recommend", str(model_path), "--all-users", "-n", "4", "-o", str(out),
                 "--index", str(tmp_path / "m.index")]) == 0
    table = pq.read_table(out).to_pandas()
    ids, _ = index.recommend(ials.user_vocab_.ids, n=4)
    np.testing.assert_array_equal(table["item"].to_numpy(), ids.ravel())
