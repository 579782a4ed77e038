"""The reference floor: global mean plus regularized user and item biases."""
from __future__ import annotations

import numbers

import numpy as np

from .._threads import thread_context
from .._validation import check_choice, check_float, check_int, rng_from
from .._lazy import lazy_module
from .base import FactorModel
from .sgd import EpochMonitor, check_heldout, train_sgd

_k = lazy_module("mfrec.kernels.sgd")  # Numba is imported by the first fit, not by load

__all__ = ["Baseline"]

METHODS = ("als", "sgd")
_DEFAULT_REG = {"als": (15.0, 10.0), "sgd": (0.02, 0.02)}
_DEFAULT_EPOCHS = {"als": 10, "sgd": 20}


class Baseline(FactorModel):
    """Baseline predictor ``r_hat(u, i) = mu + b_u + b_i`` with regularized biases.

    Every factor model should beat it; it is also what mfrec falls back to for unknown ids.

    Parameters
    ----------
    method : {"als", "sgd"}, default="als"
        ``"als"`` alternates exact least-squares updates of the item biases and then the user
        biases, minimising ``sum (r - mu - b_u - b_i)**2 + reg_u sum b_u**2 + reg_i sum b_i**2``.
        ``"sgd"`` runs stochastic gradient descent with a per-rating weight decay (the objective
        is then ``sum (r - r_hat)**2 + reg_u b_u**2 + reg_i b_i**2`` summed over ratings).
    n_epochs : int or None, default=None
        Sweeps (``"als"``) or passes (``"sgd"``); ``None`` means 10 for ALS and 20 for SGD.
    regularization : float, (float, float) or None, default=None
        ``reg`` or ``(reg_u, reg_i)``. ``None`` means ``(15, 10)`` for ALS — shrinkage toward
        the mean worth 15 and 10 ratings — and ``0.02`` for SGD.
    learning_rate : float, default=0.005
        SGD step size (``"sgd"`` only).
    random_state : int, numpy Generator or None, default=None
        Seeds the SGD visiting order (``"sgd"`` only; ALS is deterministic).
    num_threads : int or None, default=0
        Threads; 0 (or ``None``) uses every core.
    verbose : bool, default=False
        Progress bar with the loss per epoch.

    Attributes
    ----------
    user_bias_, item_bias_ : ndarray of float32, shape (n_users,) and (n_items,)
    global_mean_ : float
    user_factors_, item_factors_ : ndarray of float32, shape (n_users, 0) and (n_items, 0)
        Empty: the model has no factors.
    loss_history_ : list of float
        Regularized objective divided by the number of ratings, per epoch.
    validation_history_ : list of float
        RMSE on ``validation`` per epoch (empty without one).

    Examples
    --------
    >>> import numpy as np, mfrec
    >>> R = np.array([[5, 3, 0, 1], [4, 0, 0, 1], [1, 1, 0, 5]])
    >>> mfrec.Baseline().fit(R).predict([0], [1]).round(2)
    array([2.58])
    """

    def __init__(self, *, method="als", n_epochs=None, regularization=None, learning_rate=0.005,
                 random_state=None, num_threads=0, verbose=False):
        self.method = method
        self.n_epochs = n_epochs
        self.regularization = regularization
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.num_threads = num_threads
        self.verbose = verbose

    def _regs(self):
        reg = self.regularization
        if reg is None:
            return _DEFAULT_REG[self.method]
        if isinstance(reg, (tuple, list)):
            if len(reg) != 2:
                raise ValueError(f"regularization must be a number or a (user, item) pair, got "
                                 f"{reg!r}")
            return (check_float("regularization[0]", reg[0], low=0),
                    check_float("regularization[1]", reg[1], low=0))
        if isinstance(reg, numbers.Real) and not isinstance(reg, bool):
            r = check_float("regularization", reg, low=0)
            return r, r
        raise TypeError(f"regularization must be None, a number >= 0 or a (user, item) pair, got "
                        f"{reg!r}")

    def _validate_params(self):
        check_choice("method", self.method, METHODS)
        check_int("n_epochs", self.n_epochs, low=1, allow_none=True)
        self._regs()
        check_float("learning_rate", self.learning_rate, low=0, low_open=True)
        self._check_run_params()

    def fit(self, data, *, validation=None):
        """Fit the biases to observed ratings.

        Parameters
        ----------
        data : Ratings or anything :func:`mfrec.as_ratings` accepts
        validation : Ratings or anything :func:`mfrec.as_ratings` accepts, optional
            Held-out ratings scored after every epoch (recorded in ``validation_history_``).

        Returns
        -------
        self
        """
        ratings = self._prepare(data)
        heldout = check_heldout(validation, ratings)
        reg_u, reg_i = self._regs()
        n_epochs = self.n_epochs or _DEFAULT_EPOCHS[self.method]
        self._set_data_state(ratings)
        mu = float(ratings.values.mean(dtype=np.float64))
        P = np.zeros((ratings.n_users, 0), np.float32)
        Q = np.zeros((ratings.n_items, 0), np.float32)
        bu = np.zeros(ratings.n_users, np.float32)
        bi = np.zeros(ratings.n_items, np.float32)
        if self.method == "sgd":
            train_sgd(self, ratings, P, Q, bu, bi, mu, regs=(0.0, 0.0, reg_u, reg_i),
                      learning_rates=(self.learning_rate, self.learning_rate), decay=1.0,
                      n_epochs=n_epochs, heldout=heldout, patience=None,
                      rng=rng_from(self.random_state), num_threads=self.num_threads,
                      verbose=self.verbose)
            return self
        csr = ratings.csr
        item_counts = ratings.item_counts()
        bu64 = np.zeros(ratings.n_users)
        bi64 = np.zeros(ratings.n_items)
        monitor = EpochMonitor(self, n_epochs, heldout, None, self.verbose, ratings.rating_range)
        try:
            with thread_context(self.num_threads):
                for epoch in range(n_epochs):
                    sse = _k.bias_als_sweep(csr.indptr, csr.indices, csr.data, item_counts, bu64,
                                            bi64, mu, reg_u, reg_i)
                    bu[:] = bu64
                    bi[:] = bi64
                    loss = (sse + reg_u * bu64 @ bu64 + reg_i * bi64 @ bi64) / ratings.nnz
                    monitor.end_epoch(epoch, loss, lambda: (P, Q, bu, bi, mu, None))
        finally:
            monitor.close()
        self.n_epochs_ = n_epochs
        self.best_epoch_ = None
        self._set_factor_state(P, Q, bu, bi, mu)
        return self

    def _fold_in_solve(self, indptr, items, values):
        """Biases of new users, minimising this model's objective with the item biases fixed.

        ALS: ``b_u = sum (r - mu - b_i) / (reg_u + n_u)``. SGD (per-rating penalty):
        ``b_u = sum (r - mu - b_i) / (n_u (1 + reg_u))``.
        """
        reg_u = self._regs()[0]
        resid = values.astype(np.float64) - self.global_mean_ - self.item_bias_[items]
        counts = np.diff(indptr)
        sums = np.bincount(np.repeat(np.arange(counts.size), counts), weights=resid,
                           minlength=counts.size)
        denom = reg_u + counts if self.method == "als" else counts * (1.0 + reg_u)
        with np.errstate(invalid="ignore", divide="ignore"):
            bu = np.where(denom > 0, sums / np.where(denom > 0, denom, 1), 0.0)
        return np.zeros((counts.size, 0), np.float32), bu
