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
