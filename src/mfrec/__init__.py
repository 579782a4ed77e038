"""mfrec: matrix-factorization recommenders.

Users are rows, items are columns, everywhere. Every model's ``fit`` accepts a
:class:`~mfrec.data.Ratings` or anything :func:`~mfrec.data.as_ratings` turns into one.

The public names below are imported on first use (PEP 562), so ``import mfrec`` (and every
``mfrec`` command) does not pay for NumPy, SciPy, pandas and Numba until it needs them;
``mfrec.BiasedMF`` and ``from mfrec import BiasedMF`` work as usual.
"""
from __future__ import annotations

import importlib

from ._version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

#: public name -> module that defines it (a name mapped to itself is a submodule)
_LAZY = {
    "Ratings": ".data",
    "Vocabulary": ".data",
    "as_ratings": ".data",
    "FactorModel": ".models.base",
    "NotFittedError": ".models.base",
    "DivergenceError": ".models.base",
    "SVD": ".models.svd",
    "NMF": ".models.nmf",
    "GradientDescent": ".models.gd",
    "datasets": ".datasets",
    "load": ".persist",
    "Baseline": ".models.baseline",
    "BiasedMF": ".models.sgd",
    "SVDpp": ".models.svdpp",
    "ImplicitALS": ".models.implicit_als",
    "ALS": ".models.als",
    "BayesianMF": ".models.bayes",
    "BPR": ".models.bpr",
    "Popularity": ".models.popularity",
    "FitWarning": ".models._guard",
    "MemoryEstimateError": ".models._memory",
    "recommend_all": ".bulk",
    "ItemIndex": ".index",
    "index": ".index",
    "spark": ".spark",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'mfrec' has no attribute {name!r}")
    module = importlib.import_module(where, __name__)
    value = module if where == f".{name}" else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # static analysers and IDEs see the names
    from . import datasets
    from .data import Ratings, Vocabulary, as_ratings
    from .models.als import ALS
    from .models.base import DivergenceError, FactorModel, NotFittedError
    from .models.baseline import Baseline
    from .models.bayes import BayesianMF
    from .models.bpr import BPR
    from .models.gd import GradientDescent
    from .models.implicit_als import ImplicitALS
    from .models.nmf import NMF
    from .models.popularity import Popularity
    from .models._guard import FitWarning
    from .models.sgd import BiasedMF
    from .models.svd import SVD
    from .models.svdpp import SVDpp
    from .persist import load
