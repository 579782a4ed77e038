"""SVD++ (Koren 2008): biased matrix factorization plus an implicit-feedback term."""
from __future__ import annotations

import numpy as np

from .._threads import thread_context
from .._validation import check_float, check_int, rng_from
from .._lazy import lazy_module
from .als import threads_for
from .base import DivergenceError, FactorModel
from .sgd import EpochMonitor, _init_state, _sq_rows, _zero_unrated, check_heldout

_k = lazy_module("mfrec.kernels.svdpp")  # Numba is imported by the first fit, not by load

__all__ = ["SVDpp"]


class SVDpp(FactorModel):
    """SVD++ trained by parallel SGD.

    Predicts ``mu + b_u + b_i + q_i . (p_u + |N(u)|**-0.5 sum_{j in N(u)} y_j)``, where ``N(u)``
    are the items ``u`` rated in training: who rated what informs the user vector beyond the
    rating values.

    The implicit sum is formed once per user per epoch and its factors ``y_j`` take one step per
    user with the summed gradient of the user's ratings, so an epoch costs ``O(nnz k)`` like
    :class:`BiasedMF` rather than ``O(sum |N(u)|**2 k)``. Users are visited in a random order by
    parallel threads without locks (Hogwild); with ``num_threads=1`` a fit is reproducible.

    After fitting, the implicit term is folded into ``user_factors_`` so scoring is plain
    ``mu + b_u + b_i + p_u . q_i`` like every other model; ``implicit_factors_`` keeps the ``y_j``
    (folding in a new user needs them).

    Parameters
    ----------
    n_factors : int, default=100
    n_epochs : int, default=40
    learning_rate : float, default=0.015
        SGD step size of the first epoch (factors and biases).
    learning_rate_decay : float, default=0.95
        The step size is multiplied by this after every epoch.
    regularization : float, default=0.05
        Per-rating weight decay of ``p_u`` and ``q_i``.
    implicit_regularization : float or None, default=0.01
        Per-rating weight decay of ``y_j``; ``None`` uses ``regularization``.
    bias_regularization : float, default=0.02
    init_std : float, default=0.02
        Standard deviation of the normal initial ``p_u``, ``q_i`` and ``y_j``.
    early_stopping : int or None, default=5
        With a ``validation`` set, stop when its RMSE has not improved for this many epochs and
        keep the best epoch's model.
    random_state : int, numpy Generator or None, default=None
    num_threads : int or None, default=0
        0 (or ``None``) uses every core; data sets under 200K ratings train on one thread (and
        under ``100K * n`` ratings on at most ``n``), where more would cost more than it saves.
    verbose : bool, default=False

    Attributes
    ----------
    user_factors_ : ndarray of float32, shape (n_users, n_factors)
        ``p_u + |N(u)|**-0.5 sum_j y_j`` (the implicit term folded in).
    item_factors_ : ndarray of float32, shape (n_items, n_factors)
    implicit_factors_ : ndarray of float32, shape (n_items, n_factors)
        The ``y_j``.
    explicit_user_factors_ : ndarray of float32, shape (n_users, n_factors)
        The ``p_u`` alone.
    user_bias_, item_bias_, global_mean_, loss_history_, validation_history_, best_epoch_,
    n_epochs_ : as in :class:`BiasedMF`
    """

    # new users are folded in by SGD on their ratings with the items fixed, like training: the
    # exact ridge optimum ignores the implicit shrinkage of a few decaying SGD epochs
    _fold_in_method = "sgd"

    def __init__(self, *, n_factors=100, n_epochs=40, learning_rate=0.015,
                 learning_rate_decay=0.95, regularization=0.05, implicit_regularization=0.01,
                 bias_regularization=0.02, init_std=0.02, early_stopping=5, random_state=None,
                 num_threads=0, verbose=False):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.regularization = regularization
        self.implicit_regularization = implicit_regularization
        self.bias_regularization = bias_regularization
        self.init_std = init_std
        self.early_stopping = early_stopping
        self.random_state = random_state
        self.num_threads = num_threads
        self.verbose = verbose

    def _validate_params(self):
        self._check_size_params()
        check_float("learning_rate", self.learning_rate, low=0, low_open=True)
        check_float("learning_rate_decay", self.learning_rate_decay, low=0, high=1.0,
                    low_open=True)
        check_float("regularization", self.regularization, low=0)
        check_float("implicit_regularization", self.implicit_regularization, low=0,
                    allow_none=True)
        check_float("bias_regularization", self.bias_regularization, low=0)
        check_float("init_std", self.init_std, low=0)
        check_int("early_stopping", self.early_stopping, low=1, allow_none=True)
        self._check_run_params()

    def fit(self, data, *, validation=None):
        """Fit to observed ratings.

        Parameters
        ----------
        data : Ratings or anything :func:`mfrec.as_ratings` accepts
        validation : Ratings or anything :func:`mfrec.as_ratings` accepts, optional
            Held-out ratings scored after every epoch; enables early stopping.

        Returns
        -------
        self
        """
        ratings = self._prepare(data)
        heldout = check_heldout(validation, ratings)
        rng = rng_from(self.random_state)
        self._set_data_state(ratings)
        f32 = np.float32
        mu = float(ratings.values.mean(dtype=np.float64))
        n_users, n_items, k = ratings.n_users, ratings.n_items, self.n_factors
        P, Q, bu, bi = _init_state(n_users, n_items, k, self.init_std, rng)
        Y = rng.standard_normal((n_items, k), dtype=np.float32)
        Y *= f32(self.init_std)
        csr = ratings.csr
        indptr, indices, values = csr.indptr, csr.indices, csr.data
        counts_u = ratings.user_counts().astype(np.float64)
        counts_i = ratings.item_counts().astype(np.float64)
        reg_f = float(self.regularization)
        reg_y = float(reg_f if self.implicit_regularization is None
                      else self.implicit_regularization)
        reg_b = float(self.bias_regularization)
        lr = float(self.learning_rate)
        patience = self.early_stopping if heldout is not None else None
        monitor = EpochMonitor(self, self.n_epochs, heldout, patience, self.verbose,
                               ratings.rating_range)

        def state():
            Peff = _k.fold_implicit(indptr, indices, P, Y)
            return Peff, Q, bu, bi, mu, lambda: (P.copy(), Q.copy(), Y.copy(), bu.copy(),
                                                 bi.copy())

        try:
            # below ~100K ratings per thread a parallel epoch costs more than it saves
            n_threads = threads_for(self.num_threads, ratings.nnz)
            with thread_context(n_threads):
                # many more chunks than threads: a chunk of heavy users does not hold up the rest
                n_chunks = 1 if n_threads == 1 else min(n_users, 16 * n_threads)
                chunk_err = np.zeros(max(n_chunks, 1))
                epoch = -1
                for epoch in range(self.n_epochs):
                    order = rng.permutation(n_users).astype(np.int32)
                    _k.svdpp_epoch(indptr, indices, values, order, n_chunks, P, Q, Y, bu, bi,
                                   f32(mu), f32(lr), f32(lr), f32(reg_b), f32(reg_f), f32(reg_y),
                                   chunk_err, n_threads)
                    penalty = (reg_f * counts_u @ _sq_rows(P)
                               + reg_f * counts_i @ _sq_rows(Q)
                               + reg_y * counts_i @ _sq_rows(Y)
                               + reg_b * counts_u @ np.square(bu.astype(np.float64))
                               + reg_b * counts_i @ np.square(bi.astype(np.float64)))
                    loss = (chunk_err.sum() + penalty) / ratings.nnz
                    if not np.isfinite(loss):
                        raise DivergenceError(
                            f"SVDpp training diverged at epoch {epoch + 1} (loss {loss}); lower "
                            f"learning_rate (now {self.learning_rate}) or raise regularization"
                            f"{self._ratings_note()}")
                    if monitor.end_epoch(epoch, loss, state):
                        break
                    lr *= self.learning_rate_decay
                if monitor.best_state is not None:
                    P, Q, Y, bu, bi = monitor.best_state
                _zero_unrated(P, Q, bu, bi, counts_u, counts_i)
                Y[counts_i == 0] = 0
                Peff = _k.fold_implicit(indptr, indices, P, Y)
        finally:
            monitor.close()
        self.n_epochs_ = epoch + 1
        self.best_epoch_ = monitor.best_epoch if monitor.best_state is not None else None
        self.implicit_factors_ = Y
        self.explicit_user_factors_ = P
        self._set_factor_state(Peff, Q, bu, bi, mu)
        return self

    def _fold_in_solve(self, indptr, items, values):
        """New users' vectors ``p_u + |N(u)|**-0.5 sum_j y_j``: the implicit term from the items
        they rated, then ``p_u`` by the ridge solve of the base class on what it leaves."""
        k = self.item_factors_.shape[1]
        Z = _k.fold_implicit(indptr, items, np.zeros((indptr.size - 1, k), np.float32),
                             self.implicit_factors_)
        rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
        rest = values - np.einsum("ij,ij->i", self.item_factors_[items], Z[rows])
        P, bu = super()._fold_in_solve(indptr, items, rest.astype(np.float32))
        return P + Z, bu

