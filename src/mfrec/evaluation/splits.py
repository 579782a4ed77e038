"""Train/test splits of :class:`~mfrec.data.Ratings`, reproducible with ``random_state``."""
from __future__ import annotations

import numpy as np

from .._validation import check_float, rng_from
from ..data import as_ratings

__all__ = ["train_test_split"]


def train_test_split(data, *, test_size=0.2, random_state=None):
    """Random holdout of ratings.

    Parameters
    ----------
    data : Ratings or anything :func:`mfrec.as_ratings` accepts
    test_size : float in (0, 1), default=0.2
        Fraction of ratings held out.
    random_state : int, Generator or None

    Returns
    -------
    train, test : Ratings
        Disjoint, sharing the vocabularies of ``data`` (users or items only in ``test`` keep
        their index; models score them with their fallback).
    """
    ratings = as_ratings(data)
    test_size = check_float("test_size", test_size, low=0.0, high=1.0, low_open=True)
    if test_size >= 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    rng = rng_from(random_state)
    n_test = int(round(test_size * ratings.nnz))
    if n_test == 0 or n_test == ratings.nnz:
        raise ValueError(f"test_size={test_size} leaves an empty part of {ratings.nnz} ratings")
    mask = np.zeros(ratings.nnz, dtype=bool)
    mask[rng.choice(ratings.nnz, size=n_test, replace=False)] = True
    return ratings.subset(~mask), ratings.subset(mask)
