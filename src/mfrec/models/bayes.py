"""Bayesian matrix factorisation by Gibbs sampling (BPMF, Salakhutdinov & Mnih 2008) with biases.

Model: ``r_ui ~ N(mu + b_u + b_i + p_u . q_i, 1/(alpha w_ui))``. Each user's ``[p_u, b_u]`` has a
Gaussian prior ``N(m_U, Lambda_U^-1)`` whose mean and precision carry a Normal-Wishart hyperprior
(the same for items), so the strength of regularisation -- of factors and of biases -- is inferred
from the data rather than tuned. The noise precision ``alpha`` has a Gamma hyperprior (or is
fixed). The noise scales ``w_ui`` follow ``noise``:

- ``"rows"`` (default): ``w_ui = s_u t_i``, a scale per user and per item with a
  ``Gamma(nu/2, nu/2)`` prior, so users (or items) whose ratings the model fits poorly are
  trusted less; the likelihood of a row is a Student-t (as in Lakshminarayanan, Bouchard &
  Archambeau 2011).
- ``"gaussian"``: all 1, plain BPMF (Salakhutdinov & Mnih 2008).

(A scale per single rating as well was tried: no better on MovieLens 100K, and it costs arrays of
length nnz.)

Implicit feedback (``implicit``, default ``"both"``): which items a user rated says something about
the user beyond the ratings' values, as in SVD++. Here it enters the *prior*: user ``u``'s
``[p_u, b_u]`` has mean ``m_U + |N(u)|^-1/2 sum_{j in N(u)} w_j`` instead of ``m_U``, with ``N(u)``
the user's training items and one weight vector ``w_j`` per item, and symmetrically each item's
prior mean is offset by weights of the users who rated it. The weights have the prior
``N(0, (lambda Lambda)^-1)`` (``Lambda`` the side's prior precision, ``lambda`` with a Gamma(1, 1)
hyperprior) and are Gibbs-sampled like everything else, one weight at a time given the current
rows (a sequential pass, O(nnz d) per side). The prediction still uses only the sampled ``p_u``,
``q_i`` and biases, so the fitted model keeps its plain factor form. Only training ratings are
used. On the MovieLens 100K canonical splits it lowers test RMSE by about 0.015 (see
``benchmarks/results/bayes_accuracy.md``). Where which cells are rated carries no information (the
synthetic benchmark set, rated cells drawn independently of the values) it costs a little
instead (about 0.003 there), since the weights' precision ``lambda`` grows only slowly towards
switching the offsets off.

A sweep draws, for users then items, the hyperparameters, every row and the implicit-feedback
weights; then ``alpha`` and the noise scales. The weights' pass of one side is serial, but it is
conditionally independent of the next draw of the other side's rows, so with two or more threads
it runs on a worker thread beside that draw (the samples do not depend on the thread count:
every normal draw comes from a key the model draws from ``random_state``). After ``burn_in``
sweeps, predictions are averaged over the remaining samples: the model's score is the posterior
predictive mean ``mu + mean_s(b_u^s) + mean_s(b_i^s) + mean_s(p_u^s . q_i^s)``.

How the averaged predictive is stored: ``mean_s(P_s Q_s')`` equals ``[P_1..P_S] [Q_1..Q_S]' / S``,
a factor model of rank ``n_factors * S``. To keep memory independent of the number of samples, the
running sum is recompressed to rank ``max_rank`` by an exact truncated SVD whenever it grows past
1.5 times that (through the small Gram matrices of both sides and an SVD of the core). The fitted
model is therefore an ordinary factor model (factors, biases, mean, vocabularies) whose
``user_factors_ @ item_factors_.T`` is the best rank-``max_rank`` approximation of the averaged
product of the samples (on MovieLens 100K the compression changes test RMSE by about 0.0002).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .._threads import thread_context
from .._validation import check_bool, check_choice, check_float, check_int, rng_from
from .._lazy import lazy_module
from .als import check_als_run_params, start_sweeps, threads_for
from .base import DivergenceError, FactorModel
# Numba is imported by the first fit, not by load

_k = lazy_module("mfrec.kernels.bayes")

__all__ = ["BayesianMF"]

NOISE_MODELS = ("rows", "gaussian")
IMPLICIT_SIDES = {"both": (0, 1), "users": (0,), "items": (1,), "none": ()}
IMPLICIT_LAM0 = 1.0  # starting precision scale of the implicit-feedback weights
INIT_SWEEPS = 5      # ALS-WR sweeps that start the chain
INIT_REG = 0.1       # their weighted-lambda regularisation (the ALS default, biases included)


class BayesianMF(FactorModel):
    """Bayesian matrix factorisation (BPMF) with biases, fitted by Gibbs sampling.

    Parameters
    ----------
    n_factors : int, default=10
        Rank of each sample's factors.
    n_epochs : int, default=200
        Gibbs sweeps in all, burn-in included.
    burn_in : int, default=20
        Sweeps discarded before predictions are averaged; must be smaller than ``n_epochs``.
    biases : bool, default=True
        Model user and item biases (drawn jointly with the factors, under the same hyperprior).
    noise_precision : float or None, default=None
        ``alpha``, the precision of the rating noise. None samples it (Gamma(1, 1) hyperprior);
        a number fixes it (the BPMF paper fixes 2).
    noise : {"rows", "gaussian"}, default="rows"
        Noise model (see the module notes): ``"rows"`` gives every user and item its own noise
        scale, which lowers MovieLens 100K test RMSE by about 0.005 against ``"gaussian"``.
    noise_dof : float, default=10.0
        ``nu``, degrees of freedom of the noise scales' Gamma(nu/2, nu/2) prior; large values
        approach ``"gaussian"``.
    max_rank : int or None, default=None
        Rank of the stored predictive mean (see the module notes); None means
        ``4 * n_factors``. With fewer than ``max_rank / n_factors`` kept samples nothing is
        compressed and the stored factors are exactly the scaled concatenation of the samples.
    beta0 : float, default=2.0
        Prior strength of the hyperprior's mean (the Normal-Wishart ``beta_0``).
    init_std : float, default=0.1
        Standard deviation of the random normal factors that start the few ALS-WR sweeps from
        which the chain starts.
    implicit : {"both", "users", "items", "none"}, default="both"
        Whose prior means are offset by implicit-feedback weights (see the module notes):
        users' by the items they rated, items' by their raters, both, or neither (plain BPMF
        priors). ``"both"`` lowers MovieLens 100K test RMSE by about 0.015 against ``"none"``
        and costs about 1.5 times the fit time; ``"none"`` suits data whose rated cells are
        chosen at random.
    random_state : int, numpy Generator or None, default=None
        Seed of the initial factors and of every draw. A fit does not depend on ``num_threads``.
    num_threads : int, default=0
        Threads of the kernels; 0 means every core. Small data sets use fewer (one thread per
        100,000 ratings), since their parallel sections are too short to pay for the threads.
    verbose : bool, default=False
        Show a progress bar with the training RMSE of the current sample.

    Attributes
    ----------
    user_factors_ : ndarray of float32, shape (n_users, rank_)
    item_factors_ : ndarray of float32, shape (n_items, rank_)
        Their product is the (compressed) average over kept samples of ``P_s Q_s'``.
    user_bias_, item_bias_ : ndarray of float32
        Biases averaged over the kept samples.
    global_mean_ : float
        Mean training rating (fixed, not sampled).
    rank_ : int
        Number of columns of the stored factors.
    n_samples_ : int
        Samples averaged: ``n_epochs - burn_in``.
    noise_precision_history_ : list of float
        ``alpha`` at each sweep.
    user_noise_scale_, item_noise_scale_ : ndarray of float32, shape (n_users,), (n_items,)
        Noise scales averaged over the kept samples (ones with ``noise="gaussian"``): rating
        ``(u, i)`` has precision about ``alpha * user_noise_scale_[u] * item_noise_scale_[i]``.
    loss_history_ : list of float
        Training RMSE of each sweep's sample (not of the average).

    Notes
    -----
    Users or items without training ratings are drawn from the learnt prior, so their averaged
    factors are close to the prior mean; unknown raw ids in :meth:`predict` fall back to the global
    mean plus the known side's bias. Predictions are clipped to the training rating range.
    :meth:`fold_in` solves a ridge problem on the stored (averaged) item factors; it is an
    approximation to the Bayesian answer.

    Ratings whose standard deviation is outside [1/8, 8] are sampled in units of the power of two
    nearest it (see :func:`mfrec.models.als.start_sweeps`), so the hyperpriors see data of unit
    spread whatever the rating scale: ratings times 1024 give exactly 1024 times the predictions,
    and ratings times 1000 fit as well as the originals. ``noise_precision`` is in the ratings'
    own units.

    Examples
    --------
    >>> import mfrec
    >>> model = mfrec.BayesianMF(n_factors=2, n_epochs=30, burn_in=10, random_state=0).fit(
    ...     ([0, 0, 1, 1, 2], [0, 1, 0, 2, 1], [5.0, 3.0, 4.0, 1.0, 2.0]))
    >>> model.predict([0], [2]).shape
    (1,)
    """

    _divergence_params = (("noise_precision", "lower"), ("init_std", "lower"))

    def __init__(self, *, n_factors=10, n_epochs=200, burn_in=20, biases=True,
                 noise_precision=None, noise="rows", noise_dof=10.0, max_rank=None, beta0=2.0,
                 init_std=0.1, implicit="both", random_state=None, num_threads=0, verbose=False):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.burn_in = burn_in
        self.biases = biases
        self.noise_precision = noise_precision
        self.noise = noise
        self.noise_dof = noise_dof
        self.max_rank = max_rank
        self.beta0 = beta0
        self.init_std = init_std
        self.implicit = implicit
        self.random_state = random_state
        self.num_threads = num_threads
        self.verbose = verbose

    def _validate_params(self):
        k, n = self._check_size_params()
        burn = check_int("burn_in", self.burn_in, low=0)
        if burn >= n:
            raise ValueError(f"burn_in must be smaller than n_epochs={n} so that some samples are "
                             f"averaged, got {burn}")
        check_bool("biases", self.biases)
        check_float("noise_precision", self.noise_precision, low=0.0, low_open=True,
                    allow_none=True)
        check_choice("noise", self.noise, NOISE_MODELS)
        check_float("noise_dof", self.noise_dof, low=0.0, low_open=True)
        check_int("max_rank", self.max_rank, low=k, allow_none=True)
        check_float("beta0", self.beta0, low=0.0, low_open=True)
        check_float("init_std", self.init_std, low=0.0)
        check_choice("implicit", self.implicit, tuple(IMPLICIT_SIDES))
        check_als_run_params(self)

    def fit(self, data):
        """Run the Gibbs sampler on ratings and keep the averaged predictive.

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
        fit_bias = bool(self.biases)
        d = k + 1 if fit_bias else k
        max_rank = 4 * k if self.max_rank is None else int(self.max_rank)
        csr, csc = ratings.csr, ratings.csc
        nnz = ratings.nnz
        n_users, n_items = ratings.shape
        # (ratings of unusual spread are divided by a power of two, `scale`: the hyperpriors
        # then see data of unit spread, and float32 does not overflow; see start_sweeps)
        mu, u_arrays, i_arrays, order_u, order_i, P, Q, bu, bi, scale = start_sweeps(
            ratings, k, self.init_std, rng)
        # factors augmented with the bias as last column
        U = np.empty((n_users, d), dtype=np.float32)
        V = np.empty((n_items, d), dtype=np.float32)
        U[:, :k], V[:, :k] = P, Q
        if fit_bias:
            U[:, k], V[:, k] = bu, bi
        del P, Q, bu, bi
        n_threads = threads_for(self.num_threads, nnz)
        with thread_context(n_threads) as n_threads:
            _ridge_start(U, V, u_arrays, i_arrays, order_u, order_i, mu, fit_bias, n_threads)
        fixed_alpha = self.noise_precision
        # a precision in the ratings' units becomes one in the scaled units
        alpha = 2.0 if fixed_alpha is None else float(fixed_alpha) * scale**2
        beta0 = float(self.beta0)

        # running sum of the kept P_s Q_s' as A[:, :cols] @ B[:, :cols].T, compressed to
        # max_rank columns whenever the next sample would not fit
        cap = max_rank + max(k, max_rank // 2)
        flat_A = np.empty(n_users * cap, dtype=np.float32)
        flat_B = np.empty(n_items * cap, dtype=np.float32)
        sum_A = flat_A.reshape(n_users, cap)
        sum_B = flat_B.reshape(n_items, cap)
        cols = 0
        sum_bu = np.zeros(n_users)
        sum_bi = np.zeros(n_items)
        sum_su = np.zeros(n_users)
        sum_si = np.zeros(n_items)
        n_kept = 0
        self.loss_history_ = []
        self.noise_precision_history_ = []
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm
            bar = tqdm(total=int(self.n_epochs), desc="BayesianMF", unit="sweep")
        robust = self.noise == "rows"
        half_dof = 0.5 * float(self.noise_dof)
        # noise scales of users and items (all ones for Gaussian noise)
        scale_u = np.ones(n_users, dtype=np.float32)
        scale_i = np.ones(n_items, dtype=np.float32)
        count_u = np.diff(csr.indptr).astype(np.float64)
        count_i = np.diff(csc.indptr).astype(np.float64)
        # implicit feedback: side s's rows have prior mean m + xs[u] sum_{j in N(u)} W_s[j]
        imp_sides = IMPLICIT_SIDES[self.implicit]
        imp_xs = [_inv_sqrt(count_u), _inv_sqrt(count_i)]
        imp_W = [np.zeros((n_items, d), dtype=np.float32) if 0 in imp_sides else None,
                 np.zeros((n_users, d), dtype=np.float32) if 1 in imp_sides else None]
        # per side: the rows' prior-mean offsets, then their residuals while the side's weight
        # pass runs (it may still run while the other side is drawn)
        imp_off = [np.empty((n_users, d), dtype=np.float32) if 0 in imp_sides else None,
                   np.empty((n_items, d), dtype=np.float32) if 1 in imp_sides else None]
        imp_gram = [np.zeros((d, d)), np.zeros((d, d))]
        imp_lam = [IMPLICIT_LAM0, IMPLICIT_LAM0]
        imp_Lam = [None, None]   # the prior precision a side's pending weight pass was given
        pending = [None, None]   # the side's weight pass in flight
        queued = None            # (side, function, arguments) of the weight pass to start next
        no_off = np.zeros((1, d), dtype=np.float32)
        # A side's weight pass is serial, and conditionally independent of everything drawn
        # until that side's rows are drawn again (the other side's hyperparameters and rows, the
        # noise), so with two or more threads it runs on a worker thread beside the next draw
        # of rows (compute-bound: it competes less for memory than the gathers do). Its inputs
        # are fixed when it is queued and every draw it makes comes from its own key, so the
        # chain does not depend on whether it ran beside or in line.
        with thread_context(n_threads) as n_threads, _Runner(n_threads > 1) as runner:
            n_blocks = 8 * n_threads
            for sweep in range(int(self.n_epochs)):
                for side, (X, Y, arrays, other, order, xw, yw) in enumerate((
                        (U, V, u_arrays, i_arrays, order_u, scale_u, scale_i),
                        (V, U, i_arrays, u_arrays, order_i, scale_i, scale_u))):
                    if side in imp_sides:
                        W, xs, off = imp_W[side], imp_xs[side], imp_off[side]
                        if pending[side] is not None:
                            pending[side].result()
                            pending[side] = None
                            imp_gram[side] = _gram(W)
                            # lam ~ Gamma(1, 1) a priori; W's rows are N(0, (lam Lambda)^-1)
                            quad = float(np.sum(imp_Lam[side] * imp_gram[side]))
                            imp_lam[side] = float(rng.gamma(1.0 + 0.5 * W.size,
                                                            1.0 / (1.0 + 0.5 * quad)))
                        _k.implicit_offsets(arrays[0], arrays[1], xs, W, off, order, n_blocks,
                                            n_threads)
                        # the weights are draws of the same precision Lambda (scaled by lam)
                        m, Lam = _sample_normal_wishart(
                            X, beta0, rng, offset=off, extra_n=W.shape[0],
                            extra_scatter=imp_lam[side] * imp_gram[side])
                        prior_off = off
                    else:
                        m, Lam = _sample_normal_wishart(X, beta0, rng)
                        prior_off = no_off
                    m32 = m.astype(np.float32)
                    key = _stream_key(rng)
                    if queued is not None:  # the other side's weight pass runs beside the rows
                        pending[queued[0]] = runner.submit(*queued[1:])
                        queued = None
                    _k.sample_rows(*arrays, X, Y, xw, yw, mu, alpha, m32, prior_off,
                                   Lam.astype(np.float32), fit_bias, key, order, n_blocks,
                                   n_threads=n_threads)
                    if side in imp_sides:
                        # residuals x_u - m - off_u of the new rows; the weights' pass given
                        # them starts beside the next draw of rows
                        np.subtract(X, off, out=off)
                        off -= m32
                        imp_Lam[side] = Lam
                        queued = (side, _k.sample_implicit, other[0], other[1], xs, W, off,
                                  imp_lam[side], np.linalg.inv(np.linalg.cholesky(Lam)).T,
                                  _stream_key(rng))
                # per user: sum_i scale_i e_ui^2 (plain squared errors when not robust)
                err_u, plain_u = _k.row_squared_errors(*u_arrays, U, V, scale_i, mu, fit_bias,
                                                       order_u, n_blocks, n_threads)
                weighted_sse = float(scale_u.astype(np.float64) @ err_u)
                sse = float(plain_u.sum())
                if fixed_alpha is None:
                    # Gamma(1, 1) hyperprior: shape 1 + nnz/2, rate 1 + weighted sse/2
                    alpha = float(rng.gamma(1.0 + 0.5 * nnz, 1.0 / (1.0 + 0.5 * weighted_sse)))
                if robust:
                    # each scale ~ Gamma(nu/2, nu/2) a priori; conditionals given the errors
                    scale_u = rng.gamma(half_dof + 0.5 * count_u,
                                        1.0 / (half_dof + 0.5 * alpha * err_u)).astype(np.float32)
                    err_i, _ = _k.row_squared_errors(*i_arrays, V, U, scale_u, mu, fit_bias,
                                                     order_i, n_blocks, n_threads)
                    scale_i = rng.gamma(half_dof + 0.5 * count_i,
                                        1.0 / (half_dof + 0.5 * alpha * err_i)).astype(np.float32)
                if not (np.isfinite(sse) and np.isfinite(alpha)):
                    self._check_finite_fit(user_factors=U, item_factors=V)
                    raise DivergenceError(
                        f"BayesianMF sampling diverged at sweep {sweep + 1} (squared error "
                        f"{sse}, noise precision {alpha}); {self._divergence_hint()}")
                self.loss_history_.append(float(np.sqrt(sse / nnz)) * scale)
                self.noise_precision_history_.append(alpha / scale**2)
                if sweep >= int(self.burn_in):
                    n_kept += 1
                    sum_su += scale_u
                    sum_si += scale_i
                    if fit_bias:
                        sum_bu += U[:, k]
                        sum_bi += V[:, k]
                    if cols + k > cap:
                        cols = _compress(sum_A, sum_B, cols, max_rank)
                    sum_A[:, cols:cols + k] = U[:, :k]
                    sum_B[:, cols:cols + k] = V[:, :k]
                    cols += k
                if bar is not None:
                    bar.set_postfix(rmse=f"{self.loss_history_[-1]:.4f}", alpha=f"{alpha:.2f}")
                    bar.update()
            for job in pending:  # the last weights are not used: this only re-raises errors
                if job is not None:
                    job.result()
        if bar is not None:
            bar.close()
        # the last sample is in the sums: free it before the final copies
        imp_W = imp_off = W = off = prior_off = None
        del U, V, X, Y
        if cols > max_rank:
            cols = _compress(sum_A, sum_B, cols, max_rank)
        del sum_A, sum_B  # no view of the buffers may outlive their shrinking
        # the average's 1/S, and the ratings' units back (sqrt(scale) on each side)
        factor_scale = np.float32(np.sqrt(scale) / np.sqrt(n_kept))
        P = _shrink(flat_A, n_users, cap, cols, factor_scale)
        Q = _shrink(flat_B, n_items, cap, cols, factor_scale)
        self._set_data_state(ratings)
        self._set_factor_state(P, Q,
                               (sum_bu / n_kept * scale).astype(np.float32),
                               (sum_bi / n_kept * scale).astype(np.float32), mu * scale)
        self.user_noise_scale_ = (sum_su / n_kept).astype(np.float32)
        self.item_noise_scale_ = (sum_si / n_kept).astype(np.float32)
        self.rank_ = int(cols)
        self.n_samples_ = n_kept
        return self


def _ridge_start(U, V, u_arrays, i_arrays, order_u, order_i, mu, fit_bias, n_threads):
    """``INIT_SWEEPS`` ALS-WR sweeps on the augmented factors ``U``, ``V``, in place.

    The chain starts from a regularised least-squares fit, as the BPMF paper starts from the MAP
    solution: from small random factors the sampled prior precision is huge and the chain needs
    very many sweeps to leave the neighbourhood of zero on large data. Each half-sweep is the
    sampling kernel without noise (its posterior mean): with unit noise precision, row weights
    ``1 / n_u``, a zero prior mean and prior precision ``INIT_REG * I``, the mean is the ALS-WR
    solution ``(G'G + INIT_REG n_u I)^-1 G't``, so the fit compiles no other kernel.
    """
    d = U.shape[1]
    prec = (INIT_REG * np.eye(d)).astype(np.float32)
    zero_mean = np.zeros(d, dtype=np.float32)
    no_off = np.zeros((1, d), dtype=np.float32)
    # alpha * xw[u] = 1 / n_u: the row's system is the weighted-lambda one divided by n_u (a row
    # without ratings takes weight 1; its mean is 0 whatever the weight)
    w_u = (1.0 / np.maximum(np.diff(u_arrays[0]), 1)).astype(np.float32)
    w_i = (1.0 / np.maximum(np.diff(i_arrays[0]), 1)).astype(np.float32)
    ones_u = np.ones(U.shape[0], dtype=np.float32)
    ones_i = np.ones(V.shape[0], dtype=np.float32)
    for _ in range(INIT_SWEEPS):
        for X, Y, arrays, order, xw, yw in ((U, V, u_arrays, order_u, w_u, ones_i),
                                            (V, U, i_arrays, order_i, w_i, ones_u)):
            _k.sample_rows(*arrays, X, Y, xw, yw, mu, 1.0, zero_mean, no_off, prec, fit_bias,
                           np.uint64(0), order, 8 * n_threads, noise_scale=0.0,
                           n_threads=n_threads)


def _sample_normal_wishart(X, beta0, rng, offset=None, extra_scatter=None, extra_n=0):
    """Draw the Gaussian prior of the rows of ``X`` from its Normal-Wishart conditional.

    Hyperprior as in BPMF: mean 0, ``beta0``, ``nu0 = d`` degrees of freedom, scale ``W0 = I``.
    With ``offset`` (shape of ``X``) the rows ``X - offset`` are the draws from the
    prior; ``extra_scatter`` and ``extra_n`` add other zero-mean draws of the same precision.

    Returns
    -------
    m : float64 array of shape (d,)
        The prior mean.
    Lambda : float64 array of shape (d, d)
        The prior precision.
    """
    n, d = X.shape
    total = np.zeros(d)
    scatter = np.zeros((d, d))
    for start in range(0, n, 1 << 15):  # float64 sums, in blocks to keep memory flat
        block = X[start:start + (1 << 15)].astype(np.float64)
        if offset is not None:
            block -= offset[start:start + (1 << 15)]
        total += block.sum(axis=0)
        scatter += block.T @ block
    xbar = total / n
    S = scatter - n * np.outer(xbar, xbar)         # n times the sample covariance
    beta = beta0 + n
    nu = d + n + extra_n
    mean = (n * xbar) / beta
    W_inv = np.eye(d) + S + (beta0 * n / beta) * np.outer(xbar, xbar)
    if extra_scatter is not None:
        W_inv += extra_scatter
    W = np.linalg.inv(W_inv)
    W = 0.5 * (W + W.T)
    Lam = _sample_wishart(W, nu, rng)
    # m ~ N(mean, (beta Lam)^-1): with beta Lam = C C', m = mean + C^-T z
    C = np.linalg.cholesky(beta * Lam)
    m = mean + np.linalg.solve(C.T, rng.standard_normal(d))
    return m, Lam


def _stream_key(rng):
    """A fresh key for the kernels' counter-based normal draws, from NumPy's generator."""
    return np.uint64(rng.integers(0, np.iinfo(np.int64).max, dtype=np.int64))


class _Runner:
    """Runs a function on one worker thread (``threaded``) or at once, behind one interface:
    :meth:`submit` returns a future whose ``result()`` waits for it and re-raises its error.
    Leaving the ``with`` block waits for work still running."""

    def __init__(self, threaded):
        self._pool = ThreadPoolExecutor(max_workers=1) if threaded else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def submit(self, fn, *args):
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as error:  # re-raised by result(), as the worker's would be
            future.set_exception(error)
        return future


def _inv_sqrt(counts):
    """``counts ** -0.5`` where positive, else 0, as float32."""
    out = np.zeros(counts.shape)
    np.divide(1.0, np.sqrt(counts), out=out, where=counts > 0)
    return out.astype(np.float32)


def _gram(W):
    """``W' W`` in float64, chunk by chunk."""
    G = np.zeros((W.shape[1], W.shape[1]))
    for start in range(0, W.shape[0], CHUNK_ROWS):
        block = W[start:start + CHUNK_ROWS].astype(np.float64)
        G += block.T @ block
    return G


def _sample_wishart(W, nu, rng):
    """A Wishart(W, nu) draw by the Bartlett decomposition, shape (d, d)."""
    d = W.shape[0]
    L = np.linalg.cholesky(W)
    A = np.tril(rng.standard_normal((d, d)), -1)
    A[np.diag_indices(d)] = np.sqrt(rng.chisquare(nu - np.arange(d)))
    LA = L @ A
    return LA @ LA.T


CHUNK_ROWS = 1 << 12


def _shrink(flat, n_rows, cap, cols, scale):
    """The first ``cols`` columns of the (n_rows, cap) matrix stored in ``flat``, times ``scale``,
    as an (n_rows, cols) C-ordered array made *in* ``flat``: rows are moved down in place and the
    buffer is then reallocated to the smaller size, so no second copy of the factors is made."""
    for start in range(0, n_rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n_rows)
        # a chunk's destination ends before the next chunk's source starts (cols <= cap)
        chunk = flat[start * cap:stop * cap].reshape(stop - start, cap)[:, :cols] * scale
        flat[start * cols:stop * cols] = chunk.ravel()
    flat.resize(n_rows * cols, refcheck=False)
    return flat.reshape(n_rows, cols)


def _compress(A, B, cols, rank):
    """Replace ``A[:, :cols] @ B[:, :cols].T`` by its best rank-``rank`` approximation, in place.

    Works through the small Gram matrices (``A = Q_a S_a'`` with ``Q_a = A T_a`` orthonormal, from
    the eigendecomposition of ``A'A``; the same for ``B``; then the SVD of the core ``S_a' S_b``)
    and rewrites the leading columns of ``A`` and ``B`` chunk by chunk, so that nothing of the
    size of ``A`` is allocated. Directions with negligible weight (samples that repeat each
    other) are dropped.

    Returns
    -------
    int
        The number of columns now in use (at most ``rank``).
    """
    Ta, Sa = _gram_basis(A, cols)
    Tb, Sb = _gram_basis(B, cols)
    U, s, Vt = np.linalg.svd(Sa.T @ Sb)
    r = min(rank, int(np.count_nonzero(s > s[0] * 1e-9)) if s.size and s[0] > 0 else 1)
    root = np.sqrt(s[:r])
    for X, T in ((A, Ta @ (U[:, :r] * root)), (B, Tb @ (Vt[:r].T * root))):
        T = T.astype(X.dtype)
        for start in range(0, X.shape[0], CHUNK_ROWS):
            # the chunk's product is complete before it overwrites the chunk's leading columns
            X[start:start + CHUNK_ROWS, :r] = X[start:start + CHUNK_ROWS, :cols] @ T
    return r


def _gram_basis(A, cols):
    """``(T, S)``, shape (cols, r) each, with ``A[:, :cols] @ T`` orthonormal and
    ``A[:, :cols] = (A[:, :cols] @ T) @ S.T``."""
    G = np.zeros((cols, cols))
    for start in range(0, A.shape[0], CHUNK_ROWS):  # float64 Gram, chunk by chunk
        block = A[start:start + CHUNK_ROWS, :cols].astype(np.float64)
        G += block.T @ block
    w, V = np.linalg.eigh(G)
    keep = w > max(w[-1], 0.0) * 1e-12
    if not keep.any():
        keep[-1] = True
        w = np.where(keep, 1.0, w)
    w, V = w[keep], V[:, keep]
    root = np.sqrt(w)
    return V / root, V * root
