"""Approximate top-N over a fitted model's item factors (extra ``ann``).

A model scores item ``i`` for user ``u`` as ``mu + b_u + b_i + p_u . q_i``; for ranking one user's
items, ``mu + b_u`` is a constant, so the top-N is a maximum-inner-product search (MIPS) of
``[p_u, 1]`` against ``[q_i, b_i]``. Graph indexes answer nearest-neighbour queries in a metric
space, so the item vectors are lifted by one coordinate (Bachrach et al., 2014):

    x_i = [q_i, b_i, sqrt(R^2 - |[q_i, b_i]|^2)],   y_u = [p_u, 1, 0],   R = max_i |[q_i, b_i]|

which makes ``|y_u - x_i|^2 = |y_u|^2 + R^2 - 2 (p_u . q_i + b_i)``: the nearest items in L2 are
exactly the best-scored ones.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ItemIndex", "mips_lift"]


def mips_lift(item_factors, item_bias=None):
    """Lift item vectors so that L2 nearest neighbours are the maximum inner products.

    Parameters
    ----------
    item_factors : ndarray of shape (n_items, k)
    item_bias : ndarray of shape (n_items,), optional
        Appended as one more coordinate (queries get a 1 there). Default: zeros.

    Returns
    -------
    X : float32 ndarray of shape (n_items, k + 2)
        The lifted item vectors.
    lift_query : callable
        Maps user factors of shape (m, k) to float32 queries of shape (m, k + 2).
    """
    Q = np.asarray(item_factors, dtype=np.float32)
    if Q.ndim != 2:
        raise ValueError(f"item_factors must be 2-D, got shape {Q.shape}")
    b = (np.zeros(Q.shape[0], np.float32) if item_bias is None
         else np.asarray(item_bias, dtype=np.float32).reshape(-1))
    if b.shape[0] != Q.shape[0]:
        raise ValueError(f"item_bias must have {Q.shape[0]} entries, got {b.shape[0]}")
    if not (np.isfinite(Q).all() and np.isfinite(b).all()):
        raise ValueError("item factors and biases must be finite")
    X = np.empty((Q.shape[0], Q.shape[1] + 2), dtype=np.float32)
    X[:, :-2] = Q
    X[:, -2] = b
    sq = np.einsum("ij,ij->i", X[:, :-1], X[:, :-1], dtype=np.float64)
    R2 = sq.max() if sq.size else 0.0
    X[:, -1] = np.sqrt(np.maximum(R2 - sq, 0.0))
    k = Q.shape[1]

    def lift_query(user_factors):
        P = np.asarray(user_factors, dtype=np.float32)
        if P.ndim != 2 or P.shape[1] != k:
            raise ValueError(f"user factors must have shape (m, {k}), got {P.shape}")
        return mips_lift_query(P)

    return X, lift_query


def mips_lift_query(user_factors):
    """The queries matching :func:`mips_lift`: ``[p_u, 1, 0]``, float32 of shape (m, k + 2)."""
    P = np.asarray(user_factors, dtype=np.float32)
    Y = np.zeros((P.shape[0], P.shape[1] + 2), dtype=np.float32)
    Y[:, :-2] = P
    Y[:, -2] = 1.0
    return Y


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("mfrec.index needs faiss: pip install 'mfrec[ann]'") from e
    return faiss


def _fingerprint(model):
    """A short digest of what an index depends on: the item factors and biases."""
    import hashlib
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(model.item_factors_, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(model.item_bias_, dtype=np.float32).tobytes())
    return h.hexdigest()[:32]


#: users searched per faiss call: large enough that faiss's threads and its quantizer's matrix
#: product run at full rate, small enough that the candidate arrays stay a few tens of MB
_QUERY_BLOCK = 32_768


class ItemIndex:
    """Approximate top-N for a fitted model: an inverted-file index over its lifted item vectors.

    The items, lifted by :func:`mips_lift` so that L2 nearest neighbours are the best-scored
    items, are clustered by k-means into ``n_lists`` lists. A user is compared (in L2, lifted)
    with every list's centroid, and only the items of the ``n_probe`` nearest lists are
    scanned. The scan ranks them by the inner product ``[p_u, 1, 0] . [q_i, b_i, lift_i] =
    p_u . q_i + b_i`` (faiss ``IndexIVFFlat`` with an L2 quantizer and an inner-product scan):
    inside the probed lists this is the same order as the lifted L2 distance, and it is the
    model's own float32 score, computed as exactly as :meth:`FactorModel.recommend` computes it,
    so no separate re-scoring is needed. Only items in lists that were not probed can be missed.

    Seen items are excluded by asking faiss for the ``n`` best probed items plus as many as the
    user has seen items in the probed lists (counted from each item's list; rounded up to a
    power of two, so that users are searched in a few large batches), and dropping the seen
    ones; both steps are small Numba kernels. Counting only the seen items in the probed lists,
    not all of them, keeps the number of candidates near ``n`` (on the 200k-item model below, a
    user's 31 seen items on average put 8 in the probed lists), and faiss's scan slows with that
    number. A user for whom the probed lists held fewer than ``n`` unseen items (or who saw more
    than ``max_seen``) is answered by exact scoring, so every row is complete.

    Parameters
    ----------
    n_lists : int, optional
        Number of lists; default ``2 * sqrt(n_items)`` (at most ``n_items``), 894 for 200,000
        items.
    n_probe : int, optional
        Lists scanned per user; default ``max(8, n_lists // 48)``, 18 of 894. More is slower and
        closer to exact (``n_probe = n_lists`` is exact). Both defaults were chosen on a
        validation sample of 20,000 users of a 200,000-item model (``ImplicitALS``, k=64, synth
        25M; ``benchmarks/results/topn_all.md``), seen items excluded. k-means in the lifted
        space makes very uneven lists (most hold no item or one; 5% of them hold 83% of the
        items, and a user's probes rarely reach those), so recall rises in steps as a user's
        few relevant lists are reached, then stays flat: with 894 lists, recall@10 was 0.861 at
        8 lists per 1024, 0.939 at 11.5 and 0.990 from 16 to 32, at 19-28x the exact speed; 447
        lists levelled at 0.989, 1,788 lists at 0.975 (and ran slower). 1/48 (21 per 1024) sits
        inside the flat part, with margin on both sides; users then scan about 255 items each.
    max_seen : int, default=2048
        Users with more training items than this are answered by exact scoring (the index
        would need too many candidates to be sure of ``n`` unseen ones).
    num_threads : int, default=0
        Threads for building and searching (faiss's OpenMP threads and the selection kernel's);
        0 means every core.
    random_state : int, default=0
        Seed of the k-means clustering.

    Attributes
    ----------
    centroids_ : float32 ndarray of shape (n_lists, n_factors + 2)
        The list centroids; with the model they determine the whole index (what ``save``
        writes).
    fingerprint_ : str
        Digest of the item factors and biases the index was built from.

    Notes
    -----
    Requires the ``ann`` extra (faiss-cpu). faiss (HNSW graph and inverted file), hnswlib and
    usearch were compared on one 200k-item model (``benchmarks/results/ann.md``). With seen
    items excluded, this index found 98.9% of the exact top-10 at 25x the exact speed after a
    9 s build; hnswlib's graph over the same lifted vectors 98.8% at 15x (99.7% at 12x) after a
    64 s build. Without seen exclusion, faiss's HNSW graph and usearch's missed a third or more
    of the top-10 at every search effort measured. An inverted file is also fully determined by
    its centroids, a small array that :meth:`load` validates like any model array before
    rebuilding the lists, where a graph index would have to be read back through native code
    (or rebuilt).
    """

    def __init__(self, *, n_lists=None, n_probe=None, max_seen=2048, num_threads=0,
                 random_state=0):
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.max_seen = max_seen
        self.num_threads = num_threads
        self.random_state = random_state

    def _check_params(self, n_items):
        from ._validation import check_int
        n_lists = check_int("n_lists", self.n_lists, low=1, allow_none=True)
        n_lists = min(n_items, n_lists or max(1, int(2 * np.sqrt(n_items))))
        n_probe = check_int("n_probe", self.n_probe, low=1, allow_none=True)
        n_probe = min(n_lists, n_probe or max(8, n_lists // 48))
        check_int("max_seen", self.max_seen, low=0)
        check_int("num_threads", self.num_threads, low=0)
        check_int("random_state", self.random_state, low=0)
        return n_lists, n_probe

    def fit(self, model):
        """Build the index from a fitted model's item factors; returns self."""
        model._check_fitted()
        faiss = _faiss()
        X = self._item_vectors(model)
        n_lists, _ = self._check_params(X.shape[0])
        with self._faiss_threads(faiss):
            km = faiss.Kmeans(X.shape[1], n_lists, niter=20, seed=int(self.random_state),
                              spherical=False, verbose=False)
            km.train(X)
        self._build(model, np.ascontiguousarray(km.centroids, dtype=np.float32))
        return self

    @staticmethod
    def _item_vectors(model):
        return mips_lift(model.item_factors_, model.item_bias_)[0]

    def _faiss_threads(self, faiss):
        """Context: faiss's OpenMP threads set to ``num_threads`` (every core for 0), then
        restored (the setting is process-wide)."""
        import contextlib
        import os

        @contextlib.contextmanager
        def scope():
            previous = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.num_threads or os.cpu_count() or 1)
            try:
                yield
            finally:
                faiss.omp_set_num_threads(previous)
        return scope()

    def _build(self, model, centroids):
        faiss = _faiss()
        X = self._item_vectors(model)
        d = X.shape[1]
        quantizer = faiss.IndexFlatL2(d)
        quantizer.add(centroids)
        # lists are chosen in lifted L2 by the quantizer, and scanned by inner product (the
        # lift's last coordinate meets the query's 0): the scan's scores are the model's own
        index = faiss.IndexIVFFlat(quantizer, d, centroids.shape[0], faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
        with self._faiss_threads(faiss):
            index.add(X)
        # each item's list, for counting a user's seen items in the lists the user probes
        item_list = np.full(X.shape[0], -1, dtype=np.int32)
        lists = index.invlists
        for j in range(centroids.shape[0]):
            size = lists.list_size(j)
            if size:
                item_list[faiss.rev_swig_ptr(lists.get_ids(j), size)] = j
        if (item_list < 0).any():  # pragma: no cover - faiss stores every item added
            raise RuntimeError("faiss left items out of the inverted lists")
        self._index, self._quantizer, self._model = index, quantizer, model
        self._item_list = item_list
        self.centroids_ = centroids
        self.fingerprint_ = _fingerprint(model)

    def recommend(self, users, n=10, *, exclude_seen=True):
        """Approximate top-``n`` items for each user, best first.

        Parameters
        ----------
        users : scalar or array-like of shape (m,)
            Raw user ids known to the model.
        n : int, default=10
        exclude_seen : bool, default=True
            Leave out each user's training items.

        Returns
        -------
        ids : ndarray of shape (m, min(n, n_items))
            Raw item ids, padded as in :meth:`FactorModel.recommend` (only where a user has
            fewer than ``n`` unseen items at all).
        scores : float64 ndarray of shape (m, min(n, n_items))
            The model's scores of those items (``-inf`` for padding).
        """
        from ._validation import check_bool, check_int
        from .models.base import _ids_with_padding

        self._check_built()
        model = self._model
        n = check_int("n", n, low=1)
        exclude_seen = check_bool("exclude_seen", exclude_seen)
        uidx = np.atleast_1d(np.asarray(model.user_vocab_.lookup(users), dtype=np.int64))
        idx, scores = self._recommend_indices(uidx, n, exclude_seen)
        return _ids_with_padding(model.item_vocab_, idx), scores

    def _check_built(self):
        if not hasattr(self, "_index"):
            raise RuntimeError("this ItemIndex is not built yet; call fit(model) first")

    def _recommend_indices(self, uidx, n, exclude_seen):
        """(item indices with -1 padding, float64 scores) of users given by index; arrays of
        shape (m, min(n, n_items)). What :meth:`recommend` and ``recommend_all`` share."""
        model = self._model
        n_items = model.n_items_
        n = min(n, n_items)
        _, n_probe = self._check_params(n_items)
        from .models.base import _csr_arrays
        indptr, indices = _csr_arrays(model.user_items_)
        seen_counts = (indptr[uidx + 1] - indptr[uidx] if exclude_seen
                       else np.zeros(uidx.size, dtype=np.int64))
        out_idx = np.full((uidx.size, n), -1, dtype=np.int64)
        out_sc = np.full((uidx.size, n), -np.inf, dtype=np.float64)
        exact = seen_counts > self.max_seen
        todo = np.flatnonzero(~exact)
        for start in range(0, todo.size, _QUERY_BLOCK):
            rows = todo[start:start + _QUERY_BLOCK]
            found = self._search_block(uidx[rows], n, n_probe, exclude_seen, indptr, indices,
                                       out_idx, out_sc, rows)
            # the probed lists held too few unseen items: answered exactly below
            exact[rows[found < np.minimum(n, n_items - seen_counts[rows])]] = True
        finite = np.isfinite(out_sc)
        out_sc += model.global_mean_ + model.user_bias_[uidx][:, None].astype(np.float64)
        out_sc[~finite] = -np.inf
        if exact.any():
            rows = np.flatnonzero(exact)
            ids, sc = model.recommend(model.user_vocab_.to_ids(uidx[rows]), n=n,
                                      exclude_seen=exclude_seen)
            ok = np.isfinite(sc)
            idx = np.full(ids.shape, -1, dtype=np.int64)
            idx[ok] = model.item_vocab_.lookup(ids[ok])
            out_idx[rows] = idx
            out_sc[rows] = sc
        return out_idx, out_sc

    def _search_block(self, u, n, n_probe, exclude_seen, indptr, indices, out_idx, out_sc, rows):
        """Search one block of users (indices ``u``) into ``out_*[rows]``: float32 scores
        without the user's constant part. Returns how many items each row got."""
        from ._ivf_select import seen_in_probed, select_unseen
        from ._threads import thread_context

        faiss = _faiss()
        n_items = self._model.n_items_
        users = u if exclude_seen else np.full_like(u, -1)
        Y = mips_lift_query(self._model.user_factors_[u])
        found = np.zeros(u.size, dtype=np.int64)
        with self._faiss_threads(faiss):
            # the lists to probe: faiss's coarse search, a BLAS product, so before
            # thread_context (which holds BLAS to one thread for the Numba kernels)
            coarse, probe = self._quantizer.search(Y, n_probe)
            with thread_context(self.num_threads):
                in_probed = seen_in_probed(probe, self._item_list, indptr, indices, users,
                                           self.centroids_.shape[0])
                # faiss keeps the k best probed items; n + the seen ones among them is enough
                # for n unseen. One scan per power-of-two k, so that a few users with many
                # seen items do not make every query keep thousands (the scan slows with k).
                want = np.minimum(n + in_probed, n_items)
                bucket = np.ceil(np.log2(np.maximum(want, 1))).astype(np.int64)
                self._index.nprobe = n_probe
                for b in np.unique(bucket):
                    sel = np.flatnonzero(bucket == b)
                    k = int(min(n_items, 2 ** b))
                    dist, cand = self._index.search_preassigned(
                        np.ascontiguousarray(Y[sel]), k, np.ascontiguousarray(probe[sel]),
                        np.ascontiguousarray(coarse[sel]))
                    pos, kept, found[sel] = select_unseen(cand, dist, indptr, indices,
                                                          users[sel], n, n_items)
                    out_idx[rows[sel]] = pos
                    out_sc[rows[sel]] = kept
        return found

    # ------------------------------------------------------------------ files
    def save(self, path):
        """Write the index beside its model: parameters, fingerprint and centroids (``.npz``,
        no pickle). The inverted lists are rebuilt from the model on :meth:`load`."""
        if not hasattr(self, "centroids_"):
            raise RuntimeError("this ItemIndex is not built yet; call fit(model) first")
        import io
        import json

        from .persist import save_target, write_atomically
        header = {"format": "mfrec-ivf-index", "version": 1, "fingerprint": self.fingerprint_,
                  "params": {k: getattr(self, k) for k in
                             ("n_lists", "n_probe", "max_seen", "num_threads", "random_state")}}
        buf = io.BytesIO()
        np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                 centroids=self.centroids_)
        target, mode = save_target(path)
        write_atomically(target, mode, lambda fh: fh.write(buf.getvalue()))

    @classmethod
    def load(cls, path, model, *, max_bytes=1 << 30):
        """Read an index saved by :meth:`save` for ``model``; the file is untrusted input.

        Raises
        ------
        ValueError
            If the file is not an index, is larger than ``max_bytes``, is malformed, or was
            built from other item factors than ``model``'s.
        """
        import json
        import os
        import zipfile

        model._check_fitted()
        size = os.path.getsize(path)
        if size > max_bytes:
            raise ValueError(f"index file {os.fspath(path)!r} is {size} bytes, over the "
                             f"{max_bytes}-byte limit")
        k1 = model.item_factors_.shape[1] + 2
        try:
            with zipfile.ZipFile(path) as zf:
                infos = {i.filename: i for i in zf.infolist()}
                if set(infos) != {"header.npy", "centroids.npy"}:
                    raise ValueError(f"unexpected members {sorted(infos)}")
                limit = 16 + k1 * 4 * model.n_items_ + 4096
                for info in infos.values():
                    if info.file_size > limit:
                        raise ValueError(f"member {info.filename} declares {info.file_size} "
                                         f"bytes, more than an index of this model can hold")
                with np.load(path, allow_pickle=False) as z:
                    header = json.loads(bytes(z["header"].astype(np.uint8)).decode())
                    centroids = z["centroids"]
        except (OSError, zipfile.BadZipFile, ValueError, KeyError, UnicodeDecodeError) as e:
            raise ValueError(f"{os.fspath(path)!r} is not a readable mfrec index: {e}") from e
        if not isinstance(header, dict) or header.get("format") != "mfrec-ivf-index":
            raise ValueError(f"{os.fspath(path)!r} is not an mfrec index file")
        params = header.get("params")
        if not isinstance(params, dict) or set(params) != {
                "n_lists", "n_probe", "max_seen", "num_threads", "random_state"}:
            raise ValueError(f"{os.fspath(path)!r}: malformed index parameters {params!r}")
        if (centroids.dtype != np.float32 or centroids.ndim != 2 or centroids.shape[1] != k1
                or not 1 <= centroids.shape[0] <= model.n_items_
                or not np.isfinite(centroids).all()):
            raise ValueError(f"{os.fspath(path)!r}: centroids must be finite float32 of shape "
                             f"(1..{model.n_items_}, {k1}), got {centroids.dtype} "
                             f"{centroids.shape}")
        if header.get("fingerprint") != _fingerprint(model):
            raise ValueError(f"{os.fspath(path)!r} was built from other item factors than this "
                             f"model's; rebuild it with ItemIndex().fit(model)")
        index = cls(**params)
        index._check_params(model.n_items_)
        index._build(model, np.ascontiguousarray(centroids))
        return index
