"""mfrec: matrix-factorization recommenders.

Users are rows, items are columns, everywhere. Every model's ``fit`` accepts a
:class:`~mfrec.data.Ratings` or anything :func:`~mfrec.data.as_ratings` turns into one.
"""
from ._version import __version__
from .data import Ratings, Vocabulary, as_ratings
from .models.base import FactorModel, NotFittedError

__all__ = ["__version__", "Ratings", "Vocabulary", "as_ratings", "FactorModel", "NotFittedError"]
