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
