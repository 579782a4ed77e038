"""Full-batch gradient descent with L2 regularization: the notebook's third method."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_float, check_int
from .._lazy import lazy_function
from .base import DivergenceError, FactorModel, MissingMixin

# Numba is imported by the first fit, not by load
observed_dots = lazy_function("mfrec.kernels.sparse", "observed_dots")

__all__ = ["GradientDescent"]

#: below this many cells the "zero" variant works on the dense matrix, as the notebook does
_DENSE_CELLS = 1_000_000


class GradientDescent(MissingMixin, FactorModel):
    """Matrix factorization by full-batch gradient descent with L2 regularization.

    Each iteration is the notebook's, vectorised::

        E = R - P @ Q.T
        P -= lr * (-2 E @ Q + 2 reg P)
        Q -= lr * (-2 E.T @ P + 2 reg Q)      # P already updated, E not recomputed

    With ``missing="zero"`` the reported loss is the notebook's
    ``sum(E**2) / n_ratings + reg/2 (|P|^2 + |Q|^2)``. With ``missing="ignore"`` it is the function
    the updates descend, ``(sum(E**2) + reg (|P|^2 + |Q|^2)) / n_ratings``: the notebook's loss
    weighs the penalty differently from its gradient, so on real data it can rise while the fit
    improves.

    Parameters
    ----------
    n_factors : int, default=6
    n_epochs : int, default=1000
        Iterations.
    learning_rate : float or "auto", default="auto"
        A number is the notebook's constant step (0.01 there). It must be small enough for the
        data: the gradient sums over each user's ratings, so a step that works on the 4x5 notebook
        matrix diverges on data with hundreds of ratings per user (a clear error says so).
        ``"auto"`` takes, for each row, the step 1/L where L = 2(sum of the squared norms of the
        factors it touches + reg) bounds that row's curvature; it never diverges and needs no
        tuning; the item step then uses the error recomputed after the user step, so the
        penalised squared error decreases every iteration.
    regularization : float, default=5.0
        Weight of ``|P|^2 + |Q|^2`` in the objective (a total, not per rating). Chosen by the
        panel protocol of ``benchmarks/results/defaults.md``: of 0.1, 1, 5 and 20, 5 had the
        lowest validation RMSE on all four explicit panel sets (MovieLens 100K 0.926 against
        0.995 at 0.1). The notebook used 0.1 on its 4x5 matrix, where a few ratings per row
        call for less: pass ``regularization=0.1`` (with ``missing="zero"`` and
        ``learning_rate=0.01``) to reproduce it.
    missing : {"ignore", "zero"}, default="ignore"
        ``"ignore"`` (default): the error counts observed ratings only, so blanks are predicted
        rather than fitted to zero — what a recommender needs. ``"zero"``: blanks are zero ratings,
        exactly the notebook's computation (it works on sparse data without densifying, through
        ``E @ Q = X @ Q - P (Q.T @ Q)``).
    random_state : int, RandomState or None, default=None
        Initial factors are ``RandomState(random_state).random((n_users, k))`` then
        ``.random((k, n_items))``, the notebook's ``np.random.random`` calls — with
        ``np.random.seed(s)`` before the notebook and ``random_state=s`` here the two runs agree
        to rounding.
    verbose : int, default=0
        Print ``Iteration i, Loss: ...`` every ``verbose`` iterations (the notebook uses 100).

    Attributes
    ----------
    user_factors_ : ndarray of shape (n_users, n_factors)
    item_factors_ : ndarray of shape (n_items, n_factors)
        The notebook's ``item_matrix`` is ``item_factors_.T``.
    loss_history_ : list of float
        The loss after each iteration (see above for which loss).
    """

    def __init__(self, *, n_factors=6, n_epochs=1000, learning_rate="auto", regularization=5.0,
                 missing="ignore", random_state=None, verbose=0):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.missing = missing
        self.random_state = random_state
        self.verbose = verbose

    def _fold_in_solve(self, indptr, items, values):
        # the exact minimiser of this model's objective for one new row, Q held fixed
        from .base import ridge_fold_in
        P = ridge_fold_in(self.item_factors_, indptr, items, values, self.regularization,
                          zero_fill=self.missing == "zero")
        return P, np.zeros(P.shape[0])

    def _validate_params(self):
        self._check_size_params()
        if self.learning_rate != "auto":
            check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_float("regularization", self.regularization, low=0.0)
        check_choice("missing", self.missing, ("ignore", "zero"))
        check_int("verbose", self.verbose, low=0)
        if not (self.random_state is None or isinstance(self.random_state, np.random.RandomState)):
            check_int("random_state", self.random_state, low=0)

    def fit(self, data):
        """Fit on ``data`` (Ratings or anything :func:`mfrec.as_ratings` accepts). Returns self."""
        ratings = self._prepare(data)
        self._set_data_state(ratings)
        rs = (self.random_state if isinstance(self.random_state, np.random.RandomState)
              else np.random.RandomState(self.random_state))
        n_users, n_items = ratings.shape
        k = self.n_factors
        P = rs.random((n_users, k))
        Q = rs.random((k, n_items)).T.copy()
        X = ratings.csr.astype(np.float64)
        dense = self.missing == "zero" and n_users * n_items <= _DENSE_CELLS
        step = _DenseZero(X) if dense else (_SparseZero(X) if self.missing == "zero"
                                            else _Observed(X))
        lam = self.regularization
        lr = self.learning_rate
        self.loss_history_ = []
        for it in range(self.n_epochs):
            EQ, E_dot = step.error_products(P, Q)
            P_new = P - self._rate(lr, step.row_curvature(Q), lam) * (-2 * EQ + 2 * lam * P)
            if lr == "auto":
                # fresh error for the item step: true alternating descent, which the 1/L step
                # makes monotone (the notebook reuses the stale error, fine for small steps)
                E_dot = step.error_products(P_new, Q)[1]
            EtP = E_dot(P_new)
            Q = Q - self._rate(lr, step.col_curvature(P_new), lam) * (-2 * EtP + 2 * lam * Q)
            P = P_new
            penalty = lam * (np.sum(P * P) + np.sum(Q * Q))
            sse = step.sse(P, Q)
            loss = (sse / ratings.nnz + 0.5 * penalty if self.missing == "zero"
                    else (sse + penalty) / ratings.nnz)
            if not np.isfinite(loss) or loss > 1e12:
                raise DivergenceError(
                    f"gradient descent diverged at iteration {it} (loss {loss:.3g}) with "
                    f"learning_rate={lr!r}; use learning_rate='auto' or a smaller step")
            self.loss_history_.append(float(loss))
            if self.verbose and it % self.verbose == 0:
                print(f"Iteration {it}, Loss: {loss}")
        self._set_factor_state(P, Q)
        return self

    @staticmethod
    def _rate(lr, curvature, lam):
        if lr != "auto":
            return lr
        return (1.0 / (2.0 * (curvature + lam)))[:, None]


class _DenseZero:
    """Blanks are zeros, on the dense matrix (the notebook's arithmetic)."""

    def __init__(self, X):
        self.R = X.toarray()

    def error_products(self, P, Q):
        E = self.R - P @ Q.T
        return E @ Q, lambda P_new: E.T @ P_new

    def row_curvature(self, Q):
        return np.full(self.R.shape[0], np.sum(Q * Q))

    def col_curvature(self, P):
        return np.full(self.R.shape[1], np.sum(P * P))

    def sse(self, P, Q):
        return float(np.sum((self.R - P @ Q.T) ** 2))


class _SparseZero(_DenseZero):
    """Blanks are zeros; products with E = X - P Q^T through X's sparsity, never densified."""

    def __init__(self, X):
        self.X, self.Xt = X, X.T.tocsr()
        self.R = sp.csr_matrix(X.shape)  # shape only
        self.sq = float(X.data @ X.data)

    def error_products(self, P, Q):
        EQ = self.X @ Q - P @ (Q.T @ Q)
        return EQ, lambda P_new: self.Xt @ P_new - Q @ (P.T @ P_new)

    def sse(self, P, Q):
        return max(self.sq - 2 * float(np.sum(P * (self.X @ Q)))
                   + float(np.sum((P.T @ P) * (Q.T @ Q))), 0.0)


class _Observed:
    """Only observed ratings count: E lives on X's sparsity pattern."""

    def __init__(self, X):
        self.X = X
        self.rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))

    def _error(self, P, Q):
        X = self.X
        return sp.csr_matrix((X.data - observed_dots(X.indptr, X.indices, P, Q), X.indices,
                              X.indptr), shape=X.shape)

    def error_products(self, P, Q):
        E = self._error(P, Q)
        return E @ Q, lambda P_new: E.T @ P_new

    def row_curvature(self, Q):
        sq = np.sum(Q * Q, axis=1)
        return np.bincount(self.rows, weights=sq[self.X.indices], minlength=self.X.shape[0])

    def col_curvature(self, P):
        sq = np.sum(P * P, axis=1)
        return np.bincount(self.X.indices, weights=sq[self.rows], minlength=self.X.shape[1])

    def sse(self, P, Q):
        e = self._error(P, Q).data
        return float(e @ e)
