"""mfrec: matrix-factorization recommenders.

Users are rows, items are columns, everywhere. Every model's ``fit`` accepts a
:class:`~mfrec.data.Ratings` or anything :func:`~mfrec.data.as_ratings` turns into one.
"""
from ._version import __version__
from .data import Ratings, Vocabulary, as_ratings
from .models.base import FactorModel, NotFittedError
from .models.svd import SVD
from .models.nmf import NMF
from .models.gd import GradientDescent
from . import datasets
from .persist import load
from .models.baseline import Baseline
from .models.sgd import BiasedMF
from .models.svdpp import SVDpp
from .models.implicit_als import ImplicitALS
from .models.als import ALS
from .models.bayes import BayesianMF
from .models.bpr import BPR

__all__ = ["__version__", "Ratings", "Vocabulary", "as_ratings", "FactorModel", "NotFittedError",
           "SVD", "NMF", "GradientDescent", "datasets",
           "load", "Baseline", "BiasedMF", "SVDpp", "ImplicitALS", "ALS", "BayesianMF", "BPR"]
