"""Implicit-feedback ALS: weighted matrix factorization of Hu, Koren and Volinsky (2008).

Every (user, item) pair is a training example: the preference ``p = 1`` where the user
interacted with the item (``r > 0``) and 0 elsewhere, weighted by the confidence
``c = 1 + alpha * r``. The loss

    sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + sum_u reg_u |x_u|^2 + sum_i reg_i |y_i|^2

is minimised by alternating exact (or conjugate-gradient) least-squares solves of all users, then
all items; the unobserved pairs cost nothing extra because ``Y^T Y`` is shared.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .._threads import thread_context
from .._validation import (check_bool, check_choice, check_float, check_int, rng_from)
from ..kernels import implicit_als as _k
from .base import FactorModel

__all__ = ["ImplicitALS"]

_SOLVERS = ("cg", "cholesky")


class ImplicitALS(FactorModel):
    """Alternating least squares for implicit feedback (clicks, plays, purchases).

    Parameters
    ----------
    n_factors : int, default=64
        Dimension of the user and item vectors.
    n_epochs : int, default=15
        Alternations (users then items).
    regularization : float, default=0.025
        L2 weight ``lambda``. Each row (user or item) is regularized by
        ``lambda * (n_row + n_other / (1 + alpha)) ** nu`` with ``nu = reg_exponent``: the
        frequency-scaled regularization of Rendle et al. (2021, "Revisiting the Performance of
        iALS"), whose unobserved weight ``alpha_0`` is here the confidence ratio
        ``1 / (1 + alpha)``. It grows with the size of each row's least-squares problem, so one
        ``lambda`` suits data sets of different sizes. With ``nu = 0`` it is the plain constant
        ``lambda`` of Hu et al. (then values around 0.01-10 are usual).
    alpha : float, default=0.5
        Confidence slope: an interaction of strength ``r`` weighs ``1 + alpha * r``.
    reg_exponent : float, default=1.0
        ``nu`` above, in [0, 2].
    solver : {"cg", "cholesky"}, default="cg"
        Conjugate gradient warm-started from the previous vector (fast), or an exact Cholesky
        solve of each k x k system (slow, ``O(nnz k^2)``, for checking).
    cg_steps : int, default=3
        CG steps per row and half-iteration; 2-4 are usual, warm starts make few enough.
    init_scale : float, default=0.01
        Standard deviation of the random initial factors.
    compute_loss : bool, default=False
        Record the training loss per epoch in ``loss_history_`` (costs about one CG step).
    random_state : int, Generator or None, default=None
    num_threads : int, default=0
        Threads for the solves and for recommending; 0 means all cores.
    verbose : bool, default=False
        Progress bar over epochs.

    Attributes
    ----------
    user_factors_ : float32 ndarray of shape (n_users, n_factors)
    item_factors_ : float32 ndarray of shape (n_items, n_factors)
    user_bias_, item_bias_ : zeros; global_mean_ : 0.0
        Scores are pure dot products ``x_u . y_i``, estimating the preference (0..1).
    loss_history_ : list of float
        Weighted mean squared error over all pairs plus the L2 terms, divided by the total
        confidence, per epoch (empty unless ``compute_loss``).

    Notes
    -----
    Interaction strengths must be non-negative; a stored 0 counts as not interacted. Give counts
    or ratings as they are: the confidence uses their size, the preference only their sign.

    Examples
    --------
    >>> import numpy as np, mfrec
    >>> X = np.kron(np.eye(2), np.ones((3, 3)))        # two blocks of 3 users x 3 items
    >>> X[0, 0] = 0                                     # user 0 has not seen item 0 yet
    >>> model = mfrec.ImplicitALS(n_factors=2, random_state=0).fit(X)
    >>> ids, scores = model.recommend(0, n=1)
    >>> int(ids[0, 0])
    0
    """

    _clip_predictions = False

    def __init__(self, *, n_factors=64, n_epochs=15, regularization=0.025, alpha=0.5,
                 reg_exponent=1.0, solver="cg", cg_steps=3, init_scale=0.01, compute_loss=False,
                 random_state=None, num_threads=0, verbose=False):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.regularization = regularization
        self.alpha = alpha
        self.reg_exponent = reg_exponent
        self.solver = solver
        self.cg_steps = cg_steps
        self.init_scale = init_scale
        self.compute_loss = compute_loss
        self.random_state = random_state
        self.num_threads = num_threads
        self.verbose = verbose

    def _validate_params(self):
        self._check_size_params()
        check_float("regularization", self.regularization, low=0.0)
        check_float("alpha", self.alpha, low=0.0)
        check_float("reg_exponent", self.reg_exponent, low=0.0, high=2.0)
        check_choice("solver", self.solver, _SOLVERS)
        check_int("cg_steps", self.cg_steps, low=1)
        check_float("init_scale", self.init_scale, low=0.0, low_open=True)
        check_bool("compute_loss", self.compute_loss)
        check_bool("verbose", self.verbose)
        if self.regularization == 0 and self.solver == "cholesky":
            # an item nobody interacted with has a singular system without regularization
            raise ValueError("regularization must be > 0 with solver='cholesky', got 0")

    def fit(self, data):
        """Learn user and item factors from interactions.

        Parameters
        ----------
        data : Ratings or anything :func:`mfrec.as_ratings` accepts
            Users x items interaction strengths (counts, ratings, 1 for "interacted"), >= 0.

        Returns
        -------
        self
        """
        ratings = self._prepare(data)
        Cu = ratings.csr
        if Cu.data.size and Cu.data.min() < 0:
            bad = Cu.data[Cu.data < 0][:5].tolist()
            raise ValueError(f"ImplicitALS needs non-negative interaction strengths, got "
                             f"{int((Cu.data < 0).sum())} negative value(s), e.g. {bad}")
        self._set_data_state(ratings)
        u_ptr, u_idx = Cu.indptr.astype(np.int64), Cu.indices
        u_val = Cu.data.astype(np.float32, copy=False)
        # the items' interactions: the transpose, built lean and dropped after fitting
        i_ptr, i_idx, i_val = _k.transpose(u_ptr, u_idx, u_val, Cu.shape[1])
        n_users, n_items = Cu.shape
        k = self.n_factors
        rng = rng_from(self.random_state)
        X = rng.standard_normal((n_users, k), dtype=np.float32)  # float32 draws: no 8-byte copy
        X *= np.float32(self.init_scale)
        Y = rng.standard_normal((n_items, k), dtype=np.float32)
        Y *= np.float32(self.init_scale)
        reg_u = self._row_regularization(u_ptr, n_items)
        reg_i = self._row_regularization(i_ptr, n_users)
        alpha = np.float32(self.alpha)
        self.loss_history_ = []
        with thread_context(self.num_threads) as threads:
            u_blocks = _k.balanced_blocks(u_ptr, 8 * threads, k)
            i_blocks = _k.balanced_blocks(i_ptr, 8 * threads, k)
            for _ in tqdm(range(self.n_epochs), disable=not self.verbose, desc="ImplicitALS",
                          unit="epoch"):
                self._half_step(u_ptr, u_idx, u_val, X, Y, reg_u, u_blocks, alpha)
                self._half_step(i_ptr, i_idx, i_val, Y, X, reg_i, i_blocks, alpha)
                if self.compute_loss:
                    YtY = _gram(Y)
                    total = _k.loss(u_ptr, u_idx, u_val, X, Y, YtY, alpha, reg_u)
                    total += float(np.sum(reg_i * np.sum(Y.astype(np.float64) ** 2, axis=1)))
                    weight = (n_users * n_items
                              + float(self.alpha) * float(u_val.sum(dtype=np.float64)))
                    self.loss_history_.append(total / weight)
        self._set_factor_state(X, Y)
        return self

    def _row_regularization(self, indptr, n_other):
        counts = np.diff(indptr).astype(np.float64)
        lam = float(self.regularization)
        if self.reg_exponent == 0:
            return np.full(counts.size, lam, dtype=np.float32)
        scaled = lam * (counts + n_other / (1.0 + float(self.alpha))) ** float(self.reg_exponent)
        return scaled.astype(np.float32)

    def _half_step(self, indptr, indices, values, X, Y, reg_rows, blocks, alpha):
        YtY = _gram(Y)
        if self.solver == "cg":
            _k.cg_solve(indptr, indices, values, X, Y, YtY, alpha, reg_rows, self.cg_steps,
                        blocks, _GATHER_CAP)
        else:
            _k.cholesky_solve(indptr, indices, values, X, Y, YtY, alpha, reg_rows, blocks)

    # ------------------------------------------------------------------ fold-in
    def _fold_in_solve(self, indptr, items, values):
        """Exact confidence-weighted solve of each new user against the item factors."""
        values = np.asarray(values, dtype=np.float32)
        if values.size and values.min() < 0:
            raise ValueError(f"fold-in interaction strengths must be >= 0, got {values.min()}")
        Y = self.item_factors_
        m, k = indptr.size - 1, Y.shape[1]
        X = np.zeros((m, k), np.float32)
        reg = self._row_regularization(indptr, Y.shape[0])
        with thread_context(self.num_threads) as threads:
            blocks = _k.balanced_blocks(indptr, 8 * threads, k)
            _k.cholesky_solve(indptr, items, values, X, Y, _gram(Y), np.float32(self.alpha),
                              reg, blocks)
        return X, np.zeros(m, np.float32)


# Rows with more interactions than this read the other side's factors in place instead of from a
# gathered copy: it bounds the per-thread buffer (4096 x 64 float32 = 1 MiB), and such rows are
# dominated by the streaming reads anyway.
_GATHER_CAP = 4096


def _gram(Y):
    """``Y^T Y`` in float64 accumulation, returned as float32 of shape (k, k)."""
    G = np.zeros((Y.shape[1], Y.shape[1]))
    for s in range(0, Y.shape[0], 16384):  # float32 products, float64 sums, small temporaries
        blk = Y[s:s + 16384]
        G += blk.T @ blk
    return G.astype(np.float32)
