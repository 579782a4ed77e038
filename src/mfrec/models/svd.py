"""Singular value decomposition: the notebook's first method, and PureSVD for large sparse data."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_float, check_int, rng_from
from .base import FactorModel, MissingMixin

__all__ = ["SVD", "sign_flip"]

#: matrices up to this many cells are decomposed densely (exact LAPACK); larger ones by ARPACK
DENSE_CELLS = 4_000_000


def sign_flip(U, Vt):
    """Deterministic signs: the largest-magnitude entry of each column of ``U`` is positive.

    The singular vectors of a matrix are defined up to a sign per pair; flipping column j of
    ``U`` and row j of ``Vt`` together leaves ``U @ diag(S) @ Vt`` unchanged. This is the
    convention of scikit-learn's ``svd_flip`` (u-based) and reproduces the notebook's printed
    matrices exactly.
    """
    cols = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[cols, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs, Vt * signs[:, None]


class SVD(MissingMixin, FactorModel):
    """Truncated singular value decomposition of the user x item rating matrix.

    The learned user matrix is ``U @ diag(S)`` and the item matrix ``Vt.T`` (so
    ``user_factors_ @ item_factors_.T`` is the rank-``n_factors`` approximation), exactly as in the
    notebook, with the sign convention of :func:`sign_flip`.

    Parameters
    ----------
    n_factors : int or None, default=None
        Rank kept. ``None`` keeps all ``min(n_users, n_items)`` factors (dense SVD; the matrix must
        be small enough to densify).
    missing : {"zero", "ignore"}, default="zero"
        ``"zero"``: unrated cells are zero ratings — the notebook's SVD, and the "PureSVD" top-N
        recommender (Cremonesi et al. 2010) on large sparse data, where it needs no densification.
        This is the default because an SVD is only defined on a complete matrix; its scores rank
        items well but are not on the rating scale. ``"ignore"``: fit the observed ratings only, by
        iterative SVD imputation (hard-impute): blanks are filled with the current rank-k
        reconstruction and the SVD recomputed, ``n_epochs`` times, starting from the item means;
        the reconstruction is never densified (a sparse + low-rank linear operator).
    n_epochs : int, default=30
        Imputation rounds for ``missing="ignore"``.
    tol : float, default=1e-5
        Stop imputation when the relative change of the observed-entry fit falls below this.
    random_state : int, Generator or None, default=None
        Seeds ARPACK's start vector (truncated solver only).
    verbose : int, default=0
        Print the imputation loss every ``verbose`` rounds.

    Attributes
    ----------
    singular_values_ : ndarray of shape (n_factors,)
        In decreasing order.
    user_factors_ : ndarray of shape (n_users, n_factors)
        ``U * S``.
    item_factors_ : ndarray of shape (n_items, n_factors)
        ``Vt.T``.
    loss_history_ : list of float
        Mean squared error on the observed ratings per imputation round (``"ignore"`` only).
    """

    def __init__(self, *, n_factors=None, missing="zero", n_epochs=30, tol=1e-5,
                 random_state=None, verbose=0):
        self.n_factors = n_factors
        self.missing = missing
        self.n_epochs = n_epochs
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose

    def _fold_in_solve(self, indptr, items, values):
        # "zero": the projection X_u @ V, exactly how training rows got U S; "ignore": least
        # squares on the rated items only
        from .base import ridge_fold_in
        P = ridge_fold_in(self.item_factors_, indptr, items, values, 0.0,
                          zero_fill=self.missing == "zero")
        return P, np.zeros(P.shape[0])

    def _validate_params(self):
        check_int("n_factors", self.n_factors, low=1, allow_none=True)
        check_choice("missing", self.missing, ("zero", "ignore"))
        check_int("n_epochs", self.n_epochs, low=1)
        check_float("tol", self.tol, low=0.0)
        check_int("verbose", self.verbose, low=0)
        rng_from(self.random_state)

    def fit(self, data):
        """Decompose ``data`` (Ratings or anything :func:`mfrec.as_ratings` accepts). Returns self."""
        ratings = self._prepare(data)
        n_users, n_items = ratings.shape
        full = min(n_users, n_items)
        k = full if self.n_factors is None else self.n_factors
        if k > full:
            raise ValueError(f"n_factors={k} exceeds min(n_users, n_items)={full}")
        self._set_data_state(ratings)
        self.loss_history_ = []
        X = ratings.csr.astype(np.float64)
        if self.missing == "zero":
            U, S, Vt = _truncated_svd(X, k, self.random_state)
        else:
            U, S, Vt = self._impute(ratings, X, k)
        U, Vt = sign_flip(U, Vt)
        self.singular_values_ = S
        self._set_factor_state(U * S, Vt.T)
        return self

    def _impute(self, ratings, X, k):
        """Hard-impute: SVD of (observed ratings where known, current estimate elsewhere)."""
        from ..kernels.sparse import observed_dots

        indptr, indices, values = X.indptr, X.indices, X.data
        counts = np.bincount(indices, weights=None, minlength=X.shape[1])
        sums = np.bincount(indices, weights=values, minlength=X.shape[1])
        mean = values.mean()
        item_mean = np.where(counts > 0, (sums + mean) / (counts + 1), mean)
        # start: every blank gets its item's (shrunk) mean, a rank-1 matrix 1 @ item_mean.T
        A = np.ones((X.shape[0], 1))
        B = item_mean[:, None]
        prev = np.inf
        for epoch in range(self.n_epochs):
            low_at_obs = observed_dots(indptr, indices, A, B)
            resid = sp.csr_matrix((values - low_at_obs, indices, indptr), shape=X.shape)
            op = _sparse_plus_lowrank(resid, A, B)
            U, S, Vt = _truncated_svd(op, k, self.random_state)
            A, B = U * S, Vt.T
            fit_obs = observed_dots(indptr, indices, A, B)
            mse = float(np.mean((values - fit_obs) ** 2))
            self.loss_history_.append(mse)
            if self.verbose and epoch % self.verbose == 0:
                print(f"Iteration {epoch}, observed MSE: {mse:.6f}")
            if abs(prev - mse) <= self.tol * max(mse, 1e-12):
                break
            prev = mse
        return U, S, Vt


def _sparse_plus_lowrank(S, A, B):
    """Linear operator for ``S + A @ B.T`` that never forms the dense matrix."""
    import scipy.sparse.linalg as spla  # here: ~10 MB that fits of other models never need
    shape = S.shape
    St = S.T.tocsr()
    return spla.LinearOperator(
        shape, dtype=np.float64,
        matvec=lambda x: S @ x.ravel() + A @ (B.T @ x.ravel()),
        matmat=lambda X: S @ X + A @ (B.T @ X),
        rmatvec=lambda y: St @ y.ravel() + B @ (A.T @ y.ravel()),
        rmatmat=lambda Y: St @ Y + B @ (A.T @ Y))


def _truncated_svd(X, k, random_state):
    """Top-k singular triplets in decreasing order; dense LAPACK when small, ARPACK otherwise."""
    import scipy.linalg
    import scipy.sparse.linalg as spla
    n, m = X.shape
    full = min(n, m)
    if n * m <= DENSE_CELLS or k >= full - 1:
        if n * m > 50 * DENSE_CELLS:
            raise MemoryError(f"a full SVD of a {n} x {m} matrix would densify {n * m} cells; "
                              f"pass n_factors < {full - 1} to use the truncated sparse solver")
        if isinstance(X, spla.LinearOperator):
            dense = X @ np.eye(m)
        else:
            dense = X.toarray() if sp.issparse(X) else np.asarray(X)
        U, S, Vt = scipy.linalg.svd(dense, full_matrices=False)
        return U[:, :k], S[:k], Vt[:k]
    rng = rng_from(random_state)
    v0 = rng.uniform(-1, 1, min(n, m))
    U, S, Vt = spla.svds(X, k=k, v0=v0, which="LM", solver="arpack")
    order = np.argsort(S)[::-1]
    return U[:, order], S[order], Vt[order]
