"""Train/test splits of :class:`~mfrec.data.Ratings`, reproducible with ``random_state``.

Every split returns ``(train, test)`` Ratings that share the vocabularies of the input, so raw ids
and indices mean the same thing on both sides. Ratings are never in both parts.

Users or items that appear only in the test part ("unseen" in training) follow the ``unseen``
policy of each split:

- ``"keep"`` (default): they stay in the test part; evaluation scores them with the model's
  fallback (global mean plus whatever bias is known), as a deployed model would have to.
- ``"drop"``: test ratings whose user or item has no training rating are removed.

:func:`split_report` counts them for any pair of parts.

Splits
------
=========================  ==================================================================
:func:`train_test_split`    random holdout of a fraction of all ratings
:class:`KFold`              k disjoint folds of ratings (``cross_validate``'s default)
:class:`ShuffleSplit`       repeated random holdout
:class:`RepeatedSplit`      any split function below, repeated, as a ``cv`` for cross-validation
:func:`user_split`          per-user holdout: a fraction or a count of each user's ratings
:func:`leave_one_out_split` one rating per user: a random one or the latest by timestamp
:func:`temporal_split`      global cut in time: everything after the cut is the test part
:func:`user_temporal_split` per-user cut in time: each user's latest ratings are the test part
=========================  ==================================================================
"""
from __future__ import annotations

import numbers

import numpy as np

from .._validation import check_choice, check_float, check_int, rng_from
from ..data import Ratings, as_ratings

__all__ = ["UNSEEN_POLICIES", "train_test_split", "KFold", "ShuffleSplit", "RepeatedSplit",
           "user_split", "leave_one_out_split", "temporal_split", "user_temporal_split",
           "split_report", "check_cv"]

UNSEEN_POLICIES = ("keep", "drop")


# ---------------------------------------------------------------------- helpers
def _make_parts(ratings: Ratings, test_mask, unseen):
    """(train, test) from a boolean test mask over the CSR entries, applying ``unseen``."""
    check_choice("unseen", unseen, UNSEEN_POLICIES)
    test_mask = np.asarray(test_mask, dtype=bool)
    n_test = int(test_mask.sum())
    if n_test == 0:
        raise ValueError(f"the split leaves the test part empty ({ratings.nnz} ratings)")
    if n_test == ratings.nnz:
        raise ValueError(f"the split leaves the training part empty ({ratings.nnz} ratings)")
    if unseen == "drop":
        train_mask = ~test_mask
        u_seen = np.bincount(ratings.user_index[train_mask], minlength=ratings.n_users) > 0
        i_seen = np.bincount(ratings.item_index[train_mask], minlength=ratings.n_items) > 0
        cold = ~(u_seen[ratings.user_index] & i_seen[ratings.item_index])
        test_mask = test_mask & ~cold
        if not test_mask.any():
            raise ValueError("every test rating has a user or item unseen in training; "
                             "unseen='drop' leaves the test part empty")
        return ratings.subset(train_mask), ratings.subset(test_mask)
    return ratings.subset(~test_mask), ratings.subset(test_mask)


def _check_size(name, value):
    """A fraction in (0, 1) or a count >= 1 (an int), as in scikit-learn."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return check_int(name, value, low=1)
    value = check_float(name, value, low=0.0, high=1.0, low_open=True)
    if value >= 1.0:
        raise ValueError(f"{name} must be a fraction in (0, 1) or an int count >= 1, "
                         f"got {value!r}")
    return value


def _check_fraction(test_size):
    """``test_size`` as a fraction in (0, 1)."""
    test_size = check_float("test_size", test_size, low=0.0, high=1.0, low_open=True)
    if test_size >= 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    return test_size


def _need_timestamps(ratings, what):
    if ratings.timestamps is None:
        raise ValueError(f"{what} needs timestamps, but the ratings have none (give a file or "
                         f"frame with a timestamp column)")
    ts = np.asarray(ratings.timestamps)
    if ts.dtype.kind not in "biufM":
        raise TypeError(f"{what} needs numeric or datetime timestamps, got dtype {ts.dtype}")
    return ts


def _per_user_rank(ratings, *keys):
    """Position of each entry within its user's row when the row is sorted by ``keys``.

    ``keys`` (each of shape (nnz,)), most significant first, are compared ascending; full ties
    keep CSR order. Returns (rank, counts) with rank[e] in ``0..n_u-1``.
    """
    order = np.lexsort(tuple(reversed(keys)) + (ratings.user_index,))  # users first
    counts = ratings.user_counts()
    starts = np.repeat(ratings.csr.indptr[:-1], counts)
    rank = np.empty(ratings.nnz, dtype=np.int64)
    rank[order] = np.arange(ratings.nnz) - starts
    return rank, counts


def _n_held(counts, size, min_train):
    """How many ratings each user puts in the test part: ``size`` (fraction or count) of each
    row, keeping at least ``min_train`` in training (users too small contribute nothing)."""
    if isinstance(size, int):
        want = np.full(counts.shape, size, dtype=np.int64)
    else:
        # at least one per user who can spare it, so small users are evaluated too
        want = np.maximum(np.rint(counts * size).astype(np.int64), 1)
    return np.clip(np.minimum(want, counts - min_train), 0, None)


def _hold_out_last(ratings, size, min_train, unseen, *keys):
    """(train, test) holding out the entries each user ranks last by ``keys`` (see
    :func:`_per_user_rank`): ``size`` of each row, ``min_train`` kept (see :func:`_n_held`)."""
    rank, counts = _per_user_rank(ratings, *keys)
    held = _n_held(counts, size, min_train)
    mask = rank >= np.repeat(counts - held, counts)
    return _make_parts(ratings, mask, unseen)


# ---------------------------------------------------------------------- global splits
def train_test_split(data, *, test_size=0.2, random_state=None, unseen="keep"):
    """Random holdout of ratings.

    Parameters
    ----------
    data : Ratings or anything :func:`mfrec.as_ratings` accepts
    test_size : float in (0, 1), default=0.2
        Fraction of ratings held out.
    random_state : int, Generator or None
    unseen : {"keep", "drop"}, default="keep"
        What to do with test ratings whose user or item has no training rating (see the module
        notes).

    Returns
    -------
    train, test : Ratings
        Disjoint, sharing the vocabularies of ``data``.

    Examples
    --------
    >>> import numpy as np
    >>> from mfrec.evaluation import train_test_split
    >>> train, test = train_test_split(np.array([[5, 3, 1], [4, 1, 2]]), test_size=0.5,
    ...                                random_state=0)
    >>> train.nnz, test.nnz
    (3, 3)
    """
    ratings = as_ratings(data)
    test_size = _check_fraction(test_size)
    rng = rng_from(random_state)
    n_test = int(round(test_size * ratings.nnz))
    if n_test == 0 or n_test == ratings.nnz:
        raise ValueError(f"test_size={test_size} leaves an empty part of {ratings.nnz} ratings")
    mask = np.zeros(ratings.nnz, dtype=bool)
    mask[rng.choice(ratings.nnz, size=n_test, replace=False)] = True
    return _make_parts(ratings, mask, unseen)


class KFold:
    """K disjoint folds of ratings: every rating is in exactly one test part.

    Parameters
    ----------
    n_splits : int >= 2, default=5
    shuffle : bool, default=True
        Shuffle ratings before cutting the folds. Without shuffling, folds are contiguous runs of
        the (user, item)-sorted ratings, i.e. roughly disjoint groups of users.
    random_state : int, Generator or None
    unseen : {"keep", "drop"}, default="keep"

    Examples
    --------
    >>> import numpy as np
    >>> from mfrec.evaluation import KFold
    >>> [test.nnz for _, test in KFold(3, random_state=0).split(np.arange(1, 11).reshape(2, 5))]
    [4, 3, 3]
    """

    def __init__(self, n_splits=5, *, shuffle=True, random_state=None, unseen="keep"):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state
        self.unseen = unseen

    def get_n_splits(self, data=None):
        return self.n_splits

    def split(self, data):
        """Yield ``(train, test)`` Ratings, one pair per fold."""
        ratings = as_ratings(data)
        k = check_int("n_splits", self.n_splits, low=2)
        check_choice("unseen", self.unseen, UNSEEN_POLICIES)
        if k > ratings.nnz:
            raise ValueError(f"n_splits={k} is more than the {ratings.nnz} ratings")
        order = (rng_from(self.random_state).permutation(ratings.nnz) if self.shuffle
                 else np.arange(ratings.nnz))
        # fold sizes differ by at most one, the larger ones first
        sizes = np.full(k, ratings.nnz // k) + (np.arange(k) < ratings.nnz % k)
        bounds = np.r_[0, np.cumsum(sizes)]
        for f in range(k):
            mask = np.zeros(ratings.nnz, dtype=bool)
            mask[order[bounds[f]:bounds[f + 1]]] = True
            yield _make_parts(ratings, mask, self.unseen)

    def __repr__(self):
        return (f"KFold(n_splits={self.n_splits}, shuffle={self.shuffle}, "
                f"random_state={self.random_state!r}, unseen={self.unseen!r})")


class ShuffleSplit:
    """Repeated random holdout: ``n_splits`` independent :func:`train_test_split` draws.

    Parameters
    ----------
    n_splits : int >= 1, default=5
    test_size : float in (0, 1), default=0.2
    random_state : int, Generator or None
    unseen : {"keep", "drop"}, default="keep"
    """

    def __init__(self, n_splits=5, *, test_size=0.2, random_state=None, unseen="keep"):
        self.n_splits = n_splits
        self.test_size = test_size
        self.random_state = random_state
        self.unseen = unseen

    def get_n_splits(self, data=None):
        return self.n_splits

    def split(self, data):
        ratings = as_ratings(data)
        n = check_int("n_splits", self.n_splits, low=1)
        rng = rng_from(self.random_state)
        for _ in range(n):
            yield train_test_split(ratings, test_size=self.test_size, random_state=rng,
                                   unseen=self.unseen)

    def __repr__(self):
        return (f"ShuffleSplit(n_splits={self.n_splits}, test_size={self.test_size}, "
                f"random_state={self.random_state!r}, unseen={self.unseen!r})")


class RepeatedSplit:
    """Any split function repeated ``n_splits`` times, as a ``cv`` for cross-validation.

    Parameters
    ----------
    split : callable
        One of the split functions here (or any ``split(data, **kwargs) -> (train, test)``).
    n_splits : int >= 1, default=1
        Repetitions; each draws a new ``random_state`` from this one when ``split`` takes one
        (deterministic splits such as :func:`temporal_split` give the same parts each time, so
        use 1).
    random_state : int, Generator or None
    **kwargs
        Passed to ``split`` (``test_size=``, ``strategy=``, ``unseen=``, ...).

    Examples
    --------
    >>> from mfrec.evaluation import RepeatedSplit, user_split
    >>> cv = RepeatedSplit(user_split, 3, test_size=0.1, random_state=0)
    >>> cv.get_n_splits()
    3
    """

    def __init__(self, split, n_splits=1, *, random_state=None, **kwargs):
        self.split_function = split
        self.n_splits = n_splits
        self.random_state = random_state
        self.kwargs = kwargs

    def get_n_splits(self, data=None):
        return self.n_splits

    def split(self, data):
        import inspect
        n = check_int("n_splits", self.n_splits, low=1)
        if not callable(self.split_function):
            raise TypeError(f"split must be a split function, got {self.split_function!r}")
        ratings = as_ratings(data)
        try:
            seeded = "random_state" in inspect.signature(self.split_function).parameters
        except (TypeError, ValueError):
            seeded = False
        rng = rng_from(self.random_state)
        for _ in range(n):
            extra = {"random_state": rng} if seeded else {}
            yield self.split_function(ratings, **self.kwargs, **extra)

    def __repr__(self):
        name = getattr(self.split_function, "__name__", repr(self.split_function))
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return (f"RepeatedSplit({name}, n_splits={self.n_splits}, "
                f"random_state={self.random_state!r}{args})")


def temporal_split(data, *, test_size=0.2, cutoff=None, unseen="keep"):
    """Global cut in time: ratings at or after the cut form the test part.

    Every training rating is strictly older than every test rating, so ratings sharing the
    boundary timestamp all go to the test part and the test fraction can be a little above
    ``test_size``.

    Parameters
    ----------
    data : Ratings or anything :func:`mfrec.as_ratings` accepts
        Must carry timestamps.
    test_size : float in (0, 1), default=0.2
        Fraction of the ratings (the latest ones) to hold out; ignored when ``cutoff`` is given.
    cutoff : number or timestamp-like, optional
        Ratings with ``timestamp >= cutoff`` are the test part.
    unseen : {"keep", "drop"}, default="keep"

    Returns
    -------
    train, test : Ratings
    """
    ratings = as_ratings(data)
    ts = _need_timestamps(ratings, "temporal_split")
    if cutoff is None:
        test_size = _check_fraction(test_size)
        n_test = max(int(round(test_size * ratings.nnz)), 1)
        cutoff = np.sort(ts, kind="stable")[ratings.nnz - n_test]
    try:
        mask = ts >= cutoff
    except TypeError:
        raise TypeError(f"cutoff {cutoff!r} cannot be compared with timestamps of dtype "
                        f"{ts.dtype}") from None
    if mask.all():
        raise ValueError(f"every rating is at or after cutoff {cutoff!r}: the training part "
                         f"would be empty")
    return _make_parts(ratings, mask, unseen)


# ---------------------------------------------------------------------- per-user splits
def user_split(data, *, test_size=0.2, min_train=1, random_state=None, unseen="keep"):
    """Per-user holdout: each user puts a fraction or a count of their ratings in the test part.

    Parameters
    ----------
    data : Ratings or anything :func:`mfrec.as_ratings` accepts
    test_size : float in (0, 1) or int >= 1, default=0.2
        A fraction of each user's ratings (rounded, at least one), or a count per user.
    min_train : int >= 1, default=1
        Ratings each user keeps in training; users with ``min_train`` ratings or fewer stay
        entirely in training.
    random_state : int, Generator or None
    unseen : {"keep", "drop"}, default="keep"
        Only items can be unseen here (every test user keeps ``min_train`` training ratings).

    Returns
    -------
    train, test : Ratings
    """
    ratings = as_ratings(data)
    size = _check_size("test_size", test_size)
    min_train = check_int("min_train", min_train, low=1)
    rng = rng_from(random_state)
    # entries ranked last within a user (by the random key) are held out
    return _hold_out_last(ratings, size, min_train, unseen, rng.random(ratings.nnz))


def leave_one_out_split(data, *, strategy="random", min_ratings=2, random_state=None,
                        unseen="keep"):
    """Leave one out: one rating of each user is the test part.

    Parameters
    ----------
    data : Ratings or anything :func:`mfrec.as_ratings` accepts
    strategy : {"random", "latest"}, default="random"
        Hold out a random rating or the latest one by timestamp (ties broken at random).
    min_ratings : int >= 2, default=2
        Users with fewer ratings stay entirely in training.
    random_state : int, Generator or None
    unseen : {"keep", "drop"}, default="keep"

    Returns
    -------
    train, test : Ratings
        ``test`` has at most one rating per user.
    """
    ratings = as_ratings(data)
    check_choice("strategy", strategy, ("random", "latest"))
    min_ratings = check_int("min_ratings", min_ratings, low=2)
    rng = rng_from(random_state)
    tiebreak = rng.random(ratings.nnz)
    if strategy == "latest":
        ts = _need_timestamps(ratings, "leave_one_out_split(strategy='latest')")
        rank, counts = _per_user_rank(ratings, ts, tiebreak)
    else:
        rank, counts = _per_user_rank(ratings, tiebreak)
    n_u = np.repeat(counts, counts)
    mask = (rank == n_u - 1) & (n_u >= min_ratings)
    return _make_parts(ratings, mask, unseen)


def user_temporal_split(data, *, test_size=0.2, min_train=1, unseen="keep"):
    """Per-user cut in time: each user's latest ratings form the test part.

    For every user, all training ratings are at or before all of their test ratings (equal
    timestamps at the boundary are split in CSR order, which is deterministic).

    Parameters
    ----------
    data : Ratings or anything :func:`mfrec.as_ratings` accepts
        Must carry timestamps.
    test_size : float in (0, 1) or int >= 1, default=0.2
        Fraction (rounded, at least one) or count of each user's latest ratings held out.
    min_train : int >= 1, default=1
        Ratings each user keeps in training.
    unseen : {"keep", "drop"}, default="keep"

    Returns
    -------
    train, test : Ratings
    """
    ratings = as_ratings(data)
    ts = _need_timestamps(ratings, "user_temporal_split")
    size = _check_size("test_size", test_size)
    min_train = check_int("min_train", min_train, low=1)
    return _hold_out_last(ratings, size, min_train, unseen, ts)


# ---------------------------------------------------------------------- reporting
def split_report(train, test):
    """Count what of ``test`` is unseen in ``train``.

    Parameters
    ----------
    train, test : Ratings
        Usually from one of the splits here (shared vocabularies); parts read from separate
        files are matched by raw id.

    Returns
    -------
    dict
        ``n_train``, ``n_test`` (ratings); ``unseen_users``, ``unseen_items`` (distinct test
        users / items with no training rating); ``unseen_ratings`` (test ratings with an unseen
        user or item).
    """
    train, test = as_ratings(train), as_ratings(test)
    cold_u = _unseen(train.user_vocab, train.user_counts(), test.user_vocab, test.user_index)
    cold_i = _unseen(train.item_vocab, train.item_counts(), test.item_vocab, test.item_index)
    return {"n_train": train.nnz, "n_test": test.nnz,
            "unseen_users": int(np.unique(test.user_index[cold_u]).size),
            "unseen_items": int(np.unique(test.item_index[cold_i]).size),
            "unseen_ratings": int((cold_u | cold_i).sum())}


def _unseen(train_vocab, train_counts, test_vocab, test_index):
    if test_vocab is train_vocab or test_vocab == train_vocab:
        return train_counts[test_index] == 0
    idx = train_vocab.lookup(test_vocab.ids, unknown="mask")[test_index]
    cold = idx < 0
    cold[~cold] = train_counts[idx[~cold]] == 0
    return cold


# ---------------------------------------------------------------------- cv argument
def check_cv(cv=5, *, random_state=None, unseen="keep"):
    """Turn a ``cv`` argument into a splitter.

    Parameters
    ----------
    cv : int, splitter or iterable of (train, test), default=5
        An int is the number of :class:`KFold` folds; an object with ``split(data)`` is used as
        is; an iterable of ready ``(train, test)`` pairs (for example MovieLens ``u1``..``u5``)
        is used as given.
    """
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        return KFold(check_int("cv", cv, low=2), shuffle=True, random_state=random_state,
                     unseen=unseen)
    if hasattr(cv, "split") and not isinstance(cv, (str, bytes)):
        return cv
    if isinstance(cv, (str, bytes)) or not hasattr(cv, "__iter__"):
        raise TypeError(f"cv must be an int >= 2, a splitter with split(data) or a list of "
                        f"(train, test) pairs, got {cv!r}")
    return _Predefined(list(cv))


class _Predefined:
    def __init__(self, pairs):
        for k, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"cv[{k}] must be a (train, test) pair, got {type(pair).__name__}")
        if not pairs:
            raise ValueError("cv is an empty list of (train, test) pairs")
        self.pairs = pairs

    def get_n_splits(self, data=None):
        return len(self.pairs)

    def split(self, data=None):
        for train, test in self.pairs:
            yield as_ratings(train), as_ratings(test)
