"""Datasets: the seed matrix, MovieLens from a folder or zip, checksums, canonical splits."""
import hashlib
import shutil
import zipfile

import pytest

from mfrec import datasets
from mfrec.datasets import load_movielens, load_movielens_split, seed_matrix


def test_seed_matrix():
    X = seed_matrix()
    assert X.shape == (4, 5) and int((X == 0).sum()) == 6


def test_movielens_100k_from_folder(ml100k_dir):
    r = load_movielens("100k", path=ml100k_dir)
    assert (r.n_users, r.n_items, r.nnz) == (943, 1682, 100000)
    assert r.rating_range == (1.0, 5.0)
    # the parent folder works too
    assert load_movielens("100k", path=ml100k_dir.parent).nnz == 100000


def test_movielens_splits(ml100k_dir):
    train, test = load_movielens_split("u1", path=ml100k_dir)
    assert (train.nnz, test.nnz) == (80000, 20000)
    train, test = load_movielens_split("ua", path=ml100k_dir)
    assert test.nnz == 9430  # 10 ratings of each of the 943 users
    with pytest.raises(ValueError, match="split must be one of"):
        load_movielens_split("u9", path=ml100k_dir)


def _small_zip(ml100k_dir, tmp_path):
    src = tmp_path / "ml-100k"
    src.mkdir()
    for name in ("u.data", "u1.base", "u1.test"):
        shutil.copy(ml100k_dir / name, src / name)
    z = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    shutil.rmtree(src)
    return z


def test_zip_and_download_with_checksum(ml100k_dir, tmp_path, monkeypatch):
    z = _small_zip(ml100k_dir, tmp_path)
    assert load_movielens("100k", path=z).nnz == 100000
    cache = tmp_path / "cache"
    # a wrong checksum is an error and leaves nothing behind
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_movielens("100k", cache_dir=cache, url=z.as_uri())
    assert list(cache.iterdir()) == []
    # with the right checksum the archive is cached once and reused
    digest = hashlib.sha256(z.read_bytes()).hexdigest()
    rel = datasets.MOVIELENS["100k"]
    monkeypatch.setitem(datasets.MOVIELENS, "100k", datasets._Release(
        rel.zip_name, rel.folder, rel.ratings_file, digest, z.stat().st_size))
    assert load_movielens("100k", cache_dir=cache, url=z.as_uri()).nnz == 100000
    assert [p.name for p in cache.iterdir()] == ["ml-100k.zip"]
    z.unlink()  # the cached copy is used, not the source
    train, test = load_movielens_split("u1", cache_dir=cache, url="file:///nonexistent")
    assert train.nnz == 80000


def test_bad_names(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        load_movielens("7m", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="no u.data"):
        load_movielens("100k", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_movielens("100k", path=tmp_path / "nope")


# ---------------------------------------------------------------------- user item item ... lists
from mfrec.datasets import load_adjacency, load_adjacency_split  # noqa: E402


def _write(path, text):
    path.write_text(text)
    return path


def test_adjacency_file_by_hand(tmp_path):
    # users 7 and 3 (given out of order), tabs and a blank line; user 9 has no item but is kept
    f = _write(tmp_path / "train.txt", "7 10 30\n\n3\t30 20 10\n9\n")
    r = load_adjacency(f)
    assert r.user_vocab.ids.tolist() == [3, 7, 9]
    assert r.item_vocab.ids.tolist() == [10, 20, 30]
    assert r.nnz == 5 and r.rating_range == (1.0, 1.0)
    frame = r.to_frame()
    assert sorted(zip(frame.user, frame.item)) == [(3, 10), (3, 20), (3, 30), (7, 10), (7, 30)]
    assert r.user_counts().tolist() == [3, 2, 0]


def test_adjacency_split_shares_vocabularies(tmp_path):
    # item 40 and user 5 appear only in the test file: both parts index over the union, so an
    # index means the same id on both sides
    train = _write(tmp_path / "train.txt", "0 10 20\n1 20\n")
    test = _write(tmp_path / "test.txt", "0 40\n1 10\n5 20\n")
    tr, te = load_adjacency_split(train, test)
    assert tr.user_vocab is te.user_vocab and tr.item_vocab is te.item_vocab
    assert tr.shape == te.shape == (3, 3)
    assert te.item_vocab.to_ids(te.csr.indices).tolist() == [40, 10, 20]
    assert (tr.nnz, te.nnz) == (3, 3)
    # a test file read with the training vocabularies names the line of an unknown id
    with pytest.raises(ValueError, match=r"line 1: item 40 is not in the given item_vocab"):
        load_adjacency(test, user_vocab=tr.user_vocab, item_vocab=load_adjacency(train).item_vocab)


@pytest.mark.parametrize("text, match", [
    ("0 1 2\n1 x 3\n", r"line 2: 'x' is not a non-negative integer id"),
    ("0 1\n1 -3\n", r"line 2: '-3' is not"),
    ("0 1\n1 2.5\n", r"line 2: '2.5' is not"),
    ("0 1\n\n1 +4\n", r"line 3: '\+4' is not"),
    ("0 1 99999999999999999999\n", r"line 1: '99999999999999999999' is not"),
    ("0 1 2\n0 3\n", r"line 2: user 0 already has line 1"),
    ("0 1 2 1\n", r"line 1: item 1 is listed twice for user 0"),
    ("0\n1\n", r"holds no interaction"),
    ("", r"holds no interaction"),
])
def test_adjacency_bad_lines_are_named(tmp_path, text, match):
    f = _write(tmp_path / "bad.txt", text)
    with pytest.raises(ValueError, match=match):
        load_adjacency(f)


def test_adjacency_non_utf8_bytes_name_the_line(tmp_path):
    f = tmp_path / "bin.txt"
    f.write_bytes(b"0 1\n1 \xff\xfe\n")
    with pytest.raises(ValueError, match="line 2"):
        load_adjacency(f)


def test_gowalla_lightgcn_split(gowalla_dir):
    # the published sizes of LightGCN's Gowalla split
    train = load_adjacency(gowalla_dir / "train.txt")
    assert (train.n_users, train.n_items, train.nnz) == (29858, 40981, 810128)
    assert train.user_vocab.is_identity and train.item_vocab.is_identity


def test_adjacency_round_trip_property(tmp_path_factory):
    # any mapping user -> distinct items written as lines reads back as exactly those pairs
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(st.dictionaries(st.integers(0, 10**12), st.sets(st.integers(0, 2**62),
                                                                      max_size=6),
                                      min_size=1, max_size=8),
                      st.sampled_from([" ", "\t", "  "]))
    def check(lists, sep):
        if not any(lists.values()):
            return
        f = tmp_path_factory.mktemp("adj") / "x.txt"
        f.write_text("".join(sep.join(map(str, [u, *items])) + "\n"
                             for u, items in lists.items()))
        r = load_adjacency(f)
        frame = r.to_frame()
        got = sorted(zip(frame.user.tolist(), frame.item.tolist()))
        assert got == sorted((u, i) for u, items in lists.items() for i in items)
        assert r.user_vocab.ids.tolist() == sorted(lists)

    check()
