"""Biased matrix factorization trained by stochastic gradient descent (Funk / Koren).

The model is ``r_hat(u, i) = mu + b_u + b_i + p_u . q_i``. Training runs lock-free in parallel by
stratified blocks (see :mod:`mfrec.kernels.sgd`); Python keeps the epoch loop, the learning-rate
schedule, progress, validation and early stopping.
"""
from __future__ import annotations

import numpy as np

from .._threads import run_blocks, standard_normal, thread_context
from .._validation import check_float, check_int, rng_from
from ..data import as_ratings
from .._lazy import lazy_module
from .als import threads_for
from .base import DivergenceError, FactorModel

_k = lazy_module("mfrec.kernels.sgd")  # Numba is imported by the first fit, not by load

__all__ = ["BiasedMF"]


# ---------------------------------------------------------------------- shared by SGD models
def heldout_arrays(validation, user_vocab, item_vocab):
    """Index arrays of held-out ratings in a fitted vocabulary; -1 marks unknown ids.

    Parameters
    ----------
    validation : Ratings or anything :func:`mfrec.as_ratings` accepts
    user_vocab, item_vocab : Vocabulary
        The training vocabularies.

    Returns
    -------
    users, items : ndarray of int64, shape (m,)
    ratings : ndarray of float32, shape (m,)
    """
    v = as_ratings(validation)
    if v.user_vocab is user_vocab:
        users = v.user_index.astype(np.int64)
    else:
        users = user_vocab.lookup(v.user_vocab.to_ids(v.user_index), unknown="mask")
    if v.item_vocab is item_vocab:
        items = v.csr.indices.astype(np.int64)
    else:
        items = item_vocab.lookup(v.item_vocab.to_ids(v.csr.indices), unknown="mask")
    return users, items, np.ascontiguousarray(v.values, dtype=np.float32)


class EpochMonitor:
    """Progress bar, validation RMSE and early stopping for an epoch loop.

    Parameters
    ----------
    model : FactorModel
        Receives ``loss_history_``, ``validation_history_``, ``best_epoch_`` and ``n_epochs_``.
    n_epochs : int
    heldout : tuple or None
        ``(users, items, ratings)`` from :func:`heldout_arrays`.
    patience : int or None
        Stop after this many epochs without a better validation RMSE.
    verbose : bool
    """

    def __init__(self, model, n_epochs, heldout, patience, verbose, rating_range):
        self.model = model
        self.heldout = heldout
        self.patience = patience
        self.lo, self.hi = rating_range
        self.best = np.inf
        self.best_epoch = None
        self.best_state = None
        model.loss_history_ = []
        model.validation_history_ = []
        self.bar = None
        if verbose:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=n_epochs, desc=type(model).__name__, unit="epoch")

    def rmse(self, P, Q, bu, bi, mu):
        u, i, r = self.heldout
        if r.size == 0:
            return float("nan")
        sse = _k.squared_errors(u, i, r, P, Q, bu, bi, np.float64(mu), self.lo, self.hi)
        return float(np.sqrt(sse / r.size))

    def end_epoch(self, epoch, loss, state_fn):
        """Record an epoch; returns True when training should stop.

        ``state_fn()`` returns ``(P, Q, bu, bi, mu, snapshot)``: the effective scoring state and
        a callable that copies whatever must be restored if this epoch turns out best.
        """
        m = self.model
        m.loss_history_.append(float(loss))
        postfix = {"loss": f"{loss:.4f}"}
        stop = False
        if self.heldout is not None:
            P, Q, bu, bi, mu, snapshot = state_fn()
            val = self.rmse(P, Q, bu, bi, mu)
            m.validation_history_.append(val)
            postfix["val_rmse"] = f"{val:.4f}"
            if val < self.best:
                self.best, self.best_epoch = val, epoch
                if self.patience is not None:
                    self.best_state = snapshot()
            elif self.patience is not None and epoch - self.best_epoch >= self.patience:
                stop = True
        if self.bar is not None:
            self.bar.set_postfix(postfix)
            self.bar.update(1)
        return stop

    def close(self):
        if self.bar is not None:
            self.bar.close()


def check_heldout(validation, ratings):
    if validation is None:
        return None
    return heldout_arrays(validation, ratings.user_vocab, ratings.item_vocab)


# ---------------------------------------------------------------------- the model
class BiasedMF(FactorModel):
    """Biased matrix factorization by parallel SGD (Funk's SVD with Koren's biases).

    Predicts ``mu + b_u + b_i + p_u . q_i`` and minimises, by stochastic gradient descent over the
    observed ratings, ``sum (r - r_hat)**2 + regularization (|p_u|**2 + |q_i|**2) +
    bias_regularization (b_u**2 + b_i**2)`` with the penalty applied at every rating (so it grows
    with a row's activity, as in Surprise and LIBMF).

    Training is lock-free parallel: users and items are randomly permuted into blocks, each
    thread owns a set of user blocks and visits them in strata that share no item with the other
    threads' current blocks (the FPSGD/DSGD scheme, without barriers between strata). With
    ``num_threads=1`` (and on data small enough to train on one thread) a fit is reproducible
    with ``random_state``; with more threads, rare races on item rows make fits differ slightly.

    Parameters
    ----------
    n_factors : int, default=100
        Length of the user and item factor vectors.
    n_epochs : int, default=50
        Passes over the training ratings (fewer with early stopping).
    learning_rate : float, default=0.015
        SGD step size of the first epoch.
    learning_rate_decay : float, default=0.96
        The step size is multiplied by this after every epoch (1.0 keeps it constant).
    regularization : float, default=0.05
        Weight decay of the factors, per rating.
    bias_regularization : float, default=0.02
        Weight decay of the biases, per rating.
    bias_learning_rate : float or None, default=None
        Step size of the biases; ``None`` uses ``learning_rate`` (and its decay).
    init_std : float, default=0.02
        Standard deviation of the normal initial factors (biases start at zero).
    early_stopping : int or None, default=5
        With a ``validation`` set, stop when its RMSE has not improved for this many epochs and
        keep the best epoch's model. ``None`` trains all epochs (and keeps the last).
    random_state : int, numpy Generator or None, default=None
        Seeds the initial factors and the block permutation.
    num_threads : int or None, default=0
        Threads for training; 0 (or ``None``) uses every core. Data sets under 200K ratings train
        on one thread (and under ``100K * n`` ratings on at most ``n``), where more threads would
        cost more than they save.
    verbose : bool, default=False
        Show a progress bar with the loss and validation RMSE per epoch.

    Attributes
    ----------
    user_factors_ : ndarray of float32, shape (n_users, n_factors)
    item_factors_ : ndarray of float32, shape (n_items, n_factors)
    user_bias_ : ndarray of float32, shape (n_users,)
    item_bias_ : ndarray of float32, shape (n_items,)
    global_mean_ : float
        Mean training rating.
    loss_history_ : list of float
        Per epoch: mean squared training error (measured during the pass) plus the penalty,
        divided by the number of ratings.
    validation_history_ : list of float
        Per epoch: RMSE on ``validation`` (empty without one).
    best_epoch_ : int or None
        Zero-based epoch whose model was kept when early stopping; ``None`` otherwise.
    n_epochs_ : int
        Epochs actually run.

    Notes
    -----
    Users or items with no training rating keep zero factors and biases, so they are scored by
    the baseline; ids never seen at all fall back as described in :meth:`predict`.

    The defaults were chosen on MovieLens 100K (u1..u5, ua/ub and a random split together) and
    a sparse synthetic 5M set, not per split; see ``benchmarks/results/sgd_accuracy.md``. Data
    much sparser or denser may prefer a longer or shorter schedule: pass ``validation`` and a
    larger ``n_epochs`` to let early stopping pick it.

    Memory: beside the :class:`~mfrec.Ratings` (8 bytes per rating: item index and value), the
    fit holds the ratings once more in block order (8 bytes per rating: item, value; the users
    as runs, 1 to 4 bytes per user and block, with ``max(8, 2 * threads)`` blocks) and the factors
    (4 bytes per factor and row, twice while they are put back in index order at the end,
    after the blocked copy is freed). At 100M ratings (1.82M users, 200k items, k=64, 2
    threads) the whole process peaked at 25.0 bytes per rating (28.6 with the earlier
    per-rating users; ``benchmarks/results/scale.md``).

    Examples
    --------
    >>> import numpy as np, mfrec
    >>> R = np.array([[5, 3, 0, 1], [4, 0, 0, 1], [1, 1, 0, 5], [0, 1, 5, 4]])
    >>> model = mfrec.BiasedMF(n_factors=2, random_state=0).fit(R)
    >>> model.predict([0], [2]).shape
    (1,)
    """

    # new users are folded in by SGD on their ratings with the items fixed, like training: the
    # exact ridge optimum ignores the implicit shrinkage of a few decaying SGD epochs
    _fold_in_method = "sgd"

    def __init__(self, *, n_factors=100, n_epochs=50, learning_rate=0.015,
                 learning_rate_decay=0.96, regularization=0.05, bias_regularization=0.02,
                 bias_learning_rate=None, init_std=0.02, early_stopping=5, random_state=None,
                 num_threads=0, verbose=False):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.regularization = regularization
        self.bias_regularization = bias_regularization
        self.bias_learning_rate = bias_learning_rate
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
        check_float("bias_regularization", self.bias_regularization, low=0)
        check_float("bias_learning_rate", self.bias_learning_rate, low=0, low_open=True,
                    allow_none=True)
        check_float("init_std", self.init_std, low=0)
        check_int("early_stopping", self.early_stopping, low=1, allow_none=True)
        self._check_run_params()

    def fit(self, data, *, validation=None):
        """Fit to observed ratings.

        Parameters
        ----------
        data : Ratings or anything :func:`mfrec.as_ratings` accepts
            Users are rows, items are columns.
        validation : Ratings or anything :func:`mfrec.as_ratings` accepts, optional
            Held-out ratings (raw ids as in ``data``) scored after every epoch; enables early
            stopping.

        Returns
        -------
        self
        """
        ratings = self._prepare(data)
        heldout = check_heldout(validation, ratings)
        rng = rng_from(self.random_state)
        self._set_data_state(ratings)
        n_threads = threads_for(self.num_threads, ratings.nnz)
        mu = mean_rating(ratings.values, n_threads)
        P, Q, bu, bi = _init_state(ratings.n_users, ratings.n_items, self.n_factors,
                                   self.init_std, rng, n_threads)
        reg_f, reg_b = self.regularization, self.bias_regularization
        lr_b = self.bias_learning_rate or self.learning_rate
        train_sgd(self, ratings, P, Q, bu, bi, mu, regs=(reg_f, reg_f, reg_b, reg_b),
                  learning_rates=(self.learning_rate, lr_b), decay=self.learning_rate_decay,
                  n_epochs=self.n_epochs, heldout=heldout, patience=self.early_stopping, rng=rng,
                  num_threads=self.num_threads, verbose=self.verbose)
        return self


def train_sgd(model, ratings, P, Q, bu, bi, mu, *, regs, learning_rates, decay, n_epochs, heldout,
              patience, rng, num_threads, verbose):
    """The SGD epoch loop shared by :class:`BiasedMF` and the SGD :class:`~mfrec.Baseline`.

    Trains from the starting values ``P, Q, bu, bi`` and sets the model's factor state,
    ``n_epochs_``, ``best_epoch_``, ``loss_history_`` and ``validation_history_``.

    Users and items are randomly permuted into blocks (:func:`mfrec.kernels.sgd.make_blocks`),
    and training keeps the factors in that permuted order, so that a block's users are one
    contiguous stretch of ``P`` (see :func:`mfrec.kernels.sgd.scatter_blocks`). The starting
    rows are taken in that order too: row ``t`` of ``P`` starts the user at position ``t``. For
    independent random starts (as :func:`_init_state` draws) or equal ones (the baseline's
    zeros) that is no restriction.

    Parameters
    ----------
    P, Q, bu, bi : ndarray of float32, shapes (n_users, k), (n_items, k), (n_users,), (n_items,)
        Starting values, by position (see above); trained in place.
    regs : (reg_p, reg_q, reg_bu, reg_bi)
    learning_rates : (factors, biases)
        First-epoch step sizes; both are multiplied by ``decay`` after every epoch.
    """
    f32 = np.float32
    reg_p, reg_q, reg_bu, reg_bi = (float(r) for r in regs)
    lr, lr_bias = (float(x) for x in learning_rates)
    nnz = ratings.nnz
    # below ~100K ratings per thread, starting the threads costs more than they save
    n_threads = threads_for(num_threads, nnz)
    n_blocks = max(8, 2 * n_threads)
    perm_u = _k.ordered_within_blocks(_permutation(rng, ratings.n_users), n_blocks)
    perm_i = _permutation(rng, ratings.n_items)
    # the user counts by position, for the loss's penalty terms (the items' below)
    counts_u = np.empty(ratings.n_users)
    counts_u[perm_u] = ratings.user_counts()
    if heldout is not None:
        hu, hi, hr = heldout
        heldout = (np.where(hu >= 0, perm_u[np.maximum(hu, 0)], -1),
                   np.where(hi >= 0, perm_i[np.maximum(hi, 0)], -1), hr)
    with thread_context(n_threads):
        csr = ratings.csr
        blocks = _k.scatter_blocks(csr.indptr, csr.indices, csr.data, perm_u, perm_i, n_blocks,
                                   n_threads, relabel=True)
        counts_i = _k.relabelled_item_counts(blocks[2], blocks[4], ratings.n_items, n_blocks,
                                             n_threads).astype(np.float64)
        block_err = np.zeros(n_blocks * n_blocks)
        # the rating range clips the held-out predictions only (a pass over the ratings)
        monitor = EpochMonitor(model, n_epochs, heldout,
                               patience if heldout is not None else None, verbose,
                               ratings.rating_range if heldout is not None else (None, None))

        def state():
            return P, Q, bu, bi, mu, lambda: (P.copy(), Q.copy(), bu.copy(), bi.copy())

        try:
            epoch = -1
            for epoch in range(n_epochs):
                _k.sgd_epoch(*blocks, n_threads, P, Q, bu, bi, f32(mu), f32(lr_bias), f32(lr),
                             f32(reg_bu), f32(reg_bi), f32(reg_p), f32(reg_q), block_err,
                             n_threads)
                penalty = (reg_p * _k.weighted_square_sum(P, counts_u, n_threads)
                           + reg_q * _k.weighted_square_sum(Q, counts_i, n_threads)
                           + reg_bu * counts_u @ np.square(bu.astype(np.float64))
                           + reg_bi * counts_i @ np.square(bi.astype(np.float64)))
                loss = (block_err.sum() + penalty) / nnz
                if not np.isfinite(loss):
                    raise DivergenceError(
                        f"{type(model).__name__} training diverged at epoch {epoch + 1} (loss "
                        f"{loss}); lower learning_rate (now {learning_rates[0]}) or raise "
                        f"regularization{model._ratings_note()}")
                if monitor.end_epoch(epoch, loss, state):
                    break
                lr *= decay
                lr_bias *= decay
        finally:
            monitor.close()
    del blocks  # before the factors are copied back to index order
    model.n_epochs_ = epoch + 1
    model.best_epoch_ = None
    if monitor.best_state is not None:
        P, Q, bu, bi = monitor.best_state
        model.best_epoch_ = monitor.best_epoch
    # (rows never trained are zeroed by _set_factor_state, from the model's user_items_)
    model._set_factor_state(_k.take_rows(P, perm_u, n_threads),
                            _k.take_rows(Q, perm_i, n_threads), bu[perm_u], bi[perm_i], mu,
                            item_counts=counts_i[perm_i])


def mean_rating(values, n_threads=1):
    """Mean of ``values`` in float64: ``values.mean(dtype=np.float64)`` up to ``_MEAN_CHUNK``
    values; beyond, chunks of that size summed on threads, then in order (the same for any
    thread count; at 100M ratings 0.04 s instead of 0.07 s on two threads)."""
    n = values.size
    if n <= _MEAN_CHUNK:
        return float(values.mean(dtype=np.float64))
    sums = np.zeros(-(-n // _MEAN_CHUNK))

    def add(c):  # NumPy's reduction runs without the GIL
        sums[c] = np.add.reduce(values[c * _MEAN_CHUNK:(c + 1) * _MEAN_CHUNK], dtype=np.float64)

    run_blocks(add, (), sums.size, n_threads)
    return float(sums.sum() / n)


_MEAN_CHUNK = 1 << 22


def _permutation(rng, n):
    """``rng.permutation(n)`` as int32, the same values: shuffling 4-byte entries instead of 8
    is a fifth faster at 1.8M users (the shuffle jumps across the array)."""
    perm = np.arange(n, dtype=np.int32)
    rng.shuffle(perm)
    return perm


def _sq_rows(F):
    """Squared norm of each row as float64, summed in float32: no float64 copy of ``F``."""
    return np.einsum("ij,ij->i", F, F).astype(np.float64)


def _init_state(n_users, n_items, k, std, rng, n_threads=1):
    P = standard_normal(rng, n_users, k, std, n_threads)
    Q = standard_normal(rng, n_items, k, std, n_threads)
    return P, Q, np.zeros(n_users, np.float32), np.zeros(n_items, np.float32)


def _zero_unrated(P, Q, bu, bi, counts_u, counts_i):
    """Rows never trained hold only their random start; zero them so the baseline scores them."""
    nu, ni = counts_u == 0, counts_i == 0
    P[nu] = 0
    Q[ni] = 0
    bu[nu] = 0
    bi[ni] = 0
