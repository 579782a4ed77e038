"""The contract every mfrec model follows, stated once.

A fitted model is engine-independent state: user and item factors, biases, a global mean, the
raw-id vocabularies and the training interactions (for excluding seen items). Whatever trained it —
a Numba kernel here, Spark or a GPU later — scoring, recommending and saving work on that state
alone.

Scores are ``global_mean_ + user_bias_[u] + item_bias_[i] + user_factors_[u] @ item_factors_[i]``;
models without biases keep them at zero.
"""
from __future__ import annotations

import inspect
from typing import NamedTuple

import numpy as np

from .._validation import check_bool, check_int, count_nonfinite, rng_from
from ..data import Ratings, as_ratings, column_counts
from . import _guard

__all__ = ["BaseModel", "FactorModel", "NotFittedError", "DivergenceError", "FoldedUsers"]


class NotFittedError(RuntimeError, AttributeError):
    """Raised when a model is used before ``fit``."""


class DivergenceError(FloatingPointError):
    """Raised when training diverged (the loss or the learned state overflowed to NaN or
    infinity, or grew without bound); the message names the hyperparameters to move."""


class BaseModel:
    """Hyperparameter handling in the scikit-learn manner.

    ``__init__`` of a subclass takes keyword-only hyperparameters and stores them verbatim;
    validation happens in ``fit`` (via :meth:`_validate_params`), so ``set_params`` and cloning
    never fail half-way.
    """

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def get_params(self, deep=True):
        """Hyperparameters as a dict (``deep`` is accepted for scikit-learn compatibility)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set hyperparameters; unknown names raise ``ValueError``. Returns self."""
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"{key!r} is not a parameter of {type(self).__name__}; "
                                 f"valid parameters: {valid}")
            setattr(self, key, value)
        return self

    def clone(self):
        """An unfitted copy with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self):
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        parts = []
        for k, v in self.get_params().items():
            d = defaults.get(k, inspect.Parameter.empty)
            try:
                same = d is not inspect.Parameter.empty and bool(d == v)
            except Exception:  # arrays and the like: always show
                same = False
            if not same:
                parts.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _validate_params(self):
        """Check every hyperparameter; subclasses override and raise clear errors."""


class SeenParts(NamedTuple):
    """A model file's ``user_items_``: its CSR arrays, checked by the loader, not yet a matrix.

    Building the SciPy matrix means importing ``scipy.sparse`` (about a quarter of a second),
    which a one-off ``mfrec recommend`` never needs: the top-N kernels read ``indptr`` and
    ``indices`` directly. :class:`_SeenMatrix` builds the matrix on first access.
    """
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple
    array_api: bool

    def build(self):
        """The SciPy CSR matrix (or array, as saved) of these parts."""
        import scipy.sparse as sp

        make = sp.csr_array if self.array_api else sp.csr_matrix
        return make((self.data, self.indices, self.indptr), shape=self.shape)


class _SeenMatrix:
    """``FactorModel.user_items_`` before it is set: built from a loaded file's
    :class:`SeenParts` on first access.

    A non-data descriptor, so once ``user_items_`` is in the instance's ``__dict__`` (set by
    ``fit`` or by the first access) attribute lookup finds it there and this never runs again.
    """

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        parts = obj.__dict__.pop("_seen_parts", None)
        if parts is None:
            raise AttributeError(f"{type(obj).__name__!r} object has no attribute 'user_items_'")
        obj.__dict__["user_items_"] = csr = parts.build()
        return csr


class FactorModel(BaseModel):
    """Base of every factorization model.

    Attributes (after ``fit``)
    --------------------------
    user_factors_ : ndarray of shape (n_users, n_factors)
    item_factors_ : ndarray of shape (n_items, n_factors)
    user_bias_ : ndarray of shape (n_users,)
        Zero for models without biases.
    item_bias_ : ndarray of shape (n_items,)
    global_mean_ : float
    user_vocab_, item_vocab_ : Vocabulary
        Raw ids of the rows of ``user_factors_`` and ``item_factors_``.
    rating_range_ : (float, float)
        Smallest and largest training rating; predictions are clipped to it.
    user_items_ : scipy.sparse.csr_matrix of shape (n_users, n_items)
        The training interactions, used to exclude seen items.
    loss_history_ : list of float
        Training loss per epoch, for iterative models.
    """

    user_items_ = _SeenMatrix()

    #: whether ``predict`` clips to the training rating range by default
    _clip_predictions = True

    # ------------------------------------------------------------------ fitting helpers
    def _check_size_params(self):
        """Check ``n_factors`` then ``n_epochs`` (ints >= 1) for ``_validate_params``; returns
        both as ints."""
        return (check_int("n_factors", self.n_factors, low=1),
                check_int("n_epochs", self.n_epochs, low=1))

    def _check_run_params(self):
        """Check ``num_threads`` (int >= 0 or None), ``verbose`` (bool) and ``random_state``, in
        that order, for the ``_validate_params`` of the SGD-trained models."""
        check_int("num_threads", self.num_threads, low=0, allow_none=True)
        check_bool("verbose", self.verbose)
        rng_from(self.random_state)  # raises on a bad seed before any work

    def _prepare(self, data, **kwargs):
        """Validate hyperparameters, turn ``data`` into Ratings (once per fit), and refuse up
        front a fit whose estimated working memory exceeds what is available."""
        from ._memory import check_fit_memory

        self._validate_params()
        ratings = as_ratings(data, **kwargs)
        check_fit_memory(self, ratings)
        return ratings

    def _set_data_state(self, ratings: Ratings):
        # which columns of a file or DataFrame were read as users, items, ratings, times (None
        # for arrays and matrices): kept with the model, so a wrong guess can be seen later
        self.data_columns_ = (None if ratings.source_columns is None
                              else {k: (None if v is None else str(v))
                                    for k, v in dict(ratings.source_columns).items()})
        self.user_vocab_ = ratings.user_vocab
        self.item_vocab_ = ratings.item_vocab
        self.rating_range_ = ratings.rating_range
        self.__dict__.pop("_seen_parts", None)  # a loaded model's, now stale
        self.user_items_ = ratings.csr

    def _set_factor_state(self, user_factors, item_factors, user_bias=None, item_bias=None,
                          global_mean=0.0, *, item_counts=None):
        # item_counts: ratings per item of user_items_, when the fit has them (saves a pass over
        # the ratings: a tenth of a second at 100M)
        # a fit whose arithmetic overflowed must fail here, never return a model that scores NaN
        self._check_finite_fit(user_factors=user_factors, item_factors=item_factors,
                               user_bias=user_bias, item_bias=item_bias, global_mean=global_mean)
        P = np.ascontiguousarray(user_factors)
        Q = np.ascontiguousarray(item_factors)
        dtype = P.dtype
        self._forget_kept()  # derived from the old factors (and would keep them alive)
        self.user_factors_ = P
        self.item_factors_ = Q
        self.user_bias_ = (np.zeros(P.shape[0], dtype) if user_bias is None
                           else np.ascontiguousarray(user_bias, dtype=dtype))
        self.item_bias_ = (np.zeros(Q.shape[0], dtype) if item_bias is None
                           else np.ascontiguousarray(item_bias, dtype=dtype))
        self.global_mean_ = float(global_mean)
        csr = getattr(self, "user_items_", None)
        if csr is not None and csr.shape == (P.shape[0], Q.shape[0]):
            # A user or item with no training data (possible when a split shares its vocabulary
            # with the full data) keeps whatever its initialisation left; zero it so it scores
            # with the fallback (mean + the other side's bias) instead of noise.
            empty_u = np.diff(csr.indptr) == 0
            empty_i = (column_counts(csr.indices, Q.shape[0]) if item_counts is None
                       else np.asarray(item_counts)) == 0
            for M, b, empty in ((P, self.user_bias_, empty_u), (Q, self.item_bias_, empty_i)):
                if empty.any():
                    M[empty] = 0
                    b[empty] = 0
        _guard.check_fit(self)  # warns (FitWarning) on a collapsed, blown-up or useless fit

    #: the hyperparameters that can make a fit overflow, each with the way to move it, named by
    #: :class:`DivergenceError` messages (only those the model has are named)
    _divergence_params = (("learning_rate", "lower"), ("regularization", "lower"),
                          ("init_std", "lower"), ("init_scale", "lower"))

    def _divergence_hint(self):
        """``"lower learning_rate (now 0.5) or ..."``: how to keep a fit finite."""
        params = self.get_params()
        parts = [f"{way} {name} (now {params[name]!r})" for name, way in self._divergence_params
                 if params.get(name) is not None]
        hint = (", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1
                else "".join(parts) or "rescale the ratings")
        return hint + self._ratings_note()

    def _ratings_note(self):
        """A note on rescaling when the training ratings are large, else ``""``."""
        lo_hi = getattr(self, "rating_range_", None)
        if lo_hi is None or max(abs(float(v)) for v in lo_hi) <= 1e3:
            return ""
        return " (ratings span {:g}..{:g}: rescaling them to a few units helps)".format(*lo_hi)

    def _check_finite_fit(self, **state):
        """Raise :class:`DivergenceError` if any array or number of ``state`` is not finite."""
        for name, value in state.items():
            if value is None:
                continue
            a = np.asarray(value)
            bad = count_nonfinite(a)
            if bad:
                raise DivergenceError(
                    f"{type(self).__name__} training diverged: {bad} of {a.size} values of "
                    f"{name} are NaN or infinite (the float arithmetic overflowed); "
                    f"{self._divergence_hint()}")

    def _seen(self):
        """``user_items_``, or the :class:`SeenParts` it will be built from (enough for the
        top-N kernels, which read only ``indptr`` and ``indices``)."""
        parts = self.__dict__.get("_seen_parts")
        return self.user_items_ if parts is None else parts

    def _check_fitted(self):
        if not hasattr(self, "user_factors_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(data) first")

    @property
    def n_users_(self):
        self._check_fitted()
        return self.user_factors_.shape[0]

    @property
    def n_items_(self):
        self._check_fitted()
        return self.item_factors_.shape[0]

    # ------------------------------------------------------------------ scoring
    def _score_pairs(self, uidx, iidx):
        """Raw scores for index pairs, -1 meaning unknown: falls back to biases and mean."""
        uidx = np.asarray(uidx, dtype=np.int64)
        iidx = np.asarray(iidx, dtype=np.int64)
        out = np.full(uidx.shape, self.global_mean_, dtype=np.float64)
        ku, ki = uidx >= 0, iidx >= 0
        out[ku] += self.user_bias_[uidx[ku]]
        out[ki] += self.item_bias_[iidx[ki]]
        both = np.flatnonzero(ku & ki)
        P, Q = self.user_factors_, self.item_factors_
        for s in range(0, both.size, 1 << 20):  # chunks keep the gathered factors small
            sel = both[s:s + (1 << 20)]
            out[sel] += np.einsum("ij,ij->i", P[uidx[sel]], Q[iidx[sel]], dtype=np.float64)
        return out

    def predict(self, users, items, *, clip=None, unknown="fallback"):
        """Predicted ratings for (user, item) pairs given by raw ids.

        Parameters
        ----------
        users, items : scalar or array-like of shape (m,)
            Raw ids, paired position by position. ``users`` may also be the result of
            :meth:`fold_in`: its rows pair with ``items`` position by position, and a single
            folded-in user is scored against every item of ``items``.
        clip : bool, optional
            Clip to ``rating_range_``; default is the model's (True for rating models).
        unknown : {"fallback", "error"}, default="fallback"
            With ``"fallback"`` a user or item unseen in training is scored with what is known:
            the global mean plus the known side's bias (0 plus bias for models without a mean).
            With ``"error"`` an unknown id raises ``KeyError``.

        Returns
        -------
        ndarray of float64, shape (m,)
        """
        self._check_fitted()
        if unknown not in ("fallback", "error"):
            raise ValueError(f"unknown must be 'fallback' or 'error', got {unknown!r}")
        mode = "mask" if unknown == "fallback" else "error"
        if isinstance(users, FoldedUsers):  # new users: their own factors and biases
            out = self._score_folded(users, self.item_vocab_.lookup(items, unknown=mode))
            if self._clip_predictions if clip is None else clip:
                np.clip(out, *self.rating_range_, out=out)
            return out
        uidx = self.user_vocab_.lookup(users, unknown=mode)
        iidx = self.item_vocab_.lookup(items, unknown=mode)
        if uidx.shape != iidx.shape:
            raise ValueError(f"users and items must have the same length, got {uidx.size} and "
                             f"{iidx.size}")
        out = self._score_pairs(uidx, iidx)
        if self._clip_predictions if clip is None else clip:
            np.clip(out, *self.rating_range_, out=out)
        return out

    def _score_folded(self, folded, iidx):
        """Raw scores of folded-in users (rows of ``folded``) with item indices (-1: unknown)."""
        U = np.asarray(folded.factors)
        bias = np.asarray(folded.bias, dtype=np.float64).reshape(-1)
        k = self.item_factors_.shape[1]
        if U.ndim != 2 or U.shape[1] != k or bias.shape != (U.shape[0],):
            raise ValueError(f"folded-in users need factors of shape (m, {k}) and bias of shape "
                             f"(m,), got {U.shape} and {bias.shape}")
        iidx = np.asarray(iidx, dtype=np.int64).reshape(-1)
        m = U.shape[0]
        if m == 1:
            rows = np.zeros(iidx.size, dtype=np.int64)
        elif m == iidx.size:
            rows = np.arange(m)
        else:
            raise ValueError(f"{m} folded-in users pair with as many items, or one user with any "
                             f"number; got {iidx.size} items")
        out = self.global_mean_ + bias[rows]
        known = np.flatnonzero(iidx >= 0)
        if known.size:
            it = iidx[known]
            out[known] += self.item_bias_[it] + np.einsum(
                "ij,ij->i", U[rows[known]], self.item_factors_[it], dtype=np.float64)
        return out

    def reconstruct(self):
        """The dense user x item score matrix ``P @ Q.T`` (+ biases), unclipped.

        Returns
        -------
        ndarray of shape (n_users, n_items)
            The notebook's ``np.dot(user_matrix, item_matrix)``.
        """
        self._check_fitted()
        cells = self.n_users_ * self.n_items_
        if cells > 2**28:
            raise MemoryError(f"reconstruct() would build {cells} cells; use predict or recommend")
        out = self.user_factors_ @ self.item_factors_.T
        if self.global_mean_ or self.user_bias_.any() or self.item_bias_.any():
            out = out + self.global_mean_ + self.user_bias_[:, None] + self.item_bias_[None, :]
        return out

    # ------------------------------------------------------------------ model files
    def save(self, path):
        """Write the fitted model to one file (arrays + JSON header, no pickle), atomically.

        Load it back with :func:`mfrec.load`; the loaded model predicts and recommends exactly
        as this one. Returns the path written. See :mod:`mfrec.persist`.
        """
        from ..persist import save_model
        return save_model(self, path)

    # ------------------------------------------------------------------ serving: top-N, similar, fold-in
    # One block for the serving API every model shares. Scores rank by
    # ``item_bias_[i] + user_factors_[u] @ item_factors_[i]`` (the global mean and the user bias do
    # not change a user's ranking); returned scores are the model's full scores.

    #: how :meth:`fold_in` solves for new users: ``"ridge"`` (closed form on the item factors, the
    #: ALS solution) or ``"sgd"`` (SGD epochs with the item side held fixed, for SGD-trained
    #: models). Models with another objective override :meth:`_fold_in_solve`.
    _fold_in_method = "ridge"

    def _serving_threads(self):
        return getattr(self, "num_threads", None)

    def recommend(self, users, n=10, *, exclude_seen=True, items=None, exclude=None):
        """Top-``n`` items for each user, best first.

        Parameters
        ----------
        users : scalar, array-like of shape (m,) or FoldedUsers
            Raw user ids known to the model (an unknown id raises ``KeyError`` naming it), or the
            result of :meth:`fold_in` for users that were not in training. A single id is a batch
            of one.
        n : int, default=10
            Number of items per user. A larger ``n`` than there are candidates (the catalogue,
            or ``items``) is capped at that number: the arrays have ``min(n, n_candidates)``
            columns, and nothing is allocated for the rest.
        exclude_seen : bool, default=True
            Leave out the items each user interacted with in training (for folded-in users, the
            items given to :meth:`fold_in`).
        items : array-like of raw item ids, optional
            Rank only these candidates (default: the whole catalogue).
        exclude : array-like of raw item ids, optional
            Items never recommended to anyone in this call.

        Returns
        -------
        ids : ndarray of shape (m, min(n, n_candidates))
            Raw item ids. Where a user has fewer than ``n`` candidates left, the row ends in
            padding: score ``-inf`` and id -1 (integer ids), NaN (float ids), ``""`` (string ids)
            or None (other ids). Test ``np.isfinite(scores)`` to tell padding apart.
        scores : ndarray of float64, shape (m, min(n, n_candidates))
            The model's score (as :meth:`predict` with ``clip=False``) of each recommended item.

        Notes
        -----
        Users are scored in blocks against tiles of the catalogue with float32 matrix products and
        a partial selection per user, in parallel (``num_threads`` of the model); all user x item
        scores are never held at once. A few users (up to 2**22 user x item scores) are scored by
        NumPy instead, without starting Numba or threads, against a float32 copy of the item
        factors transposed (catalogues up to 2**25 factor cells), which is made by the first
        call and kept on the model. Kept arrays follow the model's when these are replaced (by
        ``fit``, ``load`` or assignment); after changing a factor array in place, assign it
        again.
        """
        from .._threads import thread_context
        from .._validation import check_bool, check_int
        from ..kernels import topn_numpy

        self._check_fitted()
        n = check_int("n", n, low=1)
        exclude_seen = check_bool("exclude_seen", exclude_seen)
        if isinstance(users, FoldedUsers):
            U = users.factors
            ubias = np.asarray(users.bias, dtype=np.float64)
            seen = users.seen
            rows = np.arange(U.shape[0], dtype=np.int64)
            if U.ndim != 2 or U.shape[1] != self.item_factors_.shape[1]:
                raise ValueError(f"folded-in factors must have shape (m, {self.item_factors_.shape[1]}),"
                                 f" got {U.shape}")
        else:
            uidx = self.user_vocab_.lookup(users)
            if items is None and exclude is None:  # the common call: a lean path
                return self._recommend_rows(uidx, n, exclude_seen)
            U = self.user_factors_[uidx]
            ubias = self.user_bias_[uidx].astype(np.float64)
            seen = self.user_items_
            rows = uidx
        if not exclude_seen:
            rows = np.full(rows.shape, -1, dtype=np.int64)
        Q, bias, cand_idx, cand_pos = self._candidates(items, exclude)
        n = min(n, Q.shape[0])  # no row can hold more: a huge n allocates nothing
        U = np.ascontiguousarray(U, dtype=np.float32)
        indptr, indices = _csr_arrays(seen)
        if U.shape[0] * Q.shape[0] <= topn_numpy.MAX_CELLS:  # a few users: no Numba, no threads
            pos, sc = topn_numpy.topn_numpy(U, Q, bias, indptr, indices, rows.astype(np.int64),
                                            cand_pos, n)
        else:
            from ..kernels.topn import topn
            with thread_context(self._serving_threads()):
                pos, sc = topn(U, Q, bias, indptr, indices, rows.astype(np.int64), cand_pos, n)
        gidx = pos if cand_idx is None else np.where(pos >= 0, cand_idx[np.maximum(pos, 0)], -1)
        scores = sc.astype(np.float64)
        scores += self.global_mean_ + ubias[:, None]
        return _ids_with_padding(self.item_vocab_, gidx), scores

    def _recommend_rows(self, uidx, n, exclude_seen, *, compiled=False):
        """Top-``n`` of the whole catalogue for known users given by model row.

        What :meth:`recommend` answers without ``items`` or ``exclude``, with less work per
        call: the float32 item arrays (transposed, see :meth:`_topn_arrays`) and the int64 CSR
        offsets are kept between calls, and the selection reads each score row a few times
        instead of gathering it (see :func:`_topn_few`). Batches too large for that go to the
        parallel kernel, as before.

        Parameters
        ----------
        uidx : int array of shape (m,)
            Rows of ``user_factors_`` (already looked up).
        n : int
            Already checked (>= 1); capped at the number of items.
        exclude_seen : bool
        compiled : bool, default=False
            Select with the compiled kernel (see :func:`_topn_few`): the same answers, faster
            per user, for a caller that has Numba loaded anyway (the service). The default
            stays in NumPy: no Numba import for a one-off call.

        Returns
        -------
        ids, scores : as :meth:`recommend`
        """
        from ..kernels import topn_numpy

        Q, QT, bias, indptr, indices = self._topn_arrays()
        n = min(n, Q.shape[0])
        uidx = np.asarray(uidx, dtype=np.int64)
        rows = uidx if exclude_seen else np.full(uidx.shape, -1, dtype=np.int64)
        U = np.ascontiguousarray(self.user_factors_[uidx], dtype=np.float32)
        if U.shape[0] * Q.shape[0] > topn_numpy.MAX_CELLS:
            from .._threads import thread_context
            from ..kernels.topn import topn
            with thread_context(self._serving_threads()):
                pos, sc = topn(U, Q, bias, indptr, indices, rows, np.empty(0, np.int64), n)
        else:
            pos, sc = _topn_few(U, Q.T if QT is None else QT, bias, indptr, indices, rows, n,
                                compiled=compiled)
        scores = sc.astype(np.float64)
        scores += self.global_mean_ + self.user_bias_[uidx].astype(np.float64)[:, None]
        return _ids_with_padding(self.item_vocab_, pos), scores

    def _kept(self, key, sources, make):
        """``make()``, computed once and kept on the model while every array of ``sources`` is
        still the same object as when it was made.

        Fitting and loading assign new arrays, so what is kept follows them; an array changed in
        place is not noticed (assign it again, or call :meth:`_forget_kept`). Kept results are
        private state (not saved in model files).
        """
        kept = self.__dict__.setdefault("_kept_arrays", {})
        entry = kept.get(key)
        if entry is not None and len(entry[0]) == len(sources) and all(
                a is b for a, b in zip(entry[0], sources)):
            return entry[1]
        value = make()
        kept[key] = (tuple(sources), value)
        return value

    def _forget_kept(self):
        """Drop what :meth:`_kept` holds (the model's arrays were replaced or changed)."""
        self.__dict__.pop("_kept_arrays", None)

    def _topn_arrays(self):
        """The arrays the top-N paths take, converted once.

        Returns
        -------
        Q : float32 array of shape (n_items, k), C-contiguous
        QT : float32 array of shape (k, n_items), C-contiguous, or None
            ``Q.T`` as its own array, for the few-user products: BLAS scores one user against
            it (a row of accumulations over the items) several times faster than against
            ``Q.T`` as a view (an item-by-item dot product of length k). It costs a second
            copy of the item factors, so it is kept only up to ``_TRANSPOSED_MAX_CELLS``.
        bias : float32 array of shape (n_items,)
        indptr : int64 array, indices : int32 array
            The seen (training) CSR matrix.
        """
        Q, b, ui = self.item_factors_, self.item_bias_, self._seen()

        def make():
            Q32 = np.ascontiguousarray(Q, dtype=np.float32)
            QT = np.ascontiguousarray(Q32.T) if Q32.size <= _TRANSPOSED_MAX_CELLS else None
            return (Q32, QT, np.ascontiguousarray(b, dtype=np.float32), *_csr_arrays(ui))
        return self._kept("topn", (Q, b, ui), make)

    def _unit_factors_t(self, F):
        """``F`` (user or item factors, shape (c, k)) as float32 rows of unit length, zero rows
        left zero, transposed: a C-contiguous array of shape (k, c). Computed once per factor
        array (cosine similarity reads them on every call); transposed for the few-query
        products (see :meth:`_topn_arrays`)."""
        def make():
            F32 = np.asarray(F, dtype=np.float32)
            norms = np.linalg.norm(F32, axis=1)
            # zero vectors (e.g. never-trained rows) have no direction: cosine 0 with everything
            unit = (F32 / np.where(norms > 0, norms, 1)[:, None]).astype(np.float32, copy=False)
            return np.ascontiguousarray(unit.T)
        side = "item" if F is self.item_factors_ else "user" if F is self.user_factors_ else id(F)
        return self._kept(("unit", side), (F,), make)

    def _candidates(self, items, exclude):
        """(Q, bias, candidate index or None, candidate position map) for :func:`topn`."""
        Qall = self.item_factors_
        if items is None:
            cand_idx = None
            cand_pos = np.empty(0, dtype=np.int64)
            Q = np.ascontiguousarray(Qall, dtype=np.float32)
            bias = self.item_bias_.astype(np.float32, copy=True)
        else:
            cand_idx = np.unique(self.item_vocab_.lookup(items))
            if cand_idx.size == 0:
                raise ValueError("items must hold at least one candidate item id, got none")
            cand_pos = np.full(Qall.shape[0], -1, dtype=np.int64)
            cand_pos[cand_idx] = np.arange(cand_idx.size)
            Q = np.ascontiguousarray(Qall[cand_idx], dtype=np.float32)
            bias = self.item_bias_[cand_idx].astype(np.float32)
        if exclude is not None:
            eidx = self.item_vocab_.lookup(exclude)
            epos = eidx if cand_pos.size == 0 else cand_pos[eidx]
            bias[epos[epos >= 0]] = -np.inf
        return Q, bias, cand_idx, cand_pos

    def _similar(self, F, vocab, query, n):
        from .._threads import thread_context
        from .._validation import check_int
        from ..kernels import topn_numpy

        self._check_fitted()
        # capped: a query never lists itself, so at most all the others
        n = min(check_int("n", n, low=1), max(F.shape[0] - 1, 1))
        qidx = vocab.lookup(query)
        FnT = self._unit_factors_t(F)
        U = np.ascontiguousarray(FnT[:, qidx].T)
        m, c = qidx.size, FnT.shape[1]
        self_indptr = np.arange(m + 1, dtype=np.int64)  # each query masks itself
        args = (np.zeros(c, np.float32), self_indptr, qidx.astype(np.int32),
                np.arange(m, dtype=np.int64))
        if m * c <= topn_numpy.MAX_CELLS:  # a few queries: no Numba, no threads
            pos, sc = _topn_few(U, FnT, *args, n)
        else:
            from ..kernels.topn import topn
            with thread_context(self._serving_threads()):
                pos, sc = topn(U, np.ascontiguousarray(FnT.T), *args, np.empty(0, np.int64), n)
        return _ids_with_padding(vocab, pos), sc.astype(np.float64)

    def similar_items(self, items, n=10):
        """The ``n`` items most similar to each given item, by cosine of the item factors.

        Parameters
        ----------
        items : scalar or array-like of shape (m,)
            Raw item ids (unknown ids raise ``KeyError``).
        n : int, default=10
            Capped at ``n_items - 1`` (the query item itself is never listed).

        Returns
        -------
        ids : ndarray of shape (m, min(n, n_items - 1))
            Raw item ids, most similar first; the query item itself is left out. Padding as in
            :meth:`recommend`.
        scores : ndarray of float64, shape (m, min(n, n_items - 1))
            Cosine similarities in [-1, 1].
        """
        self._check_fitted()
        return self._similar(self.item_factors_, self.item_vocab_, items, n)

    def similar_users(self, users, n=10):
        """The ``n`` users most similar to each given user, by cosine of the user factors.

        Same shapes and conventions as :meth:`similar_items`.
        """
        self._check_fitted()
        return self._similar(self.user_factors_, self.user_vocab_, users, n)

    def fold_in(self, ratings, *, unknown_items="error"):
        """Factors for users who were not in training, from their ratings, without refitting.

        Parameters
        ----------
        ratings : mapping, tuple, sequence, DataFrame or Ratings
            One new user: a mapping ``{item_id: value}`` (or a pandas Series indexed by item id),
            a pair ``(item_ids, values)``, or a 1-D sequence of item ids (each value 1, for
            implicit feedback). Several new users: a DataFrame with ``user``, ``item`` and
            optionally ``rating`` columns, a triple ``(user_ids, item_ids, values)``, or a
            :class:`~mfrec.data.Ratings`. Item ids are raw ids of the trained model.
        unknown_items : {"error", "ignore"}, default="error"
            Item ids the model has not seen raise ``KeyError``, or are dropped.

        Returns
        -------
        FoldedUsers
            ``ids`` (raw ids of the new users, in first-appearance order; None for one user given
            without an id), ``factors`` of shape (m, n_factors), ``bias`` of shape (m,) and
            ``seen`` (their items, as a CSR matrix of shape (m, n_items)). Pass it to
            :meth:`recommend` or :meth:`predict` in place of user ids. A user with no ratings
            (``fold_in({})``) gets zero factors and bias: the fallback of an unknown user.

        Notes
        -----
        The vector solves the model's own objective for that user with the item side held
        fixed: a regularized least-squares solve for ALS-type models (closed form), a few SGD
        epochs for SGD-trained models, and each model's own criterion where it differs (the
        confidence-weighted solve of ImplicitALS, the pairwise ranking loss of BPR). Folding in a
        training user's own ratings gives back (close to) its trained vector.
        """
        import scipy.sparse as sp

        from .._validation import check_choice

        self._check_fitted()
        check_choice("unknown_items", unknown_items, ("error", "ignore"))
        ids, users, items, values = _parse_fold_in(ratings)
        iidx = self.item_vocab_.lookup(items, unknown="mask" if unknown_items == "ignore" else "error")
        keep = iidx >= 0
        if not keep.all():
            users, iidx, values = users[keep], iidx[keep], values[keep]
        m = 1 if ids is None else len(ids)
        order = np.lexsort((iidx, users))
        users, iidx, values = users[order], iidx[order], values[order]
        dup = (users[1:] == users[:-1]) & (iidx[1:] == iidx[:-1])
        if dup.any():
            first = int(np.flatnonzero(dup)[0])
            raise ValueError(f"fold_in got item {self.item_vocab_.ids[iidx[first]]!r} more than once "
                             f"for the same user; give each (user, item) pair once")
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=m), out=indptr[1:])
        iidx = iidx.astype(np.int32)
        P, bu = self._fold_in_solve(indptr, iidx, values)
        seen = sp.csr_matrix((values, iidx, indptr), shape=(m, self.item_factors_.shape[0]))
        return FoldedUsers(ids, np.ascontiguousarray(P, dtype=self.user_factors_.dtype),
                           np.asarray(bu, dtype=self.user_factors_.dtype), seen)

    def _fold_in_params(self):
        """Hyperparameters of the fold-in solve, as a dict.

        ``learning_rate`` and ``n_epochs`` (SGD fold-in only), ``regularization`` and
        ``bias_regularization``. Both regularizations are per rating (the SGD convention, also
        ALS with weighted lambda): the ridge solve adds ``regularization * n_ratings`` to the
        diagonal. The defaults read the model's attributes of those names; models whose
        hyperparameters are named otherwise override this.
        """
        def number(name, default, kind=float):
            value = getattr(self, name, default)
            # "auto" and other symbolic settings have no fold-in meaning: use the default
            return kind(value) if isinstance(value, (int, float, np.number)) and value else default

        # a fitted lambda (regularization_) wins over the hyperparameter it was derived from
        reg = float(getattr(self, "regularization_", number("regularization", 0.02)))
        return {"learning_rate": number("learning_rate", 0.005),
                "regularization": reg,
                "bias_regularization": number("bias_regularization", reg),
                "n_epochs": number("n_epochs", 20, int)}

    def _fold_in_fits_bias(self):
        """Whether the model has user biases (then fold-in estimates one too)."""
        return bool(np.any(self.user_bias_))

    def _fold_in_solve(self, indptr, items, values):
        """Factors and biases of new users from CSR rows of (item index, value).

        Parameters
        ----------
        indptr : int64 array of shape (m + 1,)
        items : int32 array of shape (nnz,)
            Item indices, sorted within each row.
        values : float32 array of shape (nnz,)

        Returns
        -------
        factors : ndarray of shape (m, n_factors)
        bias : ndarray of shape (m,)
        """
        params = self._fold_in_params()
        reg, reg_b = params["regularization"], params["bias_regularization"]
        fit_bias = self._fold_in_fits_bias()
        Q = self.item_factors_
        if self._fold_in_method == "sgd":
            from .._threads import thread_context
            from .._validation import rng_from, seed_from
            from ..kernels.topn import sgd_fold_in

            seed = seed_from(rng_from(getattr(self, "random_state", None)))
            with thread_context(self._serving_threads()):
                return sgd_fold_in(indptr, items, values.astype(np.float32),
                                   np.ascontiguousarray(Q, dtype=np.float32),
                                   self.item_bias_.astype(np.float32), np.float32(self.global_mean_),
                                   params["learning_rate"], reg, reg_b, params["n_epochs"],
                                   fit_bias, seed)
        if self._fold_in_method != "ridge":
            raise ValueError(f"_fold_in_method must be 'ridge' or 'sgd', got {self._fold_in_method!r}")
        m, k = indptr.size - 1, Q.shape[1]
        P = np.zeros((m, k))
        bu = np.zeros(m)
        for u in range(m):
            s, e = indptr[u], indptr[u + 1]
            if e == s:
                continue
            it = items[s:e]
            F = Q[it].astype(np.float64)
            if fit_bias:
                F = np.hstack([F, np.ones((e - s, 1))])
            t = values[s:e] - self.global_mean_ - self.item_bias_[it]
            A = F.T @ F
            A[np.diag_indices(k)] += reg * (e - s) + 1e-10
            if fit_bias:
                A[k, k] += reg_b * (e - s) + 1e-10
            x = np.linalg.solve(A, F.T @ t)
            P[u] = x[:k]
            if fit_bias:
                bu[u] = x[k]
        return P, bu


class MissingMixin:
    """For the models whose ``missing`` parameter may read the blanks as zeros (SVD, NMF,
    GradientDescent); put it before :class:`FactorModel` among the bases."""

    @property
    def _clip_predictions(self):
        # with blanks as zeros the scores are not on the rating scale: clipping would distort them
        return self.missing == "ignore"

    def _score_pairs(self, uidx, iidx):
        """As :meth:`FactorModel._score_pairs`; with ``missing="ignore"``, a pair whose user or
        item has no training rating (an unknown id, or a vocabulary row that was never rated,
        whose factors are zero) scores the mean training rating.

        These models have no biases and no global mean, so such a pair would otherwise score 0:
        clipped, the lowest rating on the scale, for every new item (on a panel set with three
        ratings per item, a tenth of the held-out ratings). With ``missing="zero"`` a blank *is*
        a zero, and 0 stays the answer.
        """
        out = super()._score_pairs(uidx, iidx)
        if self.missing != "ignore":
            return out
        uidx = np.asarray(uidx, dtype=np.int64)
        user_cold = uidx < 0
        user_cold[~user_cold] = ~self._cold_fallback()[1][uidx[~user_cold]]
        return self._mean_where_cold(out, user_cold, iidx)

    def _score_folded(self, folded, iidx):
        """As :meth:`FactorModel._score_folded`, with the fallback of :meth:`_score_pairs` for
        folded-in users without ratings and items without training ratings."""
        out = super()._score_folded(folded, iidx)
        if self.missing != "ignore":
            return out
        iidx = np.asarray(iidx, dtype=np.int64).reshape(-1)
        U = np.asarray(folded.factors)
        rows = np.zeros(iidx.size, np.int64) if U.shape[0] == 1 else np.arange(U.shape[0])
        seen = folded.seen
        empty = (np.diff(seen.indptr) == 0 if seen is not None and hasattr(seen, "indptr")
                 else ~U.any(axis=1))
        return self._mean_where_cold(out, empty[rows], iidx)

    def _mean_where_cold(self, out, user_cold, iidx):
        """``out`` with the mean training rating where the user is cold (``user_cold``) or the
        item (``iidx``: -1 unknown) has no training rating."""
        mean, _, rated_i = self._cold_fallback()
        iidx = np.asarray(iidx, dtype=np.int64).reshape(out.shape)
        cold = user_cold | (iidx < 0)
        cold[~cold] = ~rated_i[iidx[~cold]]
        out[cold] = mean
        return out

    def _cold_fallback(self):
        """(mean training rating, users with a rating, items with a rating), kept per fit."""
        seen = self._seen()

        def make():
            data = np.asarray(seen.data)
            mean = float(data.mean(dtype=np.float64)) if data.size else 0.0
            rated_u = np.diff(np.asarray(seen.indptr)) > 0
            rated_i = column_counts(np.asarray(seen.indices), self.item_factors_.shape[0]) > 0
            return mean, rated_u, rated_i
        return self._kept("cold", (seen,), make)


class FoldedUsers(NamedTuple):
    """New users folded into a fitted model (see :meth:`FactorModel.fold_in`).

    Attributes
    ----------
    ids : ndarray of shape (m,) or None
        Raw ids of the users, when they were given.
    factors : ndarray of shape (m, n_factors)
    bias : ndarray of shape (m,)
    seen : scipy.sparse.csr_matrix of shape (m, n_items)
        The items (model indices) and values each user was folded in from.
    """

    ids: object
    factors: np.ndarray
    bias: np.ndarray
    seen: object


#: the transposed item factors are kept (see FactorModel._topn_arrays) up to this many cells
#: (128 MiB of float32)
_TRANSPOSED_MAX_CELLS = 1 << 25
#: catalogues up to this many factor cells (4 MiB of float32) stay in the CPU caches: one
#: user at a time costs no more than a batch product there
_ONE_BY_ONE_MAX_CELLS = 1 << 20
#: larger catalogues are read from memory: from this many users on, one product for all of
#: them reads the factors once (a BLAS product of fewer rows costs more than one row at a time)
_BATCH_PRODUCT_MIN_USERS = 6


def _topn_few(U, QT, item_bias, seen_indptr, seen_indices, seen_rows, n, *, compiled=False):
    """Best ``n`` items per user by NumPy, for a few users; the answers of
    :func:`mfrec.kernels.topn_numpy.topn_numpy` with every item a candidate (up to the float32
    rounding of the products, which depends on the shape of the BLAS call).

    Users are scored one at a time (``U[r] @ QT``: each user's scores are then the same bits
    whoever else is in the call), unless the catalogue is large and there are at least
    ``_BATCH_PRODUCT_MIN_USERS`` of them: then in one product, which reads the item factors once
    for all. Each score row is then selected in place (see :func:`_select_row`).

    Parameters
    ----------
    U : float32 array of shape (m, k)
    QT : float32 array of shape (k, c)
        The item factors, transposed (a view of ``Q`` works too, more slowly).
    item_bias : float32 array of shape (c,)
    seen_indptr, seen_indices, seen_rows, n
        As for :func:`mfrec.kernels.topn.topn` (no candidate map).
    compiled : bool, default=False
        Select with :func:`mfrec.kernels.topn.select_topn` instead of :func:`_select_row`:
        the same answers in less than half the time (one pass, no NumPy calls: 25 µs a user
        against 60 µs over 40,000 items).

    Returns
    -------
    idx : int64 array of shape (m, n)
    scores : float32 array of shape (m, n)
    """
    m, c = U.shape[0], QT.shape[1]
    if m >= _BATCH_PRODUCT_MIN_USERS and QT.size > _ONE_BY_ONE_MAX_CELLS:
        S = np.dot(U, QT)
    else:
        S = np.empty((m, c), np.float32)
        for r in range(m):
            np.dot(U[r], QT, out=S[r])
    if compiled:
        from ..kernels.topn import select_topn
        return select_topn(S, item_bias, seen_rows, seen_indptr, seen_indices, n)
    S += item_bias[None, :]
    idx = np.full((m, n), -1, np.int64)
    out = np.full((m, n), -np.inf, np.float32)
    for r in range(m):
        _select_row(S[r], seen_rows[r], seen_indptr, seen_indices, n, idx[r], out[r])
    return idx, out


#: a score row at least this many times ``n`` long finds its cut from every
#: ``_SAMPLE_STEP``-th score first (see _select_row)
_SAMPLE_MIN = 64
_SAMPLE_STEP = 8


def _select_row(s, su, seen_indptr, seen_indices, n, idx_out, sc_out):
    """Mask user ``su``'s seen items in the score row ``s`` (modified) and write its best ``n``
    into ``idx_out``/``sc_out``: ties to the lower position, ``-inf`` and NaN never chosen
    (``topn_numpy``'s answers).

    A cut ``t`` comes first: the ``n``-th largest of every ``_SAMPLE_STEP``-th score of a long
    row (of all of them in a short one). When at least ``n`` scores are ``>= t`` (NaN never is),
    the ``n``-th largest score is ``>= t`` too, so the best ``n`` are among those few candidates
    and are chosen there exactly. Reading the row twice (the sample's partition, one
    comparison) costs a fraction of partitioning it all. NumPy sorts NaN above every number,
    so a sample with NaN among its best, or a row with fewer than ``n`` finite scores, gives a
    cut that is NaN or ``-inf`` or too few candidates; those rows take the general selection
    (:func:`_select_general`). (Selecting all rows of a batch with whole-batch NumPy calls was
    measured slower: the sample's partition along rows and the 2-D ``nonzero`` cost more than
    the calls they save.)
    """
    if su >= 0:
        s[seen_indices[seen_indptr[su]:seen_indptr[su + 1]]] = -np.inf
    c = s.size
    if n < c:
        sample = s[::_SAMPLE_STEP] if c >= _SAMPLE_MIN * n else s
        t = np.partition(sample, sample.size - n)[sample.size - n]
        if t > -np.inf:  # false for NaN too
            cand = np.flatnonzero(s >= t)  # increasing positions
            if cand.size >= n:
                vals = s[cand]  # finite: no NaN, no -inf
                kth = np.partition(vals, cand.size - n)[cand.size - n]  # the n-th largest
                keep = vals > kth
                ties = np.flatnonzero(vals == kth)
                keep[ties[:n - int(np.count_nonzero(keep))]] = True  # equal scores: lowest first
                sel = cand[keep]
                order = sel[np.argsort(-vals[keep], kind="stable")]
                idx_out[:n] = order
                sc_out[:n] = s[order]
                return
    _select_general(s, n, idx_out, sc_out)


def _select_general(s, n, idx_out, sc_out):
    """The best ``n`` of the (masked) score row ``s`` into ``idx_out``/``sc_out``, as
    ``topn_numpy`` selects: ``-inf`` and NaN dropped, ties to the lower position."""
    ok = np.flatnonzero(s > -np.inf)  # drops -inf and NaN
    if ok.size > n:
        vals = s[ok]
        kth = np.partition(vals, ok.size - n)[ok.size - n]
        above = ok[vals > kth]
        ok = np.concatenate([above, ok[vals == kth][:n - above.size]])
    order = ok[np.lexsort((ok, -s[ok]))]  # best first, ties by position
    idx_out[:order.size] = order
    sc_out[:order.size] = s[order]


def _csr_arrays(csr):
    """(indptr int64, indices int32) of a CSR matrix: one dtype signature for the kernels."""
    indices = csr.indices if csr.indices.dtype == np.int32 or csr.shape[1] >= 2**31 \
        else csr.indices.astype(np.int32)
    return csr.indptr.astype(np.int64, copy=False), indices


def _ids_with_padding(vocab, idx):
    """Raw ids of indices, with the documented padding for -1."""
    ids = vocab.ids
    valid = idx >= 0
    kind = ids.dtype.kind
    if kind in "iu":
        out = np.full(idx.shape, -1, dtype=np.int64 if kind == "u" else ids.dtype)
    elif kind == "f":
        out = np.full(idx.shape, np.nan, dtype=ids.dtype)
    elif kind in "US":
        out = np.full(idx.shape, "", dtype=ids.dtype)
    else:
        out = np.full(idx.shape, None, dtype=object)
    out[valid] = ids[idx[valid]]
    return out


def _parse_fold_in(ratings):
    """(user ids or None, user codes, raw item ids, float32 values) of fold-in input."""
    from collections.abc import Mapping

    import pandas as pd

    from ..data import Ratings, _as_id_array, _check_values

    if isinstance(ratings, Ratings):
        users = ratings.user_index.astype(np.int64)
        present = np.unique(users)
        codes = np.searchsorted(present, users)
        return (ratings.user_vocab.ids[present], codes, ratings.item_vocab.to_ids(ratings.csr.indices),
                ratings.csr.data.astype(np.float32))
    if isinstance(ratings, pd.DataFrame):
        for col in ("user", "item"):
            if col not in ratings.columns:
                raise ValueError(f"a fold-in DataFrame needs 'user' and 'item' columns (and "
                                 f"optionally 'rating'), got columns {list(ratings.columns)}")
        values = (ratings["rating"].to_numpy() if "rating" in ratings.columns
                  else np.ones(len(ratings)))
        return _batch(ratings["user"].to_numpy(), ratings["item"].to_numpy(), values)
    if isinstance(ratings, tuple) and len(ratings) == 3:
        return _batch(*ratings)
    if isinstance(ratings, (Mapping, pd.Series)):
        items = list(ratings.keys()) if isinstance(ratings, Mapping) else ratings.index.to_numpy()
        values = list(ratings.values()) if isinstance(ratings, Mapping) else ratings.to_numpy()
        items = _as_id_array(np.asarray(items) if len(items) else np.empty(0))
    elif isinstance(ratings, tuple) and len(ratings) == 2:
        items, values = _as_id_array(ratings[0]), ratings[1]
    elif isinstance(ratings, (list, np.ndarray, pd.Index)) and np.ndim(ratings) == 1:
        items = _as_id_array(ratings)
        values = np.ones(items.size)
    else:
        raise TypeError(f"fold_in takes a mapping {{item: value}}, a pair (items, values), a "
                        f"sequence of items, a (users, items, values) triple, a DataFrame or "
                        f"Ratings; got {type(ratings).__name__}")
    values = _check_values(np.asarray(values).reshape(-1), "fold-in values")
    if values.size != items.size:
        raise ValueError(f"fold_in got {items.size} items but {values.size} values")
    return None, np.zeros(items.size, dtype=np.int64), items, values


def _batch(users, items, values):
    import pandas as pd

    from ..data import _as_id_array, _check_values

    users, items = _as_id_array(users), _as_id_array(items)
    values = _check_values(np.asarray(values).reshape(-1), "fold-in values")
    if not (users.size == items.size == values.size):
        raise ValueError(f"fold_in got {users.size} users, {items.size} items and {values.size} "
                         f"values; they must have the same length")
    codes, uniques = pd.factorize(users, sort=False)
    if (codes < 0).any():
        raise ValueError("fold_in user ids hold missing values (None/NaN)")
    return np.asarray(uniques), codes.astype(np.int64), items, values


def ridge_fold_in(Q, indptr, items, values, reg, *, zero_fill=False, nonneg=False):
    """Least-squares user vectors against fixed item factors, one CSR row per user.

    Solves ``min_p |t - F p|^2 + reg |p|^2`` per row, where ``F`` holds the factors of the rated
    items and ``t`` the ratings, or — with ``zero_fill`` — ``F`` is every item and ``t`` the
    row with zeros in its blanks (the objective of the ``missing="zero"`` models).

    Parameters
    ----------
    Q : ndarray of shape (n_items, k)
    indptr : ndarray of shape (m + 1,)
    items, values : ndarrays of shape (nnz,)
    reg : float
        0 gives the minimum-norm least-squares solution.
    zero_fill : bool, default=False
    nonneg : bool, default=False
        Non-negative least squares (NMF).

    Returns
    -------
    ndarray of float64, shape (m, k)
    """
    from scipy.optimize import nnls

    Q = np.asarray(Q, dtype=np.float64)
    n_items, k = Q.shape
    m = indptr.size - 1
    P = np.zeros((m, k))
    gram_all = Q.T @ Q if zero_fill else None
    for u in range(m):
        s, e = indptr[u], indptr[u + 1]
        if e == s:
            continue
        it, t = items[s:e], np.asarray(values[s:e], dtype=np.float64)
        F = Q[it]
        if nonneg:
            if zero_fill:
                target = np.zeros(n_items)
                target[it] = t
                F, t = Q, target
            A = np.vstack([F, np.sqrt(reg) * np.eye(k)]) if reg > 0 else F
            b = np.concatenate([t, np.zeros(k)]) if reg > 0 else t
            P[u] = nnls(A, b)[0]
            continue
        gram = gram_all if zero_fill else F.T @ F
        rhs = F.T @ t  # blanks contribute zeros to the right-hand side
        if reg > 0:
            P[u] = np.linalg.solve(gram + reg * np.eye(k), rhs)
        else:
            P[u] = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return P
