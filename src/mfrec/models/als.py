"""Explicit alternating least squares with weighted-lambda regularisation (ALS-WR) and biases.

The model is ``r_hat(u, i) = mu + b_u + b_i + p_u . q_i``, fitted by minimising::

    sum_(u,i) (r_ui - r_hat(u, i))^2 + regularization * (sum_u n_u (|p_u|^2 + b_u^2)
                                                       + sum_i n_i (|q_i|^2 + b_i^2))

(Zhou et al. 2008, with biases). Each half-sweep fixes one side and solves every row of the other
exactly (Cholesky) or approximately (a few warm-started conjugate-gradient steps); factor and bias
of a row are solved jointly. The kernels live in :mod:`mfrec.kernels.als`; Python keeps the sweep
loop, progress and validation.
"""
from __future__ import annotations

import numpy as np

from .._threads import resolve_threads, thread_context
from .._validation import check_bool, check_choice, check_float, check_int, rng_from
from .._lazy import lazy_module
from .base import DivergenceError, FactorModel

_k = lazy_module("mfrec.kernels.als")  # Numba is imported by the first fit, not by load

__all__ = ["ALS"]

SOLVERS = ("cg", "cholesky")
#: fewer ratings than this per thread and the parallel sections are too short to pay for the
#: threads' synchronisation (on a busy machine one late thread stalls every section)
RATINGS_PER_THREAD = 100_000


def threads_for(num_threads, nnz):
    """Threads for a fit on ``nnz`` ratings: ``num_threads`` resolved, fewer on small data."""
    return max(1, min(resolve_threads(num_threads), nnz // RATINGS_PER_THREAD))


def check_als_run_params(model):
    """Check ``verbose`` (bool), ``num_threads`` (as :func:`resolve_threads` takes it) and
    ``random_state``, in that order, for ``_validate_params`` of :class:`ALS` and
    :class:`~mfrec.BayesianMF`."""
    check_bool("verbose", model.verbose)
    resolve_threads(model.num_threads)
    rng_from(model.random_state)


def start_sweeps(ratings, k, init_std, rng):
    """What the ALS-style fits (:class:`ALS`, the first sweeps of :class:`~mfrec.BayesianMF`)
    start from.

    Returns ``mu`` (the mean rating), the CSR arrays of the users and of the items (``indptr`` as
    int64), each side's rows by decreasing count (:func:`~mfrec.kernels.als.balanced_order`),
    random normal float32 factors ``P, Q`` of standard deviation ``init_std`` (drawn in that
    order from ``rng``), zero float32 biases ``bu, bi`` and ``scale``.

    ``scale`` is 1 for ratings of ordinary spread (standard deviation between 1/8 and 8); for
    others it is the power of two nearest their standard deviation, and ``mu`` and the ratings in
    the arrays are divided by it: the fit then runs on ratings of unit spread, where float32
    neither overflows (ratings x 1000 overflowed the Gibbs sampler's float32 systems) nor
    underflows. Dividing by a power of two is exact. The caller scales the fitted state back:
    factors by ``sqrt(scale)``, biases and the mean by ``scale``.
    """
    csr, csc = ratings.csr, ratings.csc
    n_users, n_items = ratings.shape
    mu = float(np.mean(csr.data, dtype=np.float64))
    u_data, i_data = csr.data, csc.data
    scale = rating_scale(csr.data)
    if scale != 1.0:
        u_data = u_data / np.float32(scale)
        i_data = i_data / np.float32(scale)
        mu /= scale
    u_arrays = (csr.indptr.astype(np.int64), csr.indices, u_data)
    i_arrays = (csc.indptr.astype(np.int64), csc.indices, i_data)
    order_u = _k.balanced_order(np.diff(csr.indptr))
    order_i = _k.balanced_order(np.diff(csc.indptr))
    std = float(init_std)
    P = rng.standard_normal((n_users, k), dtype=np.float32)
    P *= np.float32(std)  # in place: `* std` would hold a second copy of the factors
    Q = rng.standard_normal((n_items, k), dtype=np.float32)
    Q *= np.float32(std)
    bu = np.zeros(n_users, dtype=np.float32)
    bi = np.zeros(n_items, dtype=np.float32)
    return mu, u_arrays, i_arrays, order_u, order_i, P, Q, bu, bi, scale


def rating_scale(values):
    """1.0, or the power of two nearest the standard deviation of ``values`` when that is
    outside [1/8, 8] (see :func:`start_sweeps`)."""
    sd = _std(values) if values.size else 0.0
    if not np.isfinite(sd) or sd == 0.0 or 0.125 <= sd <= 8.0:
        return 1.0
    return float(2.0 ** np.round(np.log2(sd)))


def _std(values, chunk=1 << 22):
    """Standard deviation of a float32 array in float64, two passes over chunks: ``np.std``
    with ``dtype=float64`` makes a float64 copy of all of ``values`` (8 bytes per rating)."""
    n = values.size
    mean = sum(float(np.sum(values[s:s + chunk], dtype=np.float64))
               for s in range(0, n, chunk)) / n
    ss = 0.0
    for s in range(0, n, chunk):
        d = values[s:s + chunk].astype(np.float64)
        d -= mean
        ss += float(d @ d)
    return float(np.sqrt(ss / n))


class ALS(FactorModel):
    """Explicit-feedback ALS-WR with user and item biases.

    Parameters
    ----------
    n_factors : int, default=32
        Rank of the factors.
    n_epochs : int, default=15
        Sweeps; each solves all users, then all items.
    regularization : float, default=0.1
        lambda of the weighted-lambda penalty: a row with ``n`` ratings is penalised by
        ``regularization * n`` on its factor and bias. Because the penalty grows with the data,
        one value suits data sets of very different density.
    biases : bool, default=True
        Learn user and item biases jointly with the factors. With False the model is
        ``mu + p_u . q_i`` (ratings are still centred on their mean).
    solver : {"cg", "cholesky"}, default="cg"
        ``"cg"`` takes ``cg_steps`` conjugate-gradient steps per row from the previous sweep's
        solution: O(n_u * k) per row instead of O(n_u * k^2 + k^3), about twice as fast per sweep
        at k=64, and as accurate after the usual number of sweeps (same test RMSE to 1e-4 on
        MovieLens 100K u1..u5 and on a 5M synthetic set). ``"cholesky"`` solves each row's
        normal equations exactly (rows with fewer ratings than unknowns through the smaller dual
        system), so every sweep lowers the objective.
    cg_steps : int, default=3
        Steps per row and half-sweep when ``solver="cg"``.
    init_std : float, default=0.1
        Standard deviation (> 0) of the random normal initial factors (biases start at zero).
    random_state : int, numpy Generator or None, default=None
        Seed of the initial factors. The result does not depend on ``num_threads``.
    num_threads : int, default=0
        Threads of the kernels; 0 means every core. Small data sets use fewer (one thread per
        100,000 ratings), since their parallel sections are too short to pay for the threads.
    verbose : bool, default=False
        Show a progress bar with the training RMSE.

    Attributes
    ----------
    user_factors_ : ndarray of float32, shape (n_users, n_factors)
    item_factors_ : ndarray of float32, shape (n_items, n_factors)
    user_bias_, item_bias_ : ndarray of float32, shape (n_users,), (n_items,)
        Zero when ``biases=False``.
    global_mean_ : float
        Mean training rating.
    regularization_ : float
        The lambda used; a (folded-in) user with ``n`` ratings is solved with ``regularization_ *
        n`` on the diagonal, which is what :meth:`fold_in` does.
    loss_history_ : list of float
        Objective above divided by the number of ratings, after each sweep.
    train_rmse_history_ : list of float
        Training RMSE after each sweep.

    Notes
    -----
    Users or items without training ratings get zero factors and biases, so they are scored by
    the global mean and the other side's bias. Unknown raw ids in :meth:`predict` fall back the
    same way. Predictions are clipped to the training rating range.

    Ratings whose standard deviation is outside [1/8, 8] are fitted in units of the power of two
    nearest it (the division is exact and the objective scale-equivariant; ``init_std`` is then
    in those units), so large ratings do not overflow the float32 kernels. A fit that still
    overflows (e.g. ``regularization=1e30``) raises :class:`~mfrec.models.base.DivergenceError`.

    Memory: beside the :class:`~mfrec.Ratings` (8 bytes per rating), the fit holds its item-major
    copy (CSC: 8 bytes per rating, kept by the Ratings for reuse) and float32 factors. Measured
    at 100M ratings (k=64), the whole process peaked at 25 bytes per rating
    (``benchmarks/results/scale.md``).

    Examples
    --------
    >>> import mfrec
    >>> model = mfrec.ALS(n_factors=2, n_epochs=10, random_state=0).fit(
    ...     ([0, 0, 1, 1, 2], [0, 1, 0, 2, 1], [5.0, 3.0, 4.0, 1.0, 2.0]))
    >>> model.predict([0], [2]).shape
    (1,)
    """

    def __init__(self, *, n_factors=32, n_epochs=15, regularization=0.1, biases=True,
                 solver="cg", cg_steps=3, init_std=0.1, random_state=None, num_threads=0,
                 verbose=False):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.regularization = regularization
        self.biases = biases
        self.solver = solver
        self.cg_steps = cg_steps
        self.init_std = init_std
        self.random_state = random_state
        self.num_threads = num_threads
        self.verbose = verbose

    def _validate_params(self):
        self._check_size_params()
        check_float("regularization", self.regularization, low=0.0, low_open=True)
        check_bool("biases", self.biases)
        check_choice("solver", self.solver, SOLVERS)
        check_int("cg_steps", self.cg_steps, low=1)
        # zero factors are a fixed point of the alternation: a positive spread is required
        check_float("init_std", self.init_std, low=0.0, low_open=True)
        check_als_run_params(self)

    def fit(self, data):
        """Fit to ratings.

        Parameters
        ----------
        data : Ratings or anything :func:`mfrec.as_ratings` accepts
            Users are rows, items are columns.

        Returns
        -------
        self
        """
        ratings = self._prepare(data)
        rng = rng_from(self.random_state)
        k = int(self.n_factors)
        reg = float(self.regularization)
        fit_bias = bool(self.biases)
        mu, u_arrays, i_arrays, order_u, order_i, P, Q, bu, bi, scale = start_sweeps(
            ratings, k, self.init_std, rng)
        user_counts = np.diff(ratings.csr.indptr)
        item_counts = np.diff(ratings.csc.indptr)

        self.loss_history_ = []
        self.train_rmse_history_ = []
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm
            bar = tqdm(total=int(self.n_epochs), desc="ALS", unit="epoch")
        with thread_context(threads_for(self.num_threads, ratings.nnz)) as n_threads:
            # a few blocks per thread: balanced by construction, and slack for uneven cores
            n_blocks = 8 * n_threads
            for _ in range(int(self.n_epochs)):
                if self.solver == "cholesky":
                    _k.solve_rows_cholesky(*u_arrays, P, bu, Q, bi, mu, reg, fit_bias, order_u,
                                           n_blocks, n_threads)
                    _k.solve_rows_cholesky(*i_arrays, Q, bi, P, bu, mu, reg, fit_bias, order_i,
                                           n_blocks, n_threads)
                else:
                    _k.solve_rows_cg(*u_arrays, P, bu, Q, bi, mu, reg, fit_bias,
                                     int(self.cg_steps), order_u, n_blocks, n_threads)
                    _k.solve_rows_cg(*i_arrays, Q, bi, P, bu, mu, reg, fit_bias,
                                     int(self.cg_steps), order_i, n_blocks, n_threads)
                sse = float(_k.row_squared_errors(*u_arrays, P, bu, Q, bi, mu, n_threads).sum())
                penalty = reg * (user_counts @ (np.einsum("ij,ij->i", P, P) + bu * bu)
                                 + item_counts @ (np.einsum("ij,ij->i", Q, Q) + bi * bi))
                loss = float((sse + penalty) / ratings.nnz) * scale**2
                if not np.isfinite(loss):
                    self._check_finite_fit(user_factors=P, item_factors=Q, user_bias=bu,
                                           item_bias=bi)
                    raise DivergenceError(
                        f"ALS training diverged at epoch {len(self.loss_history_) + 1} (loss "
                        f"{loss}); {self._divergence_hint()}")
                self.loss_history_.append(loss)
                self.train_rmse_history_.append(float(np.sqrt(sse / ratings.nnz)) * scale)
                if bar is not None:
                    bar.set_postfix(rmse=f"{self.train_rmse_history_[-1]:.4f}")
                    bar.update()
        if bar is not None:
            bar.close()
        self._set_data_state(ratings)
        if scale != 1.0:  # back to the ratings' own units (see start_sweeps)
            root = np.float32(np.sqrt(scale))
            P *= root
            Q *= root
            bu *= np.float32(scale)
            bi *= np.float32(scale)
            mu *= scale
        self._set_factor_state(P, Q, bu, bi, mu)
        self.regularization_ = reg
        return self
