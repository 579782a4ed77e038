"""The one way data enters mfrec: :class:`Vocabulary` and :class:`Ratings`.

A :class:`Ratings` object holds observed (user, item, rating) triples as a CSR matrix by user and
a CSC matrix by item (int32 indices, float32 values), plus two vocabularies that map raw ids (any
hashable) to the contiguous indices the models see. Users are rows, items are columns, everywhere.
"""
from __future__ import annotations

import numbers
import sys
from pathlib import Path

import numpy as np

__all__ = ["Vocabulary", "Ratings", "as_ratings", "DUPLICATE_POLICIES", "MAX_ABS_RATING",
           "COLUMN_ALIASES"]

#: Largest rating magnitude accepted. Values pass through float32 kernels that square and sum
#: them over whole rows (and ImplicitALS scales them by ``alpha``); beyond this bound those sums
#: lose all precision long before they overflow, and no rating scale, play count or
#: interaction weight seen in practice comes near it. Rescale larger values (``np.log1p`` for
#: counts) before fitting.
MAX_ABS_RATING = 1e6

#: Column names recognised as user / item / rating / timestamp, in files and DataFrames alike.
#: Compared after lower-casing and dropping ``_``, ``-``, ``.`` and spaces, so ``userId``,
#: ``user_id``, ``USER ID`` and ``UserID`` all match ``userid``.
COLUMN_ALIASES = {
    "user": ("user", "userid", "uid", "users", "customer", "customerid", "visitor", "visitorid",
             "viewer", "viewerid", "reviewer", "reviewerid", "member", "memberid", "listener",
             "reader", "client", "clientid", "account", "accountid"),
    "item": ("item", "itemid", "iid", "items", "movie", "movieid", "film", "filmid", "product",
             "productid", "asin", "track", "trackid", "song", "songid", "artist", "artistid",
             "book", "bookid", "isbn", "article", "articleid", "video", "videoid", "business",
             "businessid", "game", "gameid", "anime", "animeid", "recipe", "recipeid"),
    "rating": ("rating", "ratings", "score", "stars", "star", "count", "counts", "plays",
               "playcount", "listens", "clicks", "views", "weight", "value", "preference",
               "strength", "grade"),
    "timestamp": ("timestamp", "time", "ts", "date", "datetime", "when", "unixtime",
                  "unixreviewtime", "created", "createdat"),
}

# bigger inputs are laid out by the Numba kernels (in place, no second copy); smaller ones by
# the NumPy reference, which needs no compilation
_KERNEL_MIN_NNZ = 1 << 20


def _pandas():
    # pandas costs ~80 MB of resident memory on import; models fitted from arrays or sparse
    # matrices never need it, so it is loaded on first use only.
    import pandas
    return pandas


def _is_pandas(obj, *names):
    """isinstance against pandas classes without importing pandas (unloaded: cannot match)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, tuple(getattr(pd, n) for n in names))

DUPLICATE_POLICIES = ("error", "mean", "last", "sum")


def _normal_name(name):
    return "".join(ch for ch in str(name).strip().lower() if ch not in "_-. ")


def match_columns(columns, *, user_col="auto", item_col="auto", rating_col="auto",
                  timestamp_col="auto", what="the data", how="user_col=, item_col="):
    """Which of ``columns`` hold the users, items, ratings and timestamps.

    Parameters
    ----------
    columns : list
        Column names as found.
    user_col, item_col, rating_col, timestamp_col : str, None or "auto"
        A column name, ``"auto"`` (recognise it from :data:`COLUMN_ALIASES`) or, for rating
        and timestamp, ``None`` (none).
    what, how : str
        For error messages: where the columns are, and how the caller names them.

    Returns
    -------
    dict
        ``{"user": col, "item": col, "rating": col or None, "timestamp": col or None}``.

    Raises
    ------
    ValueError
        If a named column is missing, several columns match one role, no user or item column
        is recognisable, or no rating column is while other columns are present: mfrec does
        not guess.
    """
    columns = list(columns)
    given = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    used = {}
    for role, col in given.items():
        if col is None and role in ("user", "item"):
            raise ValueError(f"{role}_col must name a column, got None")
        if col is not None and col != "auto":
            if col not in columns:
                raise ValueError(f"{role}_col={col!r} is not a column of {what} (columns: "
                                 f"{columns})")
            used[role] = col
    for role, col in given.items():
        if col != "auto":
            used.setdefault(role, None)
            continue
        taken = set(c for c in used.values() if c is not None)
        hits = [c for c in columns if c not in taken and _normal_name(c) in COLUMN_ALIASES[role]]
        exact = [c for c in hits if _normal_name(c) == role]
        if len(hits) > 1 and len(exact) != 1:
            raise ValueError(f"several columns of {what} could hold the {role}s: {hits}; name "
                             f"the one to use ({role}_col=...)")
        used[role] = exact[0] if len(hits) > 1 else hits[0] if hits else None
    if used["user"] is None or used["item"] is None:
        found = {r: c for r, c in used.items() if c is not None}
        raise ValueError(
            f"cannot tell which columns of {what} hold the users and items: columns "
            f"{columns}, recognised {found or 'none'}. Name them ({how}), or rename them: users "
            f"as user, userId, user_id or customer_id; items as item, itemId, item_id, movieId "
            f"or product_id; ratings as rating, score or count; times as timestamp")
    if used["rating"] is None and rating_col == "auto":
        rest = [c for c in columns if c not in used.values()]
        if rest:
            raise ValueError(
                f"no rating column recognised in {what}: users from {used['user']!r}, items from"
                f" {used['item']!r}, and {rest} unrecognised. Name the rating column (as rating, "
                f"score, count or weight, or with rating_col=) or pass rating_col=None to count "
                f"each row as an interaction of strength 1")
    return used


class Vocabulary:
    """Bidirectional map between raw ids and contiguous indices ``0..n-1``.

    Parameters
    ----------
    ids : array-like of shape (n,)
        The raw ids, in index order. Must be unique.
    name : str, default="id"
        What the ids are ("user" or "item"); used in error messages.

    Notes
    -----
    An *identity* vocabulary (ids ``0..n-1``, as built for dense and sparse matrices) looks ids up
    without hashing.
    """

    def __init__(self, ids, *, name="id"):
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"{name} ids must be one-dimensional, got shape {ids.shape}")
        self.ids = ids
        self.name = name
        self._index = None
        self._kind = None
        integer = ids.dtype.kind in "iu"
        steps = np.diff(ids) if integer else None
        self._identity = bool(integer and (ids.size == 0 or (
            ids[0] == 0 and ids[-1] == ids.size - 1 and np.all(steps == 1))))
        # increasing integer ids (what encoding integer ids gives) are looked up by binary search,
        # without pandas
        self._sorted = bool(integer and np.all(steps > 0))
        if self._sorted:
            return
        if integer:
            duplicated = np.unique(ids).size != ids.size
        else:
            duplicated = _pandas().Index(ids).has_duplicates
        if duplicated:
            raise ValueError(f"{name} ids must be unique")

    @classmethod
    def identity(cls, n, *, name="id"):
        """Vocabulary whose ids are the indices ``0..n-1`` themselves."""
        return cls(np.arange(n, dtype=np.int64), name=name)

    def __len__(self):
        return int(self.ids.size)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and len(self) == len(other) and bool(
            np.all(self.ids == other.ids))

    def __repr__(self):
        return f"Vocabulary({self.name}, n={len(self)})"

    @property
    def is_identity(self):
        return self._identity

    def _pd_index(self):
        if self._index is None:
            self._index = _pandas().Index(self.ids)
        return self._index

    @property
    def kind(self):
        """What the ids are: "int", "float", "str", "bytes", "bool", or "mixed"."""
        if self._kind is None:
            self._kind = _id_kind(self.ids)
        return self._kind

    def _check_kind(self, arr):
        """Refuse ids of another type than the vocabulary's: they could never match, and would
        otherwise read as unknown ids (the global mean) without a word."""
        if arr.size == 0:
            return
        mine, theirs = self.kind, _id_kind(arr)
        numeric = {"int", "float"}
        if mine == theirs or (mine in numeric and theirs in numeric) or mine not in (
                "int", "float", "str", "bytes", "bool"):
            return
        hint = {"int": "int(x)", "float": "float(x)", "str": "str(x)"}.get(mine, mine)
        raise TypeError(f"{self.name} ids given are {theirs} (e.g. {arr[:3].tolist()!r}) but the "
                        f"{self.name} vocabulary holds {mine} ids (e.g. {self.ids[:3].tolist()!r});"
                        f" convert them ({hint}) before looking them up")

    def lookup(self, raw, *, unknown="error"):
        """Indices of raw ids.

        Parameters
        ----------
        raw : scalar or array-like of shape (m,)
            Raw ids, of the vocabulary's type: NumPy and Python ints of any width look up an
            int vocabulary, str ids a str one.
        unknown : {"error", "mask"}, default="error"
            ``"error"`` raises ``KeyError`` naming the first unknown ids; ``"mask"`` returns -1 for
            them.

        Returns
        -------
        ndarray of int64, shape (m,)

        Raises
        ------
        TypeError
            If the ids are of another type than the vocabulary's (str ids for an int vocabulary,
            or the reverse), or mix types.
        """
        if unknown not in ("error", "mask"):
            raise ValueError(f"unknown must be 'error' or 'mask', got {unknown!r}")
        arr = _as_id_array(raw, self.name)
        self._check_kind(arr)
        if self._identity and arr.dtype.kind in "iu":
            idx = arr.astype(np.int64, copy=True)
            idx[(idx < 0) | (idx >= len(self))] = -1
        elif self._identity and arr.dtype.kind == "f" and np.all(np.isfinite(arr)) \
                and np.all(arr == np.round(arr)):
            idx = arr.astype(np.int64)
            idx[(idx < 0) | (idx >= len(self))] = -1
        elif self._sorted and arr.dtype.kind in "iu":
            # NumPy compares int32, int64 and uint ids by value: no cast that could wrap
            idx = np.searchsorted(self.ids, arr).astype(np.int64)
            found = idx < len(self)
            found[found] = self.ids[idx[found]] == arr[found]
            idx[~found] = -1
        else:
            idx = self._pd_index().get_indexer(arr).astype(np.int64)
        if unknown == "error":
            bad = idx < 0
            if bad.any():
                first = arr[bad][:5].tolist()
                raise KeyError(f"unknown {self.name} id(s) {first} ({int(bad.sum())} of {arr.size}"
                               f" not seen in training; {len(self)} known {self.name}s)")
        return idx

    def to_ids(self, index):
        """Raw ids of indices (array-like of int)."""
        return self.ids[np.asarray(index, dtype=np.int64)]


def _type_kind(t):
    """The kind of id a Python/NumPy scalar type is: int, float, str, bytes, bool, missing."""
    if issubclass(t, (bool, np.bool_)):
        return "bool"
    if issubclass(t, (numbers.Integral, np.integer)):
        return "int"
    if issubclass(t, (numbers.Real, np.floating)):
        return "float"
    if issubclass(t, str):
        return "str"
    if issubclass(t, bytes):
        return "bytes"
    if t is type(None):
        return "missing"
    return t.__name__


def _id_kind(arr):
    """The kind of the ids in a 1-D array ("int", "float", "str", ..., or "mixed")."""
    k = arr.dtype.kind
    if k in "iu":
        return "int"
    if k == "b":
        return "bool"
    if k == "f":
        return "float"
    if k == "U":
        return "str"
    if k == "S":
        return "bytes"
    if k != "O" or arr.size == 0:
        return k
    kinds = {_type_kind(t) for t in set(map(type, arr))}
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _mixed_error(name, arr):
    seen = {}
    for x in arr:
        seen.setdefault(_type_kind(type(x)), x)
    examples = ", ".join(f"{k} {v!r}" for k, v in seen.items())
    return TypeError(f"{name} ids mix types ({examples}); give them all one type, e.g. all int "
                     f"or all str, so that the same id always means the same user or item")


def _as_id_array(raw, name="id"):
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__"):
        raw = [raw]
    if _is_pandas(raw, "Series", "Index"):
        arr = raw.to_numpy()
    elif isinstance(raw, np.ndarray):
        arr = raw
    else:
        # a list mixing numbers and strings would silently become strings in np.asarray (and 1
        # then no longer matches the int id 1): look at the element types first
        kinds = {_type_kind(t) for t in set(map(type, raw))}
        if len(kinds) > 1 and kinds != {"int", "float"}:
            raise _mixed_error(name, raw)
        arr = np.asarray(raw)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} ids must be a scalar or one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "O" and _id_kind(arr) == "mixed":
        raise _mixed_error(name, arr)
    return arr


def _check_values(values, name="ratings", where=None):
    """float32 ratings, checked after the cast: finite and at most MAX_ABS_RATING in magnitude.

    ``where(positions)`` describes bad positions in the error (default: "position(s) [...]").
    """
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be numeric, got dtype {values.dtype}") from None
    with np.errstate(over="ignore"):  # an overflow to inf is reported below, with its value
        v32 = values.astype(np.float32, copy=False)
    if v32.size == 0:
        return v32
    lo, hi = v32.min(), v32.max()  # NaN propagates: one pass each, no temporary
    if np.isfinite(lo) and np.isfinite(hi) and -MAX_ABS_RATING <= lo and hi <= MAX_ABS_RATING:
        return v32
    bad = ~(np.abs(v32) <= MAX_ABS_RATING)
    pos = np.flatnonzero(bad)[:5]
    shown = [f"{v!r}" + (" (inf in float32)" if np.isfinite(v) and not np.isfinite(f) else "")
             for v, f in zip(values[pos].tolist(), v32[pos].tolist())]
    at = where(pos) if where is not None else f"position(s) {pos.tolist()}"
    raise ValueError(f"{name} must be finite and at most {MAX_ABS_RATING:g} in magnitude "
                     f"(float32): {int(bad.sum())} bad value(s), first at {at}: "
                     f"{', '.join(shown)}; rescale large values (e.g. np.log1p of counts)")


def _check_index_array(a, name, n=None):
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            bad = a[~np.isfinite(a) | (a != np.round(a))][:5].tolist()
            raise ValueError(f"{name} must hold integer indices, got non-integer values {bad}")
    elif a.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integer indices, got dtype {a.dtype}; use "
                        f"Ratings.from_ids for raw (hashable) ids")
    if a.dtype != np.int32:  # int32 stays as is: no 8-byte copy of large index arrays
        a = a.astype(np.int64, copy=False)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must be non-negative indices, got {a[a < 0][:5].tolist()}")
    if n is not None and a.size and a.max() >= n:
        raise ValueError(f"{name} index {int(a.max())} is out of range for size {n}")
    return a


class Ratings:
    """Observed ratings (or interaction strengths) with user and item vocabularies.

    Build one with a ``from_*`` constructor or :func:`as_ratings`; every model's ``fit`` calls
    :func:`as_ratings` on what it is given.

    Parameters
    ----------
    users, items : ndarray of int, shape (nnz,)
        Row (user) and column (item) indices of the observed entries.
    values : ndarray of float, shape (nnz,)
        The ratings: finite in float32 (the check follows the cast, so 1e39 is refused) and at
        most :data:`MAX_ABS_RATING` (1e6) in magnitude.
    user_vocab, item_vocab : Vocabulary
        Raw ids of the rows and columns.
    timestamps : ndarray of shape (nnz,), optional
        Time of each rating (any orderable numbers).
    duplicates : {"error", "mean", "last", "sum"}, default="error"
        What to do with repeated (user, item) pairs: raise showing the first ones, or keep their
        mean, the last one given, or their sum.
    source_columns : dict, optional
        Which input columns gave the users, items, ratings and timestamps (set by the file
        reader and :meth:`from_frame`).

    Attributes
    ----------
    csr : scipy.sparse.csr_matrix of shape (n_users, n_items)
        float32 values, int32 indices, sorted indices.
    csc : scipy.sparse.csc_matrix of shape (n_users, n_items)
        The same matrix by item (built on first use).
    user_vocab, item_vocab : Vocabulary
    timestamps : ndarray of shape (nnz,) or None
        Aligned with the CSR order of the entries.
    source_columns : dict or None
        ``{"user": ..., "item": ..., "rating": ..., "timestamp": ...}``: the column names (or
        "column N" of a headerless file) the data came from, None for a role without a column;
        None for data given as arrays or matrices.

    Notes
    -----
    Building the CSR layout costs memory for the final arrays plus the input: from 2**20
    ratings on, Numba kernels place the entries in buckets of users and sort each bucket in
    cache (no (user, item) key array, no argsort); smaller inputs take the NumPy reference path.
    """

    def __init__(self, users, items, values, *, user_vocab, item_vocab, timestamps=None,
                 duplicates="error", source_columns=None):
        if duplicates not in DUPLICATE_POLICIES:
            raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
        n_users, n_items = len(user_vocab), len(item_vocab)
        users = _check_index_array(users, "users", n_users)
        items = _check_index_array(items, "items", n_items)
        values = _check_values(values)
        if not (users.size == items.size == values.size):
            raise ValueError(f"users, items and ratings must have the same length, got "
                             f"{users.size}, {items.size} and {values.size}")
        if timestamps is not None:
            timestamps = np.asarray(timestamps)
            if timestamps.shape != values.shape:
                raise ValueError(f"timestamps must have length {values.size}, got shape "
                                 f"{timestamps.shape}")
        if values.size == 0:
            raise ValueError("ratings are empty: at least one observed rating is needed")
        numeric_ts = timestamps is None or timestamps.dtype.kind in "iufM"
        if values.size >= _KERNEL_MIN_NNZ and numeric_ts:
            fill = _CsrFill(np.bincount(users, minlength=n_users), n_items, timestamps)
            fill.add(users, items, values, timestamps)
            del users, items
            indptr, items, values, timestamps = fill.finish(duplicates, user_vocab, item_vocab)
        else:
            values, items, indptr, timestamps = _sort_and_merge(
                users, items, values, timestamps, user_vocab, item_vocab, duplicates)
        self._assemble(indptr, items, values, user_vocab, item_vocab, timestamps, source_columns)

    @classmethod
    def _from_csr(cls, indptr, indices, values, *, user_vocab, item_vocab, timestamps=None,
                  source_columns=None):
        """From CSR arrays already sorted, merged and checked (what the file reader builds)."""
        self = cls.__new__(cls)
        self._assemble(indptr, indices, values, user_vocab, item_vocab, timestamps, source_columns)
        return self

    def _assemble(self, indptr, items, values, user_vocab, item_vocab, timestamps, source_columns):
        n_users, n_items = len(user_vocab), len(item_vocab)
        idx_dtype = np.int32 if values.size < 2**31 else np.int64
        import scipy.sparse as sp  # here, not at import: loading a model never needs it

        self.csr = sp.csr_matrix((values.astype(np.float32, copy=False),
                                  items.astype(idx_dtype, copy=False),
                                  indptr.astype(idx_dtype, copy=False)),
                                 shape=(n_users, n_items))
        self.csr.has_sorted_indices = True
        self.user_vocab = user_vocab
        self.item_vocab = item_vocab
        self.timestamps = timestamps
        #: dict saying which input column gave the users, items, ratings and timestamps
        #: (None where there was none), for data read from files or DataFrames; else None
        self.source_columns = source_columns
        self._csc = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_indices(cls, users, items, ratings, *, shape=None, timestamps=None,
                     duplicates="error"):
        """From integer index arrays; ids are the indices themselves.

        Parameters
        ----------
        users, items : array-like of int, shape (nnz,)
            Non-negative indices.
        ratings : array-like of float, shape (nnz,)
        shape : (int, int), optional
            (n_users, n_items); default one past the largest index.
        """
        users = _check_index_array(users, "users")
        items = _check_index_array(items, "items")
        if shape is None:
            shape = (int(users.max()) + 1 if users.size else 0,
                     int(items.max()) + 1 if items.size else 0)
        if len(shape) != 2 or any(int(s) < 0 for s in shape):
            raise ValueError(f"shape must be (n_users, n_items), got {shape!r}")
        return cls(users, items, ratings, user_vocab=Vocabulary.identity(int(shape[0]), name="user"),
                   item_vocab=Vocabulary.identity(int(shape[1]), name="item"),
                   timestamps=timestamps, duplicates=duplicates)

    @classmethod
    def from_ids(cls, users, items, ratings, *, timestamps=None, duplicates="error",
                 user_vocab=None, item_vocab=None):
        """From raw ids of any hashable type; vocabularies are the sorted distinct ids.

        Parameters
        ----------
        users, items : array-like of shape (nnz,)
            Raw ids.
        ratings : array-like of float, shape (nnz,)
        user_vocab, item_vocab : Vocabulary, optional
            Use these vocabularies instead of building new ones (ids they do not hold raise
            ``KeyError``).
        """
        uidx, user_vocab = _encode(users, user_vocab, "user")
        iidx, item_vocab = _encode(items, item_vocab, "item")
        return cls(uidx, iidx, ratings, user_vocab=user_vocab, item_vocab=item_vocab,
                   timestamps=timestamps, duplicates=duplicates)

    @classmethod
    def from_dense(cls, matrix, *, missing_value=0):
        """From a dense user x item matrix.

        Parameters
        ----------
        matrix : array-like of shape (n_users, n_items)
        missing_value : float or nan, default=0
            The value that marks an unrated cell. The default 0 matches the notebook; pass
            ``np.nan`` when 0 is a real rating and blanks are NaN.
        """
        m = np.asarray(matrix)
        if m.ndim != 2:
            raise ValueError(f"a dense rating matrix must be 2-D (users x items), got shape {m.shape}")
        if m.dtype.kind not in "biuf":
            raise TypeError(f"matrix must be numeric, got dtype {m.dtype}")
        m = m.astype(np.float64, copy=False)
        if missing_value is None or (isinstance(missing_value, float) and np.isnan(missing_value)):
            observed = ~np.isnan(m)
            if np.isinf(m).any():
                raise ValueError("matrix holds inf values; ratings must be finite")
        else:
            if np.isnan(m).any():
                raise ValueError(f"matrix holds NaN values but missing_value={missing_value!r}; "
                                 f"pass missing_value=np.nan if NaN marks unrated cells")
            observed = m != missing_value
        u, i = np.nonzero(observed)
        return cls(u, i, m[u, i], user_vocab=Vocabulary.identity(m.shape[0], name="user"),
                   item_vocab=Vocabulary.identity(m.shape[1], name="item"))

    @classmethod
    def from_sparse(cls, matrix, *, duplicates="error"):
        """From a scipy.sparse matrix (users x items); every stored entry is an observed rating.

        Duplicate stored entries (possible in COO) follow ``duplicates``.
        """
        if not _is_sparse(matrix):
            raise TypeError(f"matrix must be a scipy.sparse matrix, got {type(matrix).__name__}")
        if matrix.ndim != 2:
            raise ValueError(f"sparse matrix must be 2-D, got shape {matrix.shape}")
        coo = matrix.tocoo()
        return cls(coo.row, coo.col, coo.data,
                   user_vocab=Vocabulary.identity(matrix.shape[0], name="user"),
                   item_vocab=Vocabulary.identity(matrix.shape[1], name="item"),
                   duplicates=duplicates)

    @classmethod
    def from_frame(cls, frame, *, user_col="auto", item_col="auto", rating_col="auto",
                   timestamp_col="auto", duplicates="error", user_vocab=None,
                   item_vocab=None):
        """From a pandas DataFrame with user, item, rating and optional timestamp columns.

        Parameters
        ----------
        frame : pandas.DataFrame
        user_col, item_col : str, default="auto"
            Column names; ids may be any hashable values of one type. ``"auto"`` finds the
            column by its name among the common spellings (``user``, ``userId``, ``user_id``,
            ``customer_id``, ...; ``item``, ``movieId``, ``product_id``, ...: see
            :data:`COLUMN_ALIASES`, compared ignoring case and underscores), and raises when
            none or several match.
        rating_col : str or None, default="auto"
            ``None`` treats every row as an interaction of strength 1; ``"auto"`` finds
            ``rating``, ``score``, ``count``, ... and, when none matches, uses strength 1 if the
            frame has no other columns (else raises rather than guess).
        timestamp_col : str or None, default="auto"
            Used when present.

        Notes
        -----
        ``source_columns`` of the result says which columns were used.
        """
        if not _is_pandas(frame, "DataFrame"):
            raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
        used = match_columns(list(frame.columns), user_col=user_col, item_col=item_col,
                             rating_col=rating_col, timestamp_col=timestamp_col,
                             what="the frame", how="user_col=, item_col=, rating_col=")
        user_col, item_col, rating_col, timestamp_col = (
            used["user"], used["item"], used["rating"], used["timestamp"])
        for col in (user_col, item_col):
            if frame[col].isna().any():
                raise ValueError(f"column {col!r} holds missing ids at rows "
                                 f"{frame.index[frame[col].isna()][:5].tolist()}")
        ratings = (np.ones(len(frame), np.float32) if rating_col is None
                   else frame[rating_col].to_numpy())
        ts = (frame[timestamp_col].to_numpy()
              if timestamp_col is not None and timestamp_col in frame.columns else None)
        out = cls.from_ids(frame[user_col].to_numpy(), frame[item_col].to_numpy(), ratings,
                           timestamps=ts, duplicates=duplicates, user_vocab=user_vocab,
                           item_vocab=item_vocab)
        out.source_columns = {k: (None if v is None else str(v)) for k, v in used.items()}
        return out

    @classmethod
    def from_file(cls, path, **kwargs):
        """Read a CSV/TSV/Parquet/MovieLens file; see :func:`mfrec.io.read_ratings`."""
        from .io import read_ratings
        return read_ratings(path, **kwargs)

    # ------------------------------------------------------------------ views
    @property
    def n_users(self):
        return self.csr.shape[0]

    @property
    def n_items(self):
        return self.csr.shape[1]

    @property
    def shape(self):
        return self.csr.shape

    @property
    def nnz(self):
        return int(self.csr.nnz)

    @property
    def values(self):
        """Ratings in CSR order, float32 of shape (nnz,)."""
        return self.csr.data

    @property
    def user_index(self):
        """Row index of each entry in CSR order, int32 of shape (nnz,)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int32), np.diff(self.csr.indptr))

    @property
    def item_index(self):
        """Column index of each entry in CSR order, shape (nnz,)."""
        return self.csr.indices

    @property
    def csc(self):
        if self._csc is None:
            self._csc = self.csr.tocsc()
            self._csc.sort_indices()
        return self._csc

    @property
    def rating_range(self):
        """(min, max) of the observed ratings."""
        v = self.csr.data
        return float(v.min()), float(v.max())

    def user_counts(self):
        return np.diff(self.csr.indptr)

    def item_counts(self):
        """Ratings per item: int64 array of shape (n_items,)."""
        return column_counts(self.csr.indices, self.n_items)

    def to_frame(self, *, user_col="user", item_col="item", rating_col="rating",
                 timestamp_col="timestamp"):
        """Raw-id DataFrame of the observed ratings, one row per rating, in (user, item) order."""
        data = {user_col: self.user_vocab.to_ids(self.user_index),
                item_col: self.item_vocab.to_ids(self.csr.indices),
                rating_col: self.csr.data}
        if self.timestamps is not None:
            data[timestamp_col] = self.timestamps
        return _pandas().DataFrame(data)

    def to_dense(self, *, missing_value=np.nan):
        """Dense float64 matrix of shape (n_users, n_items), unrated cells set to ``missing_value``."""
        cells = self.n_users * self.n_items
        if cells > 2**31:
            raise MemoryError(f"to_dense would allocate {cells} cells; use .csr instead")
        out = np.full(self.shape, missing_value, dtype=np.float64)
        out[self.user_index, self.csr.indices] = self.csr.data
        return out

    def subset(self, mask):
        """A Ratings with the entries (in CSR order) where ``mask`` is true; same vocabularies."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.nnz,):
            raise ValueError(f"mask must have shape ({self.nnz},), got {mask.shape}")
        ts = None if self.timestamps is None else self.timestamps[mask]
        return Ratings(self.user_index[mask], self.csr.indices[mask], self.csr.data[mask],
                       user_vocab=self.user_vocab, item_vocab=self.item_vocab, timestamps=ts,
                       source_columns=self.source_columns)

    def __eq__(self, other):
        if not isinstance(other, Ratings):
            return NotImplemented
        return (self.user_vocab == other.user_vocab and self.item_vocab == other.item_vocab
                and self.shape == other.shape and self.nnz == other.nnz
                and np.array_equal(self.csr.indptr, other.csr.indptr)
                and np.array_equal(self.csr.indices, other.csr.indices)
                and np.array_equal(self.csr.data, other.csr.data))

    __hash__ = None

    def __repr__(self):
        lo, hi = self.rating_range
        return (f"Ratings(n_users={self.n_users}, n_items={self.n_items}, nnz={self.nnz}, "
                f"range=[{lo:g}, {hi:g}])")



def _sort_and_merge(users, items, values, timestamps, user_vocab, item_vocab, duplicates):
    """Entries sorted by (user, item) with repeated pairs merged by ``duplicates``.

    Returns ``(values, items, indptr, timestamps)`` of the CSR layout.
    """
    n_users, n_items = len(user_vocab), len(item_vocab)
    key = users.astype(np.int64, copy=False) * n_items + items
    order = np.argsort(key, kind="stable")
    key = key[order]
    dup = key[1:] == key[:-1]
    if dup.any():
        if duplicates == "error":
            where = order[np.flatnonzero(dup)[:5]]
            pairs = list(zip(user_vocab.ids[users[where]].tolist(),
                             item_vocab.ids[items[where]].tolist()))
            raise ValueError(
                f"duplicate (user, item) pairs: {int(dup.sum())} repeated, first {pairs}; "
                f"pass duplicates='mean', 'last' or 'sum' to combine them")
        starts = np.flatnonzero(np.r_[True, ~dup])
        vals = values[order]
        if duplicates == "sum":
            merged = np.add.reduceat(vals.astype(np.float64), starts)
        elif duplicates == "mean":
            merged = np.add.reduceat(vals.astype(np.float64), starts) / np.diff(
                np.r_[starts, vals.size])
        else:  # "last": the last one given, in input order (sort was stable)
            ends = np.r_[starts[1:], vals.size] - 1
            merged = vals[ends]
        pick = starts if duplicates != "last" else np.r_[starts[1:], vals.size] - 1
        sel = order[pick]
        users, items = users[sel], items[sel]
        values = _check_values(merged, f"ratings merged by duplicates={duplicates!r}")
        if timestamps is not None:
            ends = np.r_[starts[1:], key.size] - 1
            timestamps = np.asarray(timestamps)[order[ends]]
    else:
        users, items, values = users[order], items[order], values[order]
        if timestamps is not None:
            timestamps = timestamps[order]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return values, items, indptr, timestamps


class _CsrFill:
    """The CSR arrays of Ratings, filled chunk by chunk once the per-user counts are known.

    Memory is the final layout plus the chunk being placed: no (user, item) key, no argsort, no
    second copy, whatever order the entries come in.

    Parameters
    ----------
    counts : ndarray of int, shape (n_users,)
        How many entries each user has.
    n_items : int
    timestamps : ndarray or None
        A sample whose dtype the timestamps will have (None: no timestamps).
    """

    def __init__(self, counts, n_items, timestamps=None):
        self.indptr = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=self.indptr[1:])
        nnz = int(self.indptr[-1])
        from .kernels.ratings import bucket_layout
        self.cols = np.empty(nnz, dtype=np.int32 if n_items < 2**31 else np.int64)
        # entries go to buckets of rows first (few write positions, so few cache misses), then
        # each bucket is sorted in cache; the per-row scatter is the fallback when the packed
        # (row in bucket, item) key does not fit in 31 bits
        self.buckets = bucket_layout(counts.size, n_items, nnz) if self.cols.dtype == np.int32 \
            else None
        if self.buckets is not None:
            starts = np.arange(0, counts.size + 1, 1 << self.buckets[0])
            self.cursor = self.indptr[starts].copy()
            self.bend = self.indptr[np.minimum(starts + (1 << self.buckets[0]), counts.size)]
        else:
            self.cursor = self.indptr[:-1].copy()
        self.vals = np.empty(nnz, dtype=np.float32)
        self.ts = None if timestamps is None else np.empty(nnz, dtype=np.asarray(timestamps).dtype)

    @staticmethod
    def _numeric(ts):
        # the kernels move timestamps as numbers: datetimes by their int64 view
        return ts.view(np.int64) if ts is not None and ts.dtype.kind == "M" else ts

    def add(self, rows, cols, vals, ts=None):
        """Place one chunk: row (user) and column (item) indices, float32 values, timestamps."""
        from .kernels.ratings import bucket_scatter, scatter
        args = (np.asarray(cols).astype(self.cols.dtype, copy=False),
                np.asarray(vals, dtype=np.float32),
                None if self.ts is None else self._numeric(np.asarray(ts, self.ts.dtype)))
        if self.buckets is not None:
            bad = bucket_scatter(self.cursor, self.bend, np.asarray(rows).astype(
                np.int32, copy=False), *args, *self.buckets, self.cols, self.vals,
                self._numeric(self.ts))
        else:
            bad = scatter(self.cursor, self.indptr, np.asarray(rows).astype(np.int64, copy=False),
                          *args, self.cols, self.vals, self._numeric(self.ts))
        if bad >= 0:
            raise ValueError("the data changed while it was read: a user has more ratings than "
                             "were counted on the first pass")

    def finish(self, duplicates, user_vocab, item_vocab):
        """Sort each row by item, merge repeated pairs; returns (indptr, items, values, ts)."""
        from .kernels.ratings import bucket_sort, sort_rows
        if not np.array_equal(self.cursor, self.indptr[1:] if self.buckets is None else self.bend):
            raise ValueError("the data changed while it was read: fewer ratings than were "
                             "counted on the first pass")
        self.cursor = None
        if self.buckets is not None:
            dup = bucket_sort(self.indptr, *self.buckets, self.cols, self.vals,
                              self._numeric(self.ts))
            if dup < 0:
                raise ValueError("the data changed while it was read: a user has more ratings "
                                 "than were counted on the first pass")
        else:
            dup = sort_rows(self.indptr, self.cols, self.vals, self._numeric(self.ts)).sum()
        if dup:
            return _merge_sorted(self.indptr, self.cols, self.vals, self.ts, duplicates,
                                 user_vocab, item_vocab)
        return self.indptr, self.cols, self.vals, self.ts


def _merge_sorted(indptr, cols, vals, ts, duplicates, user_vocab, item_vocab):
    """Merge repeated (user, item) pairs of a row-sorted CSR layout (ties in input order)."""
    n_users = indptr.size - 1
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))
    same = (rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])
    if duplicates == "error":
        where = np.flatnonzero(same)[:5]
        pairs = list(zip(user_vocab.ids[rows[where]].tolist(),
                         item_vocab.ids[cols[where]].tolist()))
        raise ValueError(
            f"duplicate (user, item) pairs: {int(same.sum())} repeated, first {pairs}; "
            f"pass duplicates='mean', 'last' or 'sum' to combine them")
    starts = np.flatnonzero(np.r_[True, ~same])
    ends = np.r_[starts[1:], vals.size] - 1
    if duplicates == "last":
        merged = vals[ends]
    else:
        merged = np.add.reduceat(vals.astype(np.float64), starts)
        if duplicates == "mean":
            merged /= ends - starts + 1
        merged = _check_values(merged, f"ratings merged by duplicates={duplicates!r}")
    rows = rows[starts]
    new_indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=new_indptr[1:])
    return new_indptr, cols[starts], merged, None if ts is None else ts[ends]


def _encode(raw, vocab, name):
    raw = _as_id_array(raw, name)
    if vocab is not None:
        return vocab.lookup(raw, unknown="error"), vocab
    if raw.dtype.kind in "iu" and raw.size:
        # integer ids: encoded by NumPy (pandas, ~80 MB on import, is not needed)
        lo, hi = int(raw.min()), int(raw.max())
        if lo >= 0 and hi <= 4 * raw.size + (1 << 16):  # dense enough for a presence table
            present = np.zeros(hi + 1, dtype=bool)
            present[raw] = True
            uniques = np.flatnonzero(present).astype(raw.dtype)
            code_of = np.cumsum(present, dtype=np.int64) - 1
            del present
            # int32 codes (the vocabulary is smaller than the data): half the memory of int64
            codes = code_of.astype(np.int32 if uniques.size < 2**31 else np.int64)[raw]
        else:
            uniques, codes = np.unique(raw, return_inverse=True)
            codes = codes.astype(np.int32 if uniques.size < 2**31 else np.int64)
        return codes, Vocabulary(uniques, name=name)
    codes, uniques = _pandas().factorize(raw, sort=True)
    if (codes < 0).any():
        raise ValueError(f"{name} ids hold missing values (None/NaN) at positions "
                         f"{np.flatnonzero(codes < 0)[:5].tolist()}")
    uniques = np.asarray(uniques)
    return codes, Vocabulary(uniques, name=name)


def as_ratings(data, **kwargs):
    """Turn what a user holds into :class:`Ratings`.

    Parameters
    ----------
    data : Ratings, ndarray, scipy.sparse matrix, pandas.DataFrame, tuple or path
        - ``Ratings``: returned as is.
        - 2-D ndarray: a dense user x item matrix (``missing_value=`` says what marks a blank,
          default 0).
        - scipy.sparse matrix: stored entries are the ratings.
        - DataFrame: ``user``, ``item``, ``rating`` [, ``timestamp``] columns (names overridable).
        - tuple ``(users, items, ratings)``: raw ids of any hashable type.
        - str or Path: a file read by :func:`mfrec.io.read_ratings`.
    **kwargs
        Passed to the matching constructor.
    """
    if isinstance(data, Ratings):
        if kwargs:
            raise TypeError(f"options {sorted(kwargs)} do not apply to an existing Ratings object")
        return data
    if _is_sparse(data):
        return Ratings.from_sparse(data, **kwargs)
    if _is_pandas(data, "DataFrame"):
        return Ratings.from_frame(data, **kwargs)
    if isinstance(data, (str, Path)):
        return Ratings.from_file(data, **kwargs)
    if isinstance(data, tuple):
        if len(data) not in (3, 4):
            raise ValueError(f"a tuple of data must be (users, items, ratings[, timestamps]), "
                             f"got {len(data)} elements")
        if len(data) == 4:
            kwargs.setdefault("timestamps", data[3])
        return Ratings.from_ids(data[0], data[1], data[2], **kwargs)
    if isinstance(data, (np.ndarray, list)) or hasattr(data, "__array__"):
        return Ratings.from_dense(data, **kwargs)
    if isinstance(data, numbers.Number) or data is None:
        raise TypeError(f"data must be ratings (array, sparse matrix, DataFrame, tuple or path), "
                        f"got {data!r}")
    raise TypeError(f"cannot make ratings from {type(data).__name__}; pass a 2-D array, a "
                    f"scipy.sparse matrix, a DataFrame, a (users, items, ratings) tuple or a path")


def _is_sparse(obj):
    """Whether ``obj`` is a SciPy sparse matrix or array, without importing SciPy: an object
    can only be one if ``scipy.sparse`` was imported already."""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(obj)


def column_counts(indices, n_cols):
    """Entries per column of CSR ``indices``: int64 array of shape (n_cols,).

    Small inputs use ``np.bincount``; large ones a Numba kernel that reads int32 indices as
    they are (``bincount`` first copies them to int64, which at 100M ratings cost a second).
    """
    if indices.size < 1 << 20:
        return np.bincount(indices, minlength=n_cols)
    from .kernels.ratings import count_columns
    return count_columns(indices, n_cols)
