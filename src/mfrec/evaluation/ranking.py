"""Ranking metrics for top-N recommendation.

Two layers:

- plain functions on arrays (:func:`precision_at_k`, :func:`recall_at_k`, :func:`ndcg_at_k`,
  :func:`map_at_k`, :func:`hit_rate_at_k`, :func:`mrr`, :func:`auc`, :func:`coverage`), each the
  mean over the rows (users) that have at least one relevant item;
- :func:`evaluate_ranking`, which recommends for every test user of a fitted model in parallel
  batches and computes them all with the same definitions.

Definitions, for one user with ranked list ``L`` (first ``k`` entries) and relevant set ``R``:

==============  =============================================================================
precision@k     ``|L ∩ R| / k``
recall@k        ``|L ∩ R| / |R|``
ndcg@k          ``DCG / IDCG`` with gains 1 and discount ``1 / log2(rank + 1)``; IDCG puts
                ``min(k, |R|)`` hits first
map@k           mean over hit ranks ``j`` of precision@j, divided by ``min(k, |R|)``
hit_rate@k      1 if ``L ∩ R`` is not empty
mrr             ``1 / rank`` of the first relevant item in the ranking (0 if none)
auc             fraction of (relevant, non-relevant candidate) pairs ordered correctly
coverage@k      distinct items recommended to anyone / catalogue size (not per user)
==============  =============================================================================

Published tables: with :func:`evaluate_ranking`'s defaults (``exclude_seen=True``) the protocol
is the one of LightGCN (He et al., SIGIR 2020) and NGCF (Wang et al., SIGIR 2019): every item
that is not among the user's training items is a candidate (all-item ranking, no sampled
negatives); ``recall@k`` is the hits in the top ``k`` over the user's number of test items (not
over ``min(k, |R|)``); ``ndcg@k`` divides the DCG of the top ``k`` by the ideal DCG of
``min(|R|, k)`` hits; both are averaged over the users with test items. Figures computed here
are therefore comparable with those tables (e.g. Gowalla recall@20 / ndcg@20, with the data
read by :func:`mfrec.datasets.load_adjacency_split`).

Leave-one-out and per-user holdout splits are :func:`mfrec.evaluation.splits.leave_one_out_split`
and :func:`mfrec.evaluation.splits.user_split`.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from .._threads import thread_context
from .._validation import check_bool, check_float, check_int
from ..data import as_ratings
from ..models.base import _csr_arrays

__all__ = ["METRICS", "evaluate_ranking", "precision_at_k", "recall_at_k", "ndcg_at_k",
           "map_at_k", "hit_rate_at_k", "mrr", "auc", "coverage"]

#: metric names accepted by :func:`evaluate_ranking` (``@k`` ones get the suffix in the result)
METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "mrr", "auc", "coverage")
_AT_K = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")


# ---------------------------------------------------------------------- plain metric functions
def _hit_matrix(recommended, relevant, k):
    """(hits of shape (m, k) bool, n_relevant of shape (m,)) from lists of ids."""
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be 2-D (users x ranked items), got shape {rec.shape}")
    k = check_int("k", k, low=1)
    if k > rec.shape[1]:
        raise ValueError(f"k={k} is larger than the {rec.shape[1]} recommended items per user")
    if len(relevant) != rec.shape[0]:
        raise ValueError(f"relevant must have one entry per row of recommended ({rec.shape[0]}), "
                         f"got {len(relevant)}")
    hits = np.zeros((rec.shape[0], k), dtype=bool)
    n_rel = np.zeros(rec.shape[0], dtype=np.int64)
    for r, rel in enumerate(relevant):
        rel = list(rel) if isinstance(rel, (set, frozenset)) else rel
        rel = set(np.asarray(rel).ravel().tolist())
        n_rel[r] = len(rel)
        hits[r] = [x in rel for x in rec[r, :k].tolist()]
    return hits, n_rel


def _per_user(hits, n_rel, k):
    """Per-user metric values from the hit matrix; rows with no relevant item are dropped.

    ``hits`` may have fewer than ``k`` columns (a catalogue shorter than ``k``): the positions
    past it are misses.
    """
    keep = n_rel > 0
    if not keep.any():
        raise ValueError("no user has a relevant item: the metrics are undefined")
    hits, n_rel = hits[keep], n_rel[keep]
    width = hits.shape[1]
    n_hits = hits.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(2, int(min(k, max(width, n_rel.max()))) + 2))
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    cum_hits = np.cumsum(hits, axis=1)
    prec_at_j = cum_hits / np.arange(1, width + 1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    return {
        "precision": n_hits / k,
        "recall": n_hits / n_rel,
        "ndcg": (hits * discount[:width]).sum(axis=1) / ideal,
        "map": (prec_at_j * hits).sum(axis=1) / np.minimum(n_rel, k),
        "hit_rate": (n_hits > 0).astype(np.float64),
        "mrr": _reciprocal_rank(first),
    }


def _reciprocal_rank(first):
    """1 / rank of the first hit (ranks from 1), 0 where there is none (rank 0)."""
    return np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)


def _mean_at_k(name, recommended, relevant, k):
    """Mean over users with a relevant item of one of :func:`_per_user`'s metrics."""
    hits, n_rel = _hit_matrix(recommended, relevant, k)
    return float(_per_user(hits, n_rel, k)[name].mean())


def precision_at_k(recommended, relevant, k=10):
    """Mean precision@k.

    Parameters
    ----------
    recommended : array-like of shape (m, >= k)
        Ranked item ids per user, best first.
    relevant : sequence of length m
        The relevant item ids of each user (a set, list or array). Users with none are left out
        of the mean.
    k : int, default=10

    Returns
    -------
    float

    Examples
    --------
    >>> precision_at_k([[1, 2, 3]], [{2, 7}], k=2)
    0.5
    """
    return _mean_at_k("precision", recommended, relevant, k)


def recall_at_k(recommended, relevant, k=10):
    """Mean recall@k: hits in the top k over the number of relevant items. See
    :func:`precision_at_k` for the arguments."""
    return _mean_at_k("recall", recommended, relevant, k)


def ndcg_at_k(recommended, relevant, k=10):
    """Mean NDCG@k with binary gains. See :func:`precision_at_k` for the arguments."""
    return _mean_at_k("ndcg", recommended, relevant, k)


def map_at_k(recommended, relevant, k=10):
    """Mean average precision@k (normalised by ``min(k, |relevant|)``). See
    :func:`precision_at_k` for the arguments."""
    return _mean_at_k("map", recommended, relevant, k)


def hit_rate_at_k(recommended, relevant, k=10):
    """Fraction of users with at least one relevant item in the top k. See
    :func:`precision_at_k` for the arguments."""
    return _mean_at_k("hit_rate", recommended, relevant, k)


def mrr(recommended, relevant):
    """Mean reciprocal rank of the first relevant item within each ranked list (0 if absent).

    Parameters
    ----------
    recommended : array-like of shape (m, L)
        Full or truncated rankings, best first.
    relevant : sequence of length m
    """
    rec = np.asarray(recommended)
    hits, n_rel = _hit_matrix(rec, relevant, rec.shape[1] if rec.ndim == 2 else 1)
    return float(_per_user(hits, n_rel, hits.shape[1])["mrr"].mean())


def auc(scores, relevant):
    """Mean per-user AUC from full score rows.

    Parameters
    ----------
    scores : array-like of shape (m, n_items)
        Scores of every item; NaN or ``-inf`` marks an item that is not a candidate (e.g. seen in
        training).
    relevant : sequence of length m
        Relevant item *indices* (columns of ``scores``) of each user.

    Returns
    -------
    float
        Mean over users with at least one relevant and one non-relevant candidate of the
        fraction of (relevant, non-relevant) pairs where the relevant item scores higher, ties
        counting half.
    """
    S = np.asarray(scores, dtype=np.float64)
    if S.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items), got shape {S.shape}")
    if len(relevant) != S.shape[0]:
        raise ValueError(f"relevant must have one entry per row of scores ({S.shape[0]}), got "
                         f"{len(relevant)}")
    vals = []
    for r, rel in enumerate(relevant):
        rel = np.unique(np.asarray(list(rel), dtype=np.int64))
        cand = S[r] > -np.inf
        rel = rel[cand[rel]]
        neg = cand.copy()
        neg[rel] = False
        if rel.size == 0 or not neg.any():
            continue
        sr, sn = S[r, rel][:, None], S[r, neg][None, :]
        vals.append(((sr > sn).sum() + 0.5 * (sr == sn).sum()) / (sr.size * sn.size))
    if not vals:
        raise ValueError("no user has both a relevant and a non-relevant candidate: AUC undefined")
    return float(np.mean(vals))


def coverage(recommended, n_items):
    """Fraction of the catalogue recommended to at least one user.

    Parameters
    ----------
    recommended : array-like of shape (m, k)
        Item indices (or ids); negative indices are padding and ignored.
    n_items : int
        Catalogue size.
    """
    n_items = check_int("n_items", n_items, low=1)
    rec = np.asarray(recommended).ravel()
    if rec.dtype.kind in "iu":
        rec = rec[rec >= 0]
    return float(np.unique(rec).size / n_items)


# ---------------------------------------------------------------------- model evaluation
def _metric_list(metrics, allowed=METRICS):
    """Metric names (``@k`` suffix dropped, lower case, first occurrence kept) checked against
    ``allowed``; ``None`` means all of them."""
    if metrics is None:
        return list(allowed)
    if isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for name in metrics:
        base = str(name).split("@")[0].lower()
        if base not in allowed:
            raise ValueError(f"metrics must be names from {allowed}, got {name!r}")
        if base not in out:
            out.append(base)
    if not out:
        raise ValueError(f"metrics must name at least one of {allowed}, got an empty list")
    return out


def evaluate_ranking(model, test, *, k=10, metrics=None, exclude_seen=True, batch_size=2048,
                     relevance_threshold=None):
    """Ranking quality of a fitted model on held-out interactions.

    Parameters
    ----------
    model : FactorModel
        Fitted; its ``recommend`` conventions apply (``num_threads`` of the model is used).
    test : Ratings, DataFrame or anything :func:`mfrec.as_ratings` accepts
        Held-out (user, item[, rating]) interactions, raw ids. Every test pair is relevant (or
        those with rating >= ``relevance_threshold``).
    k : int, default=10
        Cut-off of the ``@k`` metrics. Rankings are computed only as deep as the catalogue
        (positions past it are misses), so a huge ``k`` allocates nothing more.
    metrics : sequence of str, optional
        Names from ``METRICS`` ("precision", "recall", "ndcg", "map", "hit_rate", "mrr", "auc",
        "coverage"; a trailing ``@k`` is accepted and ignored); default all.
    exclude_seen : bool, default=True
        Rank only items the user has not interacted with in training; test pairs that were also
        training pairs are then dropped from the relevant sets.
    batch_size : int, default=2048
        Users per batch (bounds the memory of the full-ranking metrics "mrr" and "auc").
    relevance_threshold : float, optional
        Count only test pairs with at least this rating as relevant.

    Returns
    -------
    dict
        Keys ``"precision@k"``, ``"recall@k"``, ``"ndcg@k"``, ``"map@k"``, ``"hit_rate@k"``,
        ``"mrr"``, ``"auc"``, ``"coverage@k"`` (the requested ones, with the actual ``k``), each a
        float averaged over the evaluated users.

    Notes
    -----
    With ``exclude_seen=True`` this is the all-item protocol of LightGCN and NGCF (see the
    module notes): every item outside the user's training items is ranked, and recall@k and
    ndcg@k have those papers' definitions.

    Evaluated users are the test users known to the model with at least one relevant item;
    unknown test users are left out with a warning (the model cannot rank for them). Relevant
    items unknown to the model stay in the relevant sets — they count against recall, NDCG and
    MAP as items a deployed model could not have found — but are left out of MRR and AUC, which
    need a score.
    """
    from ..kernels.topn import rank_stats, topn

    model._check_fitted()
    k = check_int("k", k, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    exclude_seen = check_bool("exclude_seen", exclude_seen)
    relevance_threshold = check_float("relevance_threshold", relevance_threshold, allow_none=True)
    names = _metric_list(metrics)
    test = as_ratings(test)
    t_users = test.user_vocab.ids[test.user_index]
    t_items = test.item_vocab.ids[test.csr.indices]
    keep = np.ones(test.nnz, dtype=bool)
    if relevance_threshold is not None:
        keep &= test.csr.data >= relevance_threshold
    uidx = model.user_vocab_.lookup(t_users, unknown="mask")
    iidx = model.item_vocab_.lookup(t_items, unknown="mask")
    unknown_users = np.unique(t_users[keep & (uidx < 0)])
    if unknown_users.size:
        warnings.warn(f"evaluate_ranking: {unknown_users.size} test user(s) unknown to the model "
                      f"(e.g. {unknown_users[:3].tolist()}) are left out", stacklevel=2)
    keep &= uidx >= 0
    seen = model.user_items_
    if exclude_seen:
        known = keep & (iidx >= 0)
        in_train = np.zeros(test.nnz, dtype=bool)
        in_train[known] = _pairs_in(seen, uidx[known], iidx[known])
        keep &= ~in_train
    uidx, iidx = uidx[keep], iidx[keep]
    if uidx.size == 0:
        raise ValueError("no test interaction is left to evaluate (all users unknown, or all "
                         "pairs below the threshold or seen in training)")
    users = np.unique(uidx)
    # relevant sets per evaluated user, as a CSR over model item indices; unknown items (-1) kept
    # apart as a count
    row = np.searchsorted(users, uidx)
    n_rel = np.bincount(row, minlength=users.size)
    reach = iidx >= 0
    rel = sp.csr_matrix((np.ones(int(reach.sum()), np.int8), (row[reach], iidx[reach])),
                        shape=(users.size, model.n_items_))
    rel.sum_duplicates()
    rel.sort_indices()
    # duplicates in the test (same pair twice) count once
    n_rel = n_rel - (np.bincount(row[reach], minlength=users.size) - np.diff(rel.indptr))

    Q, bias, _, cand_pos = model._candidates(None, None)
    P = model.user_factors_
    seen_indptr, seen_indices = _csr_arrays(seen)
    need_topk = any(n in _AT_K for n in names)
    need_full = "mrr" in names or "auc" in names
    n_eval = users.size
    depth = min(k, model.n_items_)  # no ranking is longer: hits are (users x depth)
    hits = np.zeros((n_eval, depth), dtype=bool)
    first_rank = np.zeros(n_eval, dtype=np.int64)
    auc_u = np.full(n_eval, np.nan)
    recommended = np.zeros(model.n_items_, dtype=bool)
    with thread_context(model._serving_threads()):
        for s in range(0, n_eval, batch_size):
            sl = slice(s, min(n_eval, s + batch_size))
            ub = users[sl]
            U = np.ascontiguousarray(P[ub], dtype=np.float32)
            rows = ub.astype(np.int64) if exclude_seen else np.full(ub.size, -1, np.int64)
            relb = rel[sl]
            if need_topk:
                top, _ = topn(U, Q, bias, seen_indptr, seen_indices, rows, cand_pos, depth)
                recommended[top[top >= 0]] = True
                hits[sl] = _rows_contain(relb.indptr, relb.indices, top, model.n_items_)
            if need_full:
                f, a = rank_stats(U, Q, bias, seen_indptr, seen_indices, rows,
                                  *_csr_arrays(relb))
                first_rank[sl] = f
                auc_u[sl] = a
    out = {}
    per = _per_user(hits, n_rel, k) if need_topk else {}
    for name in names:
        if name == "coverage":
            out[f"coverage@{k}"] = float(recommended.sum() / model.n_items_)
        elif name == "mrr":
            out["mrr"] = float(_reciprocal_rank(first_rank).mean())
        elif name == "auc":
            ok = ~np.isnan(auc_u)
            out["auc"] = float(auc_u[ok].mean()) if ok.any() else float("nan")
        else:
            out[f"{name}@{k}"] = float(per[name].mean())
    return out


def _pairs_in(csr, u, i):
    """Whether each (u[t], i[t]) is a stored entry of the CSR matrix (sorted indices)."""
    return _keys_in(csr.indptr, csr.indices, csr.shape[1], u, i)


def _keys_in(indptr, indices, n_cols, rows, cols):
    """Membership of (rows, cols) pairs in a CSR pattern, by binary search on row-major keys."""
    counts = np.diff(indptr)
    keys = np.repeat(np.arange(counts.size, dtype=np.int64), counts) * n_cols + indices
    q = np.asarray(rows, dtype=np.int64) * n_cols + np.asarray(cols, dtype=np.int64)
    if keys.size == 0:
        return np.zeros(q.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return keys[pos] == q


def _rows_contain(indptr, indices, top, n_cols):
    """hits[r, j] = top[r, j] is in CSR row r (sorted indices); -1 entries never hit."""
    rows = np.repeat(np.arange(top.shape[0]), top.shape[1]).reshape(top.shape)
    hits = _keys_in(indptr, indices, n_cols, rows, np.maximum(top, 0))
    return hits & (top >= 0)
