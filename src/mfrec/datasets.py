"""Datasets: the notebook's seed matrix and the MovieLens family.

MovieLens is downloaded once from GroupLens into a cache and verified by SHA-256; a local folder or
zip can be given instead (``path=``), for machines without network access. mfrec never ships the
data: its license forbids redistribution.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Ratings
from .io import read_frame

__all__ = ["seed_matrix", "load_movielens", "load_movielens_split", "MOVIELENS", "cache_dir"]

_BASE_URL = "https://files.grouplens.org/datasets/movielens/"


@dataclass(frozen=True)
class _Release:
    zip_name: str
    folder: str
    ratings_file: str
    sha256: str
    size: int


#: the releases mfrec knows, with the SHA-256 of each official zip
MOVIELENS = {
    "100k": _Release("ml-100k.zip", "ml-100k", "u.data",
                     "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229", 4924029),
    "1m": _Release("ml-1m.zip", "ml-1m", "ratings.dat",
                   "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", 5917549),
    "10m": _Release("ml-10m.zip", "ml-10M100K", "ratings.dat",
                    "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862", 65566137),
    "20m": _Release("ml-20m.zip", "ml-20m", "ratings.csv",
                    "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3", 198702078),
    "25m": _Release("ml-25m.zip", "ml-25m", "ratings.csv",
                    "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa", 261978986),
    # a rolling release: GroupLens may replace it, and then the checksum no longer matches
    "latest-small": _Release("ml-latest-small.zip", "ml-latest-small", "ratings.csv",
                             "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
                             978202),
}

_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


def seed_matrix():
    """The notebook's 4 x 5 user x item matrix (0 = not rated).

    Returns
    -------
    ndarray of float64, shape (4, 5)
    """
    return np.array([[5, 3, 0, 2, 1], [4, 0, 0, 2, 1], [1, 3, 1, 0, 5], [1, 0, 2, 0, 4]],
                    dtype=np.float64)


def cache_dir(cache_dir=None):
    """Where downloads are kept: ``cache_dir``, else ``$MFREC_DATA``, else ``~/.cache/mfrec``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MFREC_DATA")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mfrec"


def _release(name):
    if name not in MOVIELENS:
        raise ValueError(f"name must be one of {tuple(MOVIELENS)}, got {name!r}")
    return MOVIELENS[name]


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(name, cache=None, *, url=None, progress=False):
    """Download a MovieLens zip into the cache (once) and verify its SHA-256.

    Parameters
    ----------
    name : str
        One of :data:`MOVIELENS`.
    cache : path, optional
        Cache folder (see :func:`cache_dir`).
    url : str, optional
        Override the download address (a mirror, or a ``file://`` URL).
    progress : bool, default=False
        Show a progress bar.

    Returns
    -------
    Path
        The verified zip.

    Raises
    ------
    ValueError
        If the checksum does not match; the downloaded file is removed.
    """
    rel = _release(name)
    folder = cache_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / rel.zip_name
    if target.exists():
        if _sha256(target) == rel.sha256:
            return target
        target.unlink()  # a stale or corrupt cached copy: fetch again
    url = url or _BASE_URL + rel.zip_name
    fd, tmp = tempfile.mkstemp(prefix=rel.zip_name + ".", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or rel.size
            bar = None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=total, unit="B", unit_scale=True, desc=rel.zip_name)
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
                if bar is not None:
                    bar.update(len(block))
            if bar is not None:
                bar.close()
        digest = _sha256(tmp)
        if digest != rel.sha256:
            raise ValueError(f"checksum mismatch for {url}: expected SHA-256 {rel.sha256}, got "
                             f"{digest}; the download was removed")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _locate(name, path):
    """(zip or folder, member path) of the ratings file of release ``name`` under ``path``."""
    rel = _release(name)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise ValueError(f"path={str(path)!r} is neither a folder nor a zip archive")
        return p, rel
    for cand in (p, p / rel.folder):
        if (cand / rel.ratings_file).exists():
            return cand, rel
    zipped = p / rel.zip_name
    if zipped.exists():
        return zipped, rel
    raise FileNotFoundError(f"no {rel.ratings_file} in {str(path)!r} (looked in it, in "
                            f"{rel.folder}/ and for {rel.zip_name})")


def _read_member(where, rel, member):
    """Read one file of a release from a folder or zip into a frame."""
    if Path(where).is_dir():
        return read_frame(Path(where) / member)
    with zipfile.ZipFile(where) as zf:
        names = zf.namelist()
        hits = [n for n in names if n.endswith("/" + member) or n == member]
        if not hits:
            raise FileNotFoundError(f"{member} is not in {str(where)!r}")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / Path(hits[0]).name
            with zf.open(hits[0]) as src, open(out, "wb") as dst:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    dst.write(block)
            return read_frame(out)


def _resolve(name, path, cache, url):
    if path is None:
        path = download(name, cache, url=url)
    return _locate(name, path)


def load_movielens(name="100k", path=None, cache_dir=None, *, url=None, as_frame=False):
    """Load a MovieLens release as Ratings (or a DataFrame).

    Parameters
    ----------
    name : {"100k", "1m", "10m", "20m", "25m", "latest-small"}, default="100k"
    path : str or Path, optional
        A local folder (the unzipped release, or the folder holding it) or the official zip. When
        omitted, the zip is downloaded once into ``cache_dir`` and its SHA-256 verified.
    cache_dir : str or Path, optional
        Download cache; default ``$MFREC_DATA`` or ``~/.cache/mfrec``.
    url : str, optional
        Download from a mirror instead of GroupLens (the checksum still applies).
    as_frame : bool, default=False
        Return the DataFrame (user, item, rating, timestamp) instead of Ratings.

    Returns
    -------
    Ratings or pandas.DataFrame

    Examples
    --------
    >>> ratings = load_movielens("100k", path="data/ml-100k")   # doctest: +SKIP
    >>> ratings.n_users, ratings.n_items, ratings.nnz            # doctest: +SKIP
    (943, 1682, 100000)
    """
    where, rel = _resolve(name, path, cache_dir, url)
    frame = _read_member(where, rel, rel.ratings_file)
    return frame if as_frame else Ratings.from_frame(frame)


def load_movielens_split(split="u1", path=None, cache_dir=None, *, url=None, as_frame=False):
    """One canonical ML-100K split: ``u1``..``u5`` (5-fold) or ``ua``/``ub`` (10 per user held out).

    Returns
    -------
    train, test : Ratings (or DataFrames with ``as_frame=True``)
        Each with its own vocabulary; the test part may hold users or items absent from train.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    where, rel = _resolve("100k", path, cache_dir, url)
    train = _read_member(where, rel, f"{split}.base")
    test = _read_member(where, rel, f"{split}.test")
    if as_frame:
        return train, test
    return Ratings.from_frame(train), Ratings.from_frame(test)
