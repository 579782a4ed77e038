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

from .._threads import thread_context
from .._validation import (check_bool, check_choice, check_float, check_int, rng_from)
from .._lazy import lazy_function, lazy_module
from ..data import as_ratings
from .base import FactorModel

_k = lazy_module("mfrec.kernels.implicit_als")  # Numba: imported by the first fit
tqdm = lazy_function("tqdm.auto", "tqdm")

__all__ = ["ImplicitALS"]

_SOLVERS = ("cg", "cholesky")


class ImplicitALS(FactorModel):
    """Alternating least squares for implicit feedback (clicks, plays, purchases).

    Parameters
    ----------
    n_factors : int, default=128
        Dimension of the user and item vectors. 128 won on the panel of
        ``benchmarks/results/defaults.md`` (Gowalla validation recall@20 +12% over 64, the
        other sets within 1-2%); fitting time grows about linearly with it (ML-100K: ~1 s).
    n_epochs : int, default=15
        Alternations (users then items).
    regularization : float or "auto", default="auto"
        L2 weight ``lambda``. Each row (user or item) is regularized by
        ``lambda * (n_row + n_other / (1 + alpha)) ** nu`` with ``nu = reg_exponent``: the
        frequency-scaled regularization of Rendle et al. (2021, "Revisiting the Performance of
        iALS"), whose unobserved weight ``alpha_0`` is here the confidence ratio
        ``1 / (1 + alpha)``. It grows with the size of each row's least-squares problem, so one
        ``lambda`` suits rows and data sets of different sizes. With ``nu = 0`` it is the plain
        constant ``lambda`` of Hu et al. (then values around 0.01-10 are usual).
        ``"auto"`` takes ``lambda = 0.01 * (1 + alpha * m)``, ``m`` the mean stored interaction
        strength: the loss weighs an observation by its confidence ``1 + alpha * r``, so a
        regularization that means the same on every data set is measured in units of a mean
        observation's confidence (divided by it, the loss is Rendle et al.'s, with observed
        weight 1 and ``lambda = 0.01``). The value used is ``regularization_``.
    alpha : float or "auto", default="auto"
        Confidence slope: an interaction of strength ``r`` weighs ``1 + alpha * r``.
        ``"auto"`` takes ``alpha = (1 / w0 - 1) / m`` with ``w0 = min(30 * density, 0.5)``:
        each unobserved cell then weighs ``w0`` of a mean observation, so the unobserved cells
        of an average row weigh together about 30 times its observations, whatever the size
        of the catalogue (on data denser than 1.7% each weighs half an observation). With both
        on "auto" an average row's regularization is ``0.01 * (1 + 30) ~ 0.3`` of its data
        weight on every data set. A fixed ``alpha`` lets the unobserved mass grow with the
        catalogue: on Gowalla (41k items, 27 check-ins per user) ``alpha=0.5`` weighs it 1000
        times the observations and, through the regularization above, crushes every vector to
        about 1e-14 (worse than popularity). Dividing by ``m`` makes ``alpha`` follow the unit
        of the strengths (counts, plays, ratings). The value used is ``alpha_``.
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
    alpha_, regularization_ : float
        The ``alpha`` and ``lambda`` used (``"auto"`` resolved for the training data).
    loss_history_ : list of float
        Weighted mean squared error over all pairs plus the L2 terms, divided by the total
        confidence, per epoch (empty unless ``compute_loss``).

    Notes
    -----
    Interaction strengths must be non-negative; a stored 0 counts as not interacted. Give counts
    or ratings as they are: the confidence uses their size, the preference only their sign.

    Memory: beside the :class:`~mfrec.Ratings` (8 bytes per rating), the fit holds the items'
    interactions (the transpose: 8 bytes per rating, freed after the fit) and float32 factors.
    Measured at 100M interactions (k=64), the whole process peaked at 25 bytes per rating,
    implicit's ``AlternatingLeastSquares`` at 53-57 on the same data
    (``benchmarks/results/scale.md``).

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
    _divergence_params = (("regularization", "lower"), ("alpha", "lower"),
                          ("init_scale", "lower"))

    def __init__(self, *, n_factors=128, n_epochs=15, regularization="auto", alpha="auto",
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
        if not _is_auto(self.regularization):
            check_float("regularization", self.regularization, low=0.0)
        if not _is_auto(self.alpha):
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
        self.alpha_, self.regularization_ = self._scaled_defaults(Cu)
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
        alpha = np.float32(self.alpha_)
        self.loss_history_ = []
        with thread_context(self.num_threads) as threads:
            u_blocks = _k.balanced_blocks(u_ptr, 8 * threads, k)
            i_blocks = _k.balanced_blocks(i_ptr, 8 * threads, k)
            for _ in tqdm(range(self.n_epochs), disable=not self.verbose, desc="ImplicitALS",
                          unit="epoch"):
                self._half_step(u_ptr, u_idx, u_val, X, Y, reg_u, u_blocks, alpha, threads)
                self._half_step(i_ptr, i_idx, i_val, Y, X, reg_i, i_blocks, alpha, threads)
                # stop at the first sweep that overflowed (a pass over the factors: cheap next
                # to the sweep) instead of running the rest on NaN
                self._check_finite_fit(user_factors=X, item_factors=Y)
                if self.compute_loss:
                    YtY = _gram(Y)
                    total = _k.loss(u_ptr, u_idx, u_val, X, Y, YtY, alpha, reg_u, threads)
                    total += float(np.sum(reg_i * np.sum(Y.astype(np.float64) ** 2, axis=1)))
                    weight = (n_users * n_items
                              + self.alpha_ * float(u_val.sum(dtype=np.float64)))
                    self.loss_history_.append(total / weight)
        self._set_factor_state(X, Y)
        return self

    def _row_regularization(self, indptr, n_other):
        counts = np.diff(indptr).astype(np.float64)
        alpha, lam = self._resolved()
        if self.reg_exponent == 0:
            return np.full(counts.size, lam, dtype=np.float32)
        scaled = lam * (counts + n_other / (1.0 + alpha)) ** float(self.reg_exponent)
        return scaled.astype(np.float32)

    def _scaled_defaults(self, Cu):
        """``alpha`` and ``regularization`` for this data, resolving ``"auto"`` (see the class
        docstring): unobserved cells weigh ``w0 = min(_AUTO_W0 * density, _AUTO_W0_MAX)`` of a
        mean observation, and ``regularization = _AUTO_LAMBDA * (1 + alpha * mean)``."""
        n_users, n_items = Cu.shape
        mean = float(Cu.data.mean(dtype=np.float64)) if Cu.nnz else 1.0
        mean = mean if mean > 0 else 1.0
        if _is_auto(self.alpha):
            density = Cu.nnz / max(1.0, float(n_users) * float(n_items))
            w0 = min(max(_AUTO_W0 * density, 1e-6), _AUTO_W0_MAX)
            alpha = (1.0 / w0 - 1.0) / mean
        else:
            alpha = float(self.alpha)
        lam = (_AUTO_LAMBDA * (1.0 + alpha * mean) if _is_auto(self.regularization)
               else float(self.regularization))
        return alpha, lam

    @classmethod
    def _carry_params(cls, params, part, full):
        """``params`` found on ratings ``part`` moved to ratings ``full`` (a superset): numeric
        ``alpha`` and ``regularization`` are scaled by the ratio of their ``"auto"`` values on
        the two, i.e. kept in the units in which the defaults scale (a mean observation's
        confidence, and the unobserved weight against a row's observations). Used by
        :func:`mfrec.evaluation.tuning.auto_tune` for its refit."""
        out = dict(params)
        alpha, reg = params.get("alpha", "auto"), params.get("regularization", "auto")
        auto = cls(alpha="auto", regularization="auto")
        a_part, l_part = auto._scaled_defaults(as_ratings(part).csr)
        a_full, l_full = auto._scaled_defaults(as_ratings(full).csr)
        if not _is_auto(alpha):
            out["alpha"] = float(alpha) * a_full / a_part
        if not _is_auto(reg):
            # in units of a mean observation's confidence, 1 + alpha * m, before and after
            m_part = (l_part / _AUTO_LAMBDA - 1.0) / a_part
            m_full = (l_full / _AUTO_LAMBDA - 1.0) / a_full
            a_before = a_part if _is_auto(alpha) else float(alpha)
            a_after = a_full if _is_auto(alpha) else out["alpha"]
            out["regularization"] = (float(reg) * (1.0 + a_after * m_full)
                                     / (1.0 + a_before * m_part))
        return out

    def _resolved(self):
        """(alpha, regularization) as fitted; the hyperparameters for a model saved before
        ``alpha_`` existed."""
        return (float(getattr(self, "alpha_", self.alpha)),
                float(getattr(self, "regularization_", self.regularization)))

    def _half_step(self, indptr, indices, values, X, Y, reg_rows, blocks, alpha, n_threads):
        YtY = _gram(Y)
        if self.solver == "cg":
            _k.cg_solve(indptr, indices, values, X, Y, YtY, alpha, reg_rows, self.cg_steps,
                        blocks, _GATHER_CAP, n_threads)
        else:
            _k.cholesky_solve(indptr, indices, values, X, Y, YtY, alpha, reg_rows, blocks,
                              n_threads)

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
            alpha = np.float32(self._resolved()[0])
            _k.cholesky_solve(indptr, items, values, X, Y, _gram(Y), alpha, reg, blocks, threads)
        return X, np.zeros(m, np.float32)


# Rows with more interactions than this read the other side's factors in place instead of from a
# gathered copy: it bounds the per-thread buffer (4096 x 64 float32 = 1 MiB), and such rows are
# dominated by the streaming reads anyway.
_GATHER_CAP = 4096

# The "auto" scaling (chosen on the panel of benchmarks/results/defaults.md, validation splits
# only): the unobserved cells together weigh about _AUTO_W0 times the observed ones (at most
# _AUTO_W0_MAX of a mean observation each), and the regularization is _AUTO_LAMBDA in units of
# a mean observation's confidence.
_AUTO_W0 = 30.0
_AUTO_W0_MAX = 0.5
_AUTO_LAMBDA = 0.01


def _is_auto(value):
    return isinstance(value, str) and value == "auto"


def _gram(Y):
    """``Y^T Y`` in float64 accumulation, returned as float32 of shape (k, k)."""
    G = np.zeros((Y.shape[1], Y.shape[1]))
    for s in range(0, Y.shape[0], 16384):  # float32 products, float64 sums, small temporaries
        blk = Y[s:s + 16384]
        G += blk.T @ blk
    return G.astype(np.float32)
