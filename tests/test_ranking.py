"""Ranking metrics against hand-computed values, and evaluate_ranking end to end."""
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mfrec import FactorModel, Ratings, Vocabulary
from mfrec.evaluation.ranking import (METRICS, auc, coverage, evaluate_ranking, hit_rate_at_k,
                                      map_at_k, mrr, ndcg_at_k, precision_at_k, recall_at_k)

# user 0: ranked [1, 2, 3, 4], relevant {2, 4, 9}; user 1: ranked [5, 6, 7, 8], relevant {5}
REC = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
REL = [{2, 4, 9}, [5]]


def test_precision_recall_hit_rate_by_hand():
    assert precision_at_k(REC, REL, k=2) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert precision_at_k(REC, REL, k=4) == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert recall_at_k(REC, REL, k=4) == pytest.approx((2 / 3 + 1) / 2)
    assert hit_rate_at_k(REC, REL, k=1) == pytest.approx(0.5)


def test_ndcg_by_hand():
    # user 0: hits at ranks 2 and 4 -> DCG = 1/log2(3) + 1/log2(5); ideal 3 hits in 4 slots
    dcg0 = 1 / math.log2(3) + 1 / math.log2(5)
    idcg0 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(REC, REL, k=4) == pytest.approx((dcg0 / idcg0 + 1.0) / 2)
    # ideal capped at min(k, |R|): k=2 for user 0 -> ideal 1 + 1/log2(3)
    assert ndcg_at_k(REC, REL, k=2) == pytest.approx(
        ((1 / math.log2(3)) / (1 + 1 / math.log2(3)) + 1.0) / 2)


def test_map_and_mrr_by_hand():
    # user 0: precisions at hits 1/2 and 2/4, divided by min(4, 3) = 3
    assert map_at_k(REC, REL, k=4) == pytest.approx(((1 / 2 + 2 / 4) / 3 + 1.0) / 2)
    assert mrr(REC, REL) == pytest.approx((1 / 2 + 1) / 2)
    assert mrr([[7, 8]], [{1}]) == 0.0


def test_users_without_relevant_items_are_left_out():
    assert precision_at_k([[1, 2], [3, 4]], [{1}, set()], k=2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no user has a relevant item"):
        precision_at_k([[1, 2]], [set()], k=2)


def test_auc_by_hand_with_ties_and_masked_items():
    # relevant item 0 scores 3; non-relevant candidates score 1, 3 (tie) and 5; item 4 is masked
    scores = [[3.0, 1.0, 3.0, 5.0, -np.inf]]
    assert auc(scores, [[0, 4]]) == pytest.approx((1 + 0.5 + 0) / 3)
    assert auc([[2.0, 1.0], [0.0, 1.0]], [[0], [0]]) == pytest.approx(0.5)


def test_coverage_by_hand():
    assert coverage([[0, 1], [1, 2], [2, -1]], 10) == pytest.approx(0.3)


def test_argument_errors():
    with pytest.raises(ValueError, match="k=5 is larger than the 4 recommended"):
        precision_at_k(REC, REL, k=5)
    with pytest.raises(ValueError, match="one entry per row"):
        recall_at_k(REC, REL[:1], k=2)
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        ndcg_at_k(REC, REL, k=0)


# ---------------------------------------------------------------------- evaluate_ranking
def _fixed_model():
    """3 users x 5 items, factors chosen so every ranking is known."""
    # item j scores 5 - j for users a and b (i0 best); reversed for user c
    P = np.array([[1.0], [1.0], [-1.0]], np.float32)
    Q = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], np.float32)
    items = Vocabulary(np.array(["i0", "i1", "i2", "i3", "i4"]), name="item")
    train = Ratings.from_ids(["a", "a", "b", "c"], ["i0", "i1", "i4", "i0"], [1, 1, 1, 1],
                             item_vocab=items)
    m = FactorModel()
    m._set_factor_state(P, Q)  # before the data state, which would zero untrained items i2, i3
    m._set_data_state(train)
    return m


def test_evaluate_ranking_known_values():
    m = _fixed_model()
    # a: seen i0, i1 -> ranking i2, i3, i4; relevant i3 -> rank 2
    # b: seen i4 -> ranking i0, i1, i2, i3; relevant i0, i2 -> ranks 1, 3
    # c: seen i0 -> ranking (reversed) i4, i3, i2, i1; relevant i1 -> rank 4; "zz" unknown user
    test = pd.DataFrame({"user": ["a", "b", "b", "c", "zz"],
                         "item": ["i3", "i0", "i2", "i1", "i1"], "rating": [1, 1, 1, 1, 1]})
    with pytest.warns(UserWarning, match="1 test user"):
        res = evaluate_ranking(m, test, k=2)
    assert set(res) == {"precision@2", "recall@2", "ndcg@2", "map@2", "hit_rate@2", "mrr", "auc",
                        "coverage@2"}
    assert res["precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert res["recall@2"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert res["hit_rate@2"] == pytest.approx(2 / 3)
    assert res["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 4) / 3)
    ndcg_a = (1 / math.log2(3)) / 1.0
    ndcg_b = 1.0 / (1 + 1 / math.log2(3))
    assert res["ndcg@2"] == pytest.approx((ndcg_a + ndcg_b + 0) / 3)
    # AUC: a: i3 beats i4, loses to i2 -> 1/2; b: i0 beats i1, i3; i2 beats i3 -> 3/4; c: 0
    assert res["auc"] == pytest.approx((1 / 2 + 3 / 4 + 0) / 3)
    # top-2 lists: a {i2, i3}, b {i0, i1}, c {i4, i3} -> 5 of 5 items
    assert res["coverage@2"] == pytest.approx(5 / 5)


def test_evaluate_ranking_options():
    m = _fixed_model()
    test = pd.DataFrame({"user": ["a", "b"], "item": ["i0", "i2"], "rating": [5.0, 2.0]})
    # a's test item i0 was seen in training: dropped when excluding seen items
    r = evaluate_ranking(m, test, k=1, metrics=["hit_rate@1", "recall"])
    assert set(r) == {"hit_rate@1", "recall@1"}
    assert r["hit_rate@1"] == 0.0   # only b is evaluated; its top item is i0, not i2
    r = evaluate_ranking(m, test, k=1, metrics=["hit_rate"], exclude_seen=False)
    assert r["hit_rate@1"] == pytest.approx(0.5)    # a's i0 is now rankable and first
    r = evaluate_ranking(m, test, k=1, metrics=["hit_rate"], exclude_seen=False,
                         relevance_threshold=4)
    assert r["hit_rate@1"] == 1.0
    with pytest.raises(ValueError, match="metrics must be names from"):
        evaluate_ranking(m, test, metrics=["rmse"])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        evaluate_ranking(m, test, batch_size=0)


def test_evaluate_ranking_batches_agree_and_match_functions():
    # random model: evaluate_ranking in batches of 7 equals the plain functions on recommend()
    rng = np.random.default_rng(0)
    n_u, n_i = 40, 60
    train = sp.random(n_u, n_i, density=0.1, format="csr", random_state=1)
    test = sp.random(n_u, n_i, density=0.1, format="csr", random_state=2)
    test = (test - test.multiply(train > 0)).tocsr()
    test.eliminate_zeros()
    m = FactorModel()
    m._set_data_state(Ratings.from_sparse(train))
    m._set_factor_state(rng.standard_normal((n_u, 4)).astype(np.float32),
                        rng.standard_normal((n_i, 4)).astype(np.float32))
    test_r = Ratings.from_sparse(test)
    a = evaluate_ranking(m, test_r, k=5, batch_size=7)
    b = evaluate_ranking(m, test_r, k=5, batch_size=1000)
    assert a == pytest.approx(b)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    ids, _ = m.recommend(users, n=5)
    rel = [test.indices[test.indptr[u]:test.indptr[u + 1]] for u in users]
    assert a["ndcg@5"] == pytest.approx(ndcg_at_k(ids, rel, k=5))
    assert a["map@5"] == pytest.approx(map_at_k(ids, rel, k=5))
    full = m.reconstruct()
    full[train.toarray() > 0] = -np.inf
    assert a["auc"] == pytest.approx(auc(full[users], rel))
    assert set(METRICS) == {"precision", "recall", "ndcg", "map", "hit_rate", "mrr", "auc",
                            "coverage"}


# ---------------------------------------------------------------------- LightGCN / NGCF protocol
def _lightgcn_reference(scores, train, test, k):
    """LightGCN's test loop, written out on dense arrays: rank every item the user did not train
    on, recall@k = hits / |test items|, ndcg@k = DCG@k / IDCG of min(|test items|, k) hits, both
    averaged over the users with test items."""
    recalls, ndcgs = [], []
    for u in range(scores.shape[0]):
        rel = set(np.flatnonzero(test[u]).tolist())
        if not rel:
            continue
        s = scores[u].astype(np.float64).copy()
        s[train[u] > 0] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        hits = np.array([t in rel for t in top.tolist()], dtype=float)
        recalls.append(hits.sum() / len(rel))
        dcg = (hits / np.log2(np.arange(2, k + 2))).sum()
        idcg = (1 / np.log2(np.arange(2, min(len(rel), k) + 2))).sum()
        ndcgs.append(dcg / idcg)
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def test_lightgcn_protocol_by_hand():
    # 2 users x 6 items, scores 6 - j for everyone. User 0 trained on items 0 and 2, tests on
    # 3, 5 -> candidates ranked 1, 3, 4, 5; top-3 = [1, 3, 4]: one hit of 2 test items.
    # recall@3 = 1/2; DCG = 1/log2(3) (hit at rank 2); IDCG = 1 + 1/log2(3) (min(2, 3) hits).
    # User 1 trained on item 5, tests on items 0, 1, 2, 3 (more than k): top-3 = [0, 1, 2] all
    # hit; recall@3 = 3/4 (over 4 test items, not min(k, 4) = 3); ndcg@3 = 1.
    P = np.ones((2, 1), np.float32)
    Q = (6 - np.arange(6, dtype=np.float32))[:, None]
    m = FactorModel()
    m._set_factor_state(P, Q)
    m._set_data_state(Ratings.from_indices([0, 0, 1], [0, 2, 5], [1, 1, 1], shape=(2, 6)))
    test = Ratings.from_indices([0, 0, 1, 1, 1, 1], [3, 5, 0, 1, 2, 3], np.ones(6), shape=(2, 6))
    res = evaluate_ranking(m, test, k=3, metrics=["recall", "ndcg", "precision"])
    assert res["recall@3"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert res["ndcg@3"] == pytest.approx((ndcg0 + 1.0) / 2)
    assert res["precision@3"] == pytest.approx((1 / 3 + 3 / 3) / 2)


def test_evaluate_ranking_equals_lightgcn_reference_on_random_data():
    # all-item ranking with training items masked, on a random model: evaluate_ranking agrees
    # with the dense reference of LightGCN's evaluation to float precision
    rng = np.random.default_rng(3)
    n_u, n_i, k = 30, 50, 10
    train = (rng.random((n_u, n_i)) < 0.15).astype(float)
    test = ((rng.random((n_u, n_i)) < 0.1) & (train == 0)).astype(float)
    test[4] = 0  # a user without test items is left out of the means
    m = FactorModel()
    m._set_data_state(Ratings.from_dense(train))
    P = rng.standard_normal((n_u, 3)).astype(np.float32)
    Q = rng.standard_normal((n_i, 3)).astype(np.float32)
    m._set_factor_state(P, Q)
    want_recall, want_ndcg = _lightgcn_reference(m.user_factors_ @ m.item_factors_.T, train,
                                                 test, k)
    got = evaluate_ranking(m, Ratings.from_dense(test), k=k, metrics=["recall", "ndcg"])
    assert got["recall@10"] == pytest.approx(want_recall, rel=1e-9)
    assert got["ndcg@10"] == pytest.approx(want_ndcg, rel=1e-9)
