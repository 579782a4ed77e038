"""Bayesian Personalized Ranking (Rendle, Freudenthaler, Gantner and Schmidt-Thieme 2009).

BPR learns from which items each user interacted with, not how much: for a user ``u``, an item
``i`` they interacted with and an item ``j`` they did not, it maximises
``ln sigmoid(b_i - b_j + p_u . (q_i - q_j))`` minus L2 penalties, by stochastic gradient ascent
over sampled triples.
"""
from __future__ import annotations

import numpy as np

from .._threads import thread_context
from .._validation import check_bool, check_choice, check_float, rng_from, seed_from
from .._lazy import lazy_function, lazy_module
from .base import DivergenceError, FactorModel

_k = lazy_module("mfrec.kernels.bpr")  # Numba is imported by the first fit, not by load
tqdm = lazy_function("tqdm.auto", "tqdm")

__all__ = ["BPR"]

_SAMPLING = ("uniform", "popularity")


class BPR(FactorModel):
    """Bayesian Personalized Ranking matrix factorization with item biases.

    Parameters
    ----------
    n_factors : int, default=64
    n_epochs : int, default=100
        Passes; each takes as many SGD steps as there are training interactions.
    learning_rate : float, default=0.02
    regularization : float, default=0.01
        L2 weight on the user and item vectors, per step.
    bias_regularization : float, default=0.01
        L2 weight on the item biases, per step.
    negative_sampling : {"uniform", "popularity"}, default="uniform"
        Draw negative items uniformly from the catalogue, or in proportion to their number of
        interactions (harder negatives; better for catalogues with a long tail of unpopular
        items that are easy to rank low).
    verify_negatives : bool, default=True
        Redraw a negative that the user actually interacted with (up to 32 times, then skip the
        step); without it such pairs are trained as negatives.
    init_scale : float, default=0.1
        Standard deviation of the initial factors is ``init_scale / sqrt(n_factors)``.
    random_state : int, Generator or None, default=None
        With ``num_threads=1`` a fixed seed reproduces the model exactly. With more threads the
        lock-free updates interleave differently from run to run.
    num_threads : int, default=0
        Threads (0: all cores).
    verbose : bool, default=False
        Progress bar over epochs.

    Attributes
    ----------
    user_factors_ : float32 ndarray of shape (n_users, n_factors)
    item_factors_ : float32 ndarray of shape (n_items, n_factors)
    item_bias_ : float32 ndarray of shape (n_items,)
    user_bias_ : zeros; global_mean_ : 0.0
        Scores ``b_i + p_u . q_i`` are ranking scores, not ratings.
    loss_history_ : list of float
        Mean ``-ln sigmoid(x_uij)`` over each epoch's steps.
    skipped_ : int
        Steps of the last epoch dropped for want of an unseen negative.

    Notes
    -----
    Any stored interaction with a positive value is a positive; values are otherwise ignored.
    :meth:`fold_in` runs the same SGD on a new user's vector with the items held fixed.

    Memory: beside the :class:`~mfrec.Ratings` (8 bytes per rating), the fit holds each
    interaction's user (4 bytes per rating, for sampling) and float32 factors. Measured at 100M
    interactions (k=64), the whole process peaked at 21 bytes per rating
    (``benchmarks/results/scale.md``).

    Examples
    --------
    >>> import numpy as np, mfrec
    >>> X = np.kron(np.eye(2), np.ones((4, 4)))        # two blocks of 4 users x 4 items
    >>> X[0, 0] = 0                                     # user 0 has not seen item 0 yet
    >>> model = mfrec.BPR(n_factors=4, n_epochs=200, random_state=0, num_threads=1).fit(X)
    >>> ids, scores = model.recommend(0, n=1)
    >>> int(ids[0, 0])
    0
    """

    _clip_predictions = False
    _divergence_params = (("learning_rate", "lower"), ("init_scale", "lower"),
                          ("regularization", "lower"), ("bias_regularization", "lower"))

    def __init__(self, *, n_factors=64, n_epochs=100, learning_rate=0.02, regularization=0.01,
                 bias_regularization=0.01, negative_sampling="uniform", verify_negatives=True,
                 init_scale=0.1, random_state=None, num_threads=0, verbose=False):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.bias_regularization = bias_regularization
        self.negative_sampling = negative_sampling
        self.verify_negatives = verify_negatives
        self.init_scale = init_scale
        self.random_state = random_state
        self.num_threads = num_threads
        self.verbose = verbose

    def _validate_params(self):
        self._check_size_params()
        check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_float("regularization", self.regularization, low=0.0)
        check_float("bias_regularization", self.bias_regularization, low=0.0)
        check_choice("negative_sampling", self.negative_sampling, _SAMPLING)
        check_bool("verify_negatives", self.verify_negatives)
        check_float("init_scale", self.init_scale, low=0.0)
        check_bool("verbose", self.verbose)

    def fit(self, data):
        """Learn user and item factors from interactions.

        Parameters
        ----------
        data : Ratings or anything :func:`mfrec.as_ratings` accepts
            Users x items; every stored entry with a positive value is an interaction.

        Returns
        -------
        self
        """
        ratings = self._prepare(data)
        csr = ratings.csr
        if csr.data.size and csr.data.min() < 0:
            raise ValueError(f"BPR needs non-negative interaction values, got "
                             f"{int((csr.data < 0).sum())} negative value(s), e.g. "
                             f"{csr.data[csr.data < 0][:5].tolist()}")
        pos = csr
        if (csr.data == 0).any():  # a stored 0 is not an interaction (copy only when needed)
            pos = csr.copy()
            pos.eliminate_zeros()
        if pos.nnz == 0:
            raise ValueError("BPR needs at least one interaction with a positive value")
        n_users, n_items = pos.shape
        if n_items < 2:
            raise ValueError(f"BPR needs at least 2 items to rank, got {n_items}")
        self._set_data_state(ratings)
        k = self.n_factors
        rng = rng_from(self.random_state)
        scale = float(self.init_scale) / np.sqrt(k)
        P = rng.standard_normal((n_users, k), dtype=np.float32)  # float32 draws: no 8-byte copy
        P *= np.float32(scale)
        Q = rng.standard_normal((n_items, k), dtype=np.float32)
        Q *= np.float32(scale)
        bias = np.zeros(n_items, np.float32)
        indptr = pos.indptr.astype(np.int64)
        indices = pos.indices
        entry_users = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(indptr))
        popularity = self.negative_sampling == "popularity"
        self.loss_history_ = []
        with thread_context(self.num_threads) as threads:
            states = _k.split_seed(seed_from(rng), threads)
            bar = tqdm(range(self.n_epochs), disable=not self.verbose, desc="BPR", unit="epoch")
            for _ in bar:
                loss, skipped = _k.epoch(entry_users, indptr, indices, P, Q, bias,
                                         float(self.learning_rate), float(self.regularization),
                                         float(self.bias_regularization), pos.nnz, popularity,
                                         bool(self.verify_negatives), states, threads)
                self.loss_history_.append(float(loss))
                if not np.isfinite(loss) or loss > _DIVERGED_LOSS:
                    raise DivergenceError(
                        f"BPR training diverged at epoch {len(self.loss_history_)} (mean loss "
                        f"{loss:.4g}, where a random start gives ln 2 = 0.69); "
                        f"{self._divergence_hint()}")
                if self.verbose:
                    bar.set_postfix(loss=f"{loss:.4f}")
        self.skipped_ = int(skipped)
        self._set_factor_state(P, Q, item_bias=bias)
        return self

    def _fold_in_solve(self, indptr, items, values):
        """BPR SGD on each new user's vector, items and biases fixed (positives: values > 0)."""
        values = np.asarray(values)
        if values.size and values.min() < 0:
            raise ValueError(f"fold-in interaction values must be >= 0, got {values.min()}")
        keep = values > 0
        m = indptr.size - 1
        if not keep.all():  # a stored 0 is not an interaction
            row = np.repeat(np.arange(m), np.diff(indptr))
            counts = np.bincount(row[keep], minlength=m)
            indptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
            items = items[keep]
        rng = rng_from(self.random_state)
        states = _k.split_seed(seed_from(rng), max(m, 1))[:m]
        with thread_context(self.num_threads) as threads:
            P = _k.fold_in(indptr, items.astype(np.int32), self.item_factors_, self.item_bias_,
                           self.user_items_.indices, float(self.learning_rate),
                           float(self.regularization), int(self.n_epochs), _FOLD_IN_MIN_STEPS,
                           self.negative_sampling == "popularity", bool(self.verify_negatives),
                           states, threads)
        return P, np.zeros(m, np.float32)


# A user with few items still gets enough steps for its vector to settle.
_FOLD_IN_MIN_STEPS = 50
# A mean -ln sigmoid(x_uij) above this puts positives about 20 logits below negatives on
# average: a random start gives ln 2 = 0.69 and no converging fit climbs this far (a step too
# large for the data overshoots by more every epoch: 0.34, 2.0, 24212, 3e8, 4e12 at 0.5 on
# MovieLens 100K).
_DIVERGED_LOSS = 20.0
