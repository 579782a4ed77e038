"""The contract every mfrec model follows, stated once.

A fitted model is engine-independent state: user and item factors, biases, a global mean, the
raw-id vocabularies and the training interactions (for excluding seen items). Whatever trained it —
a Numba kernel here, Spark or a GPU later — scoring, recommending and saving work on that state
alone.

Scores are ``global_mean_ + user_bias_[u] + item_bias_[i] + user_factors_[u] @ item_factors_[i]``;
models without biases keep them at zero.
"""
from __future__ import annotations

import inspect

import numpy as np

from ..data import Ratings, as_ratings

__all__ = ["BaseModel", "FactorModel", "NotFittedError"]


class NotFittedError(RuntimeError, AttributeError):
    """Raised when a model is used before ``fit``."""


class BaseModel:
    """Hyperparameter handling in the scikit-learn manner.

    ``__init__`` of a subclass takes keyword-only hyperparameters and stores them verbatim;
    validation happens in ``fit`` (via :meth:`_validate_params`), so ``set_params`` and cloning
    never fail half-way.
    """

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def get_params(self, deep=True):
        """Hyperparameters as a dict (``deep`` is accepted for scikit-learn compatibility)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set hyperparameters; unknown names raise ``ValueError``. Returns self."""
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"{key!r} is not a parameter of {type(self).__name__}; "
                                 f"valid parameters: {valid}")
            setattr(self, key, value)
        return self

    def clone(self):
        """An unfitted copy with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self):
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        parts = []
        for k, v in self.get_params().items():
            d = defaults.get(k, inspect.Parameter.empty)
            try:
                same = d is not inspect.Parameter.empty and bool(d == v)
            except Exception:  # arrays and the like: always show
                same = False
            if not same:
                parts.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _validate_params(self):
        """Check every hyperparameter; subclasses override and raise clear errors."""


class FactorModel(BaseModel):
    """Base of every factorization model.

    Attributes (after ``fit``)
    --------------------------
    user_factors_ : ndarray of shape (n_users, n_factors)
    item_factors_ : ndarray of shape (n_items, n_factors)
    user_bias_ : ndarray of shape (n_users,)
        Zero for models without biases.
    item_bias_ : ndarray of shape (n_items,)
    global_mean_ : float
    user_vocab_, item_vocab_ : Vocabulary
        Raw ids of the rows of ``user_factors_`` and ``item_factors_``.
    rating_range_ : (float, float)
        Smallest and largest training rating; predictions are clipped to it.
    user_items_ : scipy.sparse.csr_matrix of shape (n_users, n_items)
        The training interactions, used to exclude seen items.
    loss_history_ : list of float
        Training loss per epoch, for iterative models.
    """

    #: whether ``predict`` clips to the training rating range by default
    _clip_predictions = True

    # ------------------------------------------------------------------ fitting helpers
    def _prepare(self, data, **kwargs):
        """Validate hyperparameters, then turn ``data`` into Ratings (once per fit)."""
        self._validate_params()
        return as_ratings(data, **kwargs)

    def _set_data_state(self, ratings: Ratings):
        self.user_vocab_ = ratings.user_vocab
        self.item_vocab_ = ratings.item_vocab
        self.rating_range_ = ratings.rating_range
        self.user_items_ = ratings.csr

    def _set_factor_state(self, user_factors, item_factors, user_bias=None, item_bias=None,
                          global_mean=0.0):
        P = np.ascontiguousarray(user_factors)
        Q = np.ascontiguousarray(item_factors)
        dtype = P.dtype
        self.user_factors_ = P
        self.item_factors_ = Q
        self.user_bias_ = (np.zeros(P.shape[0], dtype) if user_bias is None
                           else np.ascontiguousarray(user_bias, dtype=dtype))
        self.item_bias_ = (np.zeros(Q.shape[0], dtype) if item_bias is None
                           else np.ascontiguousarray(item_bias, dtype=dtype))
        self.global_mean_ = float(global_mean)

    def _check_fitted(self):
        if not hasattr(self, "user_factors_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(data) first")

    @property
    def n_users_(self):
        self._check_fitted()
        return self.user_factors_.shape[0]

    @property
    def n_items_(self):
        self._check_fitted()
        return self.item_factors_.shape[0]

    # ------------------------------------------------------------------ scoring
    def _score_pairs(self, uidx, iidx):
        """Raw scores for index pairs, -1 meaning unknown: falls back to biases and mean."""
        uidx = np.asarray(uidx, dtype=np.int64)
        iidx = np.asarray(iidx, dtype=np.int64)
        out = np.full(uidx.shape, self.global_mean_, dtype=np.float64)
        ku, ki = uidx >= 0, iidx >= 0
        out[ku] += self.user_bias_[uidx[ku]]
        out[ki] += self.item_bias_[iidx[ki]]
        both = np.flatnonzero(ku & ki)
        P, Q = self.user_factors_, self.item_factors_
        for s in range(0, both.size, 1 << 20):  # chunks keep the gathered factors small
            sel = both[s:s + (1 << 20)]
            out[sel] += np.einsum("ij,ij->i", P[uidx[sel]], Q[iidx[sel]], dtype=np.float64)
        return out

    def predict(self, users, items, *, clip=None, unknown="fallback"):
        """Predicted ratings for (user, item) pairs given by raw ids.

        Parameters
        ----------
        users, items : scalar or array-like of shape (m,)
            Raw ids, paired position by position.
        clip : bool, optional
            Clip to ``rating_range_``; default is the model's (True for rating models).
        unknown : {"fallback", "error"}, default="fallback"
            With ``"fallback"`` a user or item unseen in training is scored with what is known:
            the global mean plus the known side's bias (0 plus bias for models without a mean).
            With ``"error"`` an unknown id raises ``KeyError``.

        Returns
        -------
        ndarray of float64, shape (m,)
        """
        self._check_fitted()
        if unknown not in ("fallback", "error"):
            raise ValueError(f"unknown must be 'fallback' or 'error', got {unknown!r}")
        mode = "mask" if unknown == "fallback" else "error"
        uidx = self.user_vocab_.lookup(users, unknown=mode)
        iidx = self.item_vocab_.lookup(items, unknown=mode)
        if uidx.shape != iidx.shape:
            raise ValueError(f"users and items must have the same length, got {uidx.size} and "
                             f"{iidx.size}")
        out = self._score_pairs(uidx, iidx)
        if self._clip_predictions if clip is None else clip:
            np.clip(out, *self.rating_range_, out=out)
        return out

    def reconstruct(self):
        """The dense user x item score matrix ``P @ Q.T`` (+ biases), unclipped.

        Returns
        -------
        ndarray of shape (n_users, n_items)
            The notebook's ``np.dot(user_matrix, item_matrix)``.
        """
        self._check_fitted()
        cells = self.n_users_ * self.n_items_
        if cells > 2**28:
            raise MemoryError(f"reconstruct() would build {cells} cells; use predict or recommend")
        out = self.user_factors_ @ self.item_factors_.T
        if self.global_mean_ or self.user_bias_.any() or self.item_bias_.any():
            out = out + self.global_mean_ + self.user_bias_[:, None] + self.item_bias_[None, :]
        return out
