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

__all__ = ["seed_matrix", "load_movielens", "load_movielens_split", "MOVIELENS", "cache_dir",
           "load_adjacency", "load_adjacency_split", "read_item_labels",
           "load_movielens_labels"]

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
    """The data folder: where releases are looked for (unpacked) and downloads are kept.

    ``cache_dir`` when given, else ``$MFREC_DATA_DIR`` (the one variable for data, read by the
    tests too), else ``~/.cache/mfrec`` (under ``$XDG_CACHE_HOME`` when set). ``$MFREC_DATA``,
    the old name, is still read, with a ``DeprecationWarning``.
    """
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MFREC_DATA_DIR")
    if env:
        return Path(env)
    old = os.environ.get("MFREC_DATA")
    if old:
        import warnings
        warnings.warn("$MFREC_DATA is deprecated: set MFREC_DATA_DIR, the one folder for data "
                      "sets and downloads", DeprecationWarning, stacklevel=2)
        return Path(old)
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
        rel = _release(name)
        unpacked = cache_dir(cache) / rel.folder
        # an unpacked copy in the data folder is used as it is (no network, no checksum)
        path = unpacked if (unpacked / rel.ratings_file).exists() else download(name, cache,
                                                                                  url=url)
    return _locate(name, path)


def load_movielens(name="100k", path=None, cache_dir=None, *, url=None, as_frame=False):
    """Load a MovieLens release as Ratings (or a DataFrame).

    Parameters
    ----------
    name : {"100k", "1m", "10m", "20m", "25m", "latest-small"}, default="100k"
    path : str or Path, optional
        A local folder (the unzipped release, or the folder holding it) or the official zip. When
        omitted, the release unpacked in the data folder (``cache_dir``) is used, else the zip is
        downloaded there once and its SHA-256 verified.
    cache_dir : str or Path, optional
        The data folder; default ``$MFREC_DATA_DIR`` or ``~/.cache/mfrec`` (:func:`cache_dir`).
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


# ---------------------------------------------------------------------- user item item ... lists
_MAX_ID = 2**63 - 1


def _parse_adjacency(path):
    """(users, items, line numbers of the entries, ids of every user line) of an adjacency file.

    Every non-blank line is ``user item item ...``: non-negative integer ids separated by spaces
    or tabs. A user with no item on its line is kept (it has no interactions).
    """
    import re

    users, items, lines, line_users = [], [], [], []
    first_line = {}
    with open(path, "rb") as fh:
        raw = fh.read()
    # one scan of the whole file: plain digits and blanks only (int() alone would also take
    # "+5", "1_0" and non-ASCII digits), ids of at most 18 digits fit int64 without a check
    clean = re.fullmatch(rb"[0-9 \t\r\n]*", raw) is not None and re.search(
        rb"[0-9]{19}", raw) is None
    text = raw.decode("ascii" if clean else "utf-8", errors="replace")
    for n, line in enumerate(text.split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if not clean:
            for t in tokens:
                if not (t.isascii() and t.isdigit()) or int(t) > _MAX_ID:
                    raise ValueError(f"{str(path)!r}, line {n}: {t[:40]!r} is not a "
                                     f"non-negative integer id (lines are 'user item item ...', "
                                     f"ids below 2**63)")
        ids = list(map(int, tokens))
        u, its = ids[0], ids[1:]
        if u in first_line:
            raise ValueError(f"{str(path)!r}, line {n}: user {u} already has line "
                             f"{first_line[u]}; give each user one line")
        first_line[u] = n
        if len(set(its)) != len(its):
            seen = set()
            dup = next(i for i in its if i in seen or seen.add(i))
            raise ValueError(f"{str(path)!r}, line {n}: item {dup} is listed twice for "
                             f"user {u}")
        line_users.append(u)
        users.extend([u] * len(its))
        items.extend(its)
        lines.extend([n] * len(its))
    return (np.array(users, dtype=np.int64), np.array(items, dtype=np.int64),
            np.array(lines, dtype=np.int64), np.array(line_users, dtype=np.int64))


def _lookup_or_fail(vocab, raw, lines, path, what):
    idx = vocab.lookup(raw, unknown="mask")
    bad = np.flatnonzero(idx < 0)
    if bad.size:
        k = bad[0]
        raise ValueError(f"{str(path)!r}, line {int(lines[k])}: {what} {int(raw[k])} is not in "
                         f"the given {what}_vocab ({bad.size} entries unknown)")
    return idx


def load_adjacency(path, *, user_vocab=None, item_vocab=None):
    """Read a ``user item item ...`` file (LightGCN's and NGCF's train.txt/test.txt) as Ratings.

    Parameters
    ----------
    path : str or Path
        One line per user: the user id, then the ids of the items they interacted with, all
        non-negative integers separated by spaces or tabs. Blank lines are skipped.
    user_vocab, item_vocab : Vocabulary, optional
        Map the ids with these vocabularies (those of another file or a fitted model) instead
        of building new ones; an id they do not hold is an error naming its line. Default: the
        sorted distinct ids of the file (the users of item-less lines included).

    Returns
    -------
    Ratings
        Binary: every listed (user, item) pair has value 1.

    Raises
    ------
    ValueError
        A malformed line (a token that is not an integer id, a user given two lines, an item
        listed twice on a line), an id missing from a given vocabulary, or a file without any
        interaction; the message names the line number.

    See Also
    --------
    load_adjacency_split : a train and a test file sharing vocabularies.
    """
    from .data import Vocabulary

    users, items, lines, line_users = _parse_adjacency(path)
    if users.size == 0:
        raise ValueError(f"{str(path)!r} holds no interaction (no line lists an item)")
    if user_vocab is None:
        user_vocab = Vocabulary(np.unique(line_users), name="user")
    if item_vocab is None:
        item_vocab = Vocabulary(np.unique(items), name="item")
    uidx = _lookup_or_fail(user_vocab, users, lines, path, "user")
    iidx = _lookup_or_fail(item_vocab, items, lines, path, "item")
    return Ratings(uidx, iidx, np.ones(users.size, np.float32), user_vocab=user_vocab,
                   item_vocab=item_vocab)


def load_adjacency_split(train_path, test_path):
    """A train and a test ``user item item ...`` file, with shared vocabularies.

    Both parts index users and items over the ids of both files (sorted), so an index means
    the same user or item in each and a model fitted on ``train`` scores ``test`` directly —
    the layout of LightGCN's and NGCF's data sets (e.g. Gowalla: 29,858 users, 40,981 items).

    Parameters
    ----------
    train_path, test_path : str or Path
        Files in the format of :func:`load_adjacency`.

    Returns
    -------
    train, test : Ratings
        Binary interactions sharing ``user_vocab`` and ``item_vocab``.

    Examples
    --------
    >>> train, test = load_adjacency_split("train.txt", "test.txt")  # doctest: +SKIP
    >>> train.shape, train.nnz, test.nnz                              # doctest: +SKIP
    ((29858, 40981), 810128, 217242)
    """
    from .data import Vocabulary

    parts = [_parse_adjacency(p) for p in (train_path, test_path)]
    for p, (users, _, _, _) in zip((train_path, test_path), parts):
        if users.size == 0:
            raise ValueError(f"{str(p)!r} holds no interaction (no line lists an item)")
    user_vocab = Vocabulary(np.unique(np.concatenate([q[3] for q in parts])), name="user")
    item_vocab = Vocabulary(np.unique(np.concatenate([q[1] for q in parts])), name="item")
    out = []
    for p, (users, items, lines, _) in zip((train_path, test_path), parts):
        uidx = _lookup_or_fail(user_vocab, users, lines, p, "user")
        iidx = _lookup_or_fail(item_vocab, items, lines, p, "item")
        out.append(Ratings(uidx, iidx, np.ones(users.size, np.float32), user_vocab=user_vocab,
                           item_vocab=item_vocab))
    return tuple(out)


# ---------------------------------------------------------------------- item labels
_LABEL_ID_COLUMNS = ("item", "item_id", "itemid", "movieid", "movie_id", "id")
_LABEL_NAME_COLUMNS = ("name", "title", "label", "item_name", "movie_title")


def _int_like(text):
    t = text.strip()
    return t.isascii() and (t.isdigit() or (t[:1] == "-" and t[1:].isdigit()))


def read_item_labels(path):
    """Item id -> label from MovieLens's item file or any CSV/TSV of (item, name) rows.

    Reads ML-100K ``u.item`` (``|``-separated, latin-1), ML-1M/10M ``movies.dat`` (``::``),
    ML-20M/25M/latest ``movies.csv`` (header ``movieId,title,genres``) and any file whose first two
    columns are an item id and its label, separated by ``,``, tab, ``;``, ``|`` or ``::`` (the
    first line decides). UTF-8 text is read as such, anything else as latin-1. A header line is
    recognised by its column names (``item``, ``item_id``, ``movieId``, ``id``; the label column
    is ``name``, ``title`` or ``label`` when there is one, else the second).

    Parameters
    ----------
    path : str or Path
        The labels file.

    Returns
    -------
    dict
        ``{raw item id: label}`` in file order; ids are ``int`` when every id is an integer,
        else ``str``.

    Raises
    ------
    ValueError
        An empty file, a line with fewer than two fields, or an id given twice (with the line
        number).

    Examples
    --------
    >>> labels = read_item_labels("ml-100k/u.item")   # doctest: +SKIP
    >>> labels[1]                                      # doctest: +SKIP
    'Toy Story (1995)'
    """
    return _parse_item_labels(Path(path).read_bytes(), str(path))


#: the item file of each MovieLens release
_ITEM_FILES = {"100k": "u.item", "1m": "movies.dat", "10m": "movies.dat", "20m": "movies.csv",
               "25m": "movies.csv", "latest-small": "movies.csv"}


def load_movielens_labels(name="100k", path=None, cache_dir=None, *, url=None):
    """Item id -> title of a MovieLens release, found as :func:`load_movielens` finds its ratings.

    Parameters
    ----------
    name, path, cache_dir, url
        As for :func:`load_movielens` (a local folder or zip, or the data folder, or a download).

    Returns
    -------
    dict
        ``{movie id (int): title}``, read by :func:`read_item_labels`.

    Examples
    --------
    >>> titles = load_movielens_labels("100k")   # doctest: +SKIP
    >>> titles[50]                                # doctest: +SKIP
    'Star Wars (1977)'
    """
    where, rel = _resolve(name, path, cache_dir, url)
    member = _ITEM_FILES[name]
    if Path(where).is_dir():
        return read_item_labels(Path(where) / member)
    with zipfile.ZipFile(where) as zf:
        hits = [n for n in zf.namelist() if n.endswith("/" + member) or n == member]
        if not hits:
            raise FileNotFoundError(f"{member} is not in {str(where)!r}")
        with zf.open(hits[0]) as f:
            return _parse_item_labels(f.read(), f"{where}:{hits[0]}")


def _parse_item_labels(raw, path):
    import csv
    import io

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise ValueError(f"labels file {str(path)!r} is empty")
    if "::" in first:
        rows = [ln.split("::") for ln in lines]
    else:
        sep = next((s for s in ("|", "\t", ";") if s in first), ",")
        if sep == "," and "," not in first and ";" not in first:
            raise ValueError(f"labels file {str(path)!r}: the first line has one field; lines "
                             f"are 'item,name' (',', tab, ';', '|' or '::' separated)")
        # MovieLens's '|' files do not quote: a '"' there is part of a title
        quoting = csv.QUOTE_NONE if sep == "|" else csv.QUOTE_MINIMAL
        rows = list(csv.reader(io.StringIO(text), delimiter=sep, quoting=quoting))
    numbered = [(n, r) for n, r in enumerate(rows, start=1) if any(f.strip() for f in r)]
    id_col, name_col = 0, 1
    head = [f.strip().lower() for f in numbered[0][1]]
    if head[0] in _LABEL_ID_COLUMNS or (not _int_like(head[0]) and len(numbered) > 1
                                        and _int_like(numbered[1][1][0])):
        name_col = next((k for k, f in enumerate(head) if f in _LABEL_NAME_COLUMNS), 1)
        numbered = numbered[1:]
    ids, names = [], []
    for n, r in numbered:
        if len(r) <= max(id_col, name_col):
            raise ValueError(f"labels file {str(path)!r}, line {n}: expected an item id and a "
                             f"label, got {len(r)} field(s)")
        ids.append(r[id_col].strip())
        names.append(r[name_col].strip())
    if not ids:
        raise ValueError(f"labels file {str(path)!r} has a header but no labels")
    if all(_int_like(i) for i in ids):
        ids = [int(i) for i in ids]
    labels = dict(zip(ids, names))
    if len(labels) != len(ids):
        seen = set()
        k = next(k for k, i in enumerate(ids) if i in seen or seen.add(i))
        raise ValueError(f"labels file {str(path)!r}, line {numbered[k][0]}: item id "
                         f"{ids[k]!r} is given twice")
    return labels
