"""Popularity: hand-computed scores for both kinds of score, recommend/predict/evaluate, fold-in,
the CLI, and model files."""
import numpy as np
import pandas as pd
import pytest

import mfrec
from mfrec.evaluation import evaluate
from mfrec.evaluation.ranking import evaluate_ranking

# 4 users x 4 items of binary interactions: item popularity 3, 2, 1, 0
BINARY = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_count_scores_and_recommend_by_hand():
    # "auto" on binary data counts: item_bias = users who interacted / users
    m = mfrec.Popularity().fit(BINARY)
    assert m.score_ == "count"
    np.testing.assert_allclose(m.item_bias_, [3 / 4, 2 / 4, 1 / 4, 0])
    np.testing.assert_array_equal(m.item_popularity_, [3, 2, 1, 0])
    assert m.global_mean_ == 0.0
    assert m.user_factors_.shape == (4, 0) and m.item_factors_.shape == (4, 0)
    # user 0 has seen items 0, 1 -> 2 then 3; user 3 has seen nothing -> 0, 1, 2
    ids, scores = m.recommend([0, 3], n=2)
    np.testing.assert_array_equal(ids, [[2, 3], [0, 1]])
    np.testing.assert_allclose(scores, [[1 / 4, 0], [3 / 4, 2 / 4]])
    # predictions are the interaction shares, never clipped to the [1, 1] range of the data
    np.testing.assert_allclose(m.predict([3, 3], [0, 2]), [0.75, 0.25])
    # an unknown item falls back to the mean (0)
    assert m.predict([0], [99])[0] == 0.0


def test_weighted_counts():
    plays = np.array([[5, 1, 0], [0, 1, 0], [0, 1, 2]])
    m = mfrec.Popularity(score="count", weighted=True).fit(plays)
    np.testing.assert_allclose(m.item_popularity_, [5, 3, 2])
    np.testing.assert_allclose(m.item_bias_, [5 / 3, 1.0, 2 / 3])
    # unweighted, item 1 (3 users) wins
    m = mfrec.Popularity(score="count").fit(plays)
    np.testing.assert_allclose(m.item_bias_, [1 / 3, 1.0, 1 / 3])
    with pytest.raises(ValueError, match="weighted=True needs non-negative"):
        mfrec.Popularity(weighted=True).fit(([0, 1], [0, 0], [-1.0, 2.0]))


def test_damped_means_by_hand():
    # ratings: item a (5, 3), item b (1); mu = 3; damping 2:
    # b_a = ((5-3) + (3-3)) / (2 + 2) = 0.5; b_b = (1-3) / (1 + 2) = -2/3
    frame = pd.DataFrame({"user": [1, 2, 2], "item": ["a", "a", "b"], "rating": [5.0, 3.0, 1.0]})
    m = mfrec.Popularity(damping=2.0).fit(frame)
    assert m.score_ == "mean"
    assert m.global_mean_ == pytest.approx(3.0)
    np.testing.assert_allclose(m.item_bias_, [0.5, -2 / 3], rtol=1e-6)
    np.testing.assert_allclose(m.predict([1, 1], ["a", "b"]), [3.5, 3 - 2 / 3], rtol=1e-6)
    # predictions are clipped to the training range [1, 5]; an unknown item gets mu
    assert m.predict([1], ["zz"])[0] == pytest.approx(3.0)
    ids, _ = m.recommend([1], n=1)
    assert ids.tolist() == [["b"]]     # user 1 has seen a
    # damping 0 is the plain item mean
    m0 = mfrec.Popularity(damping=0.0).fit(frame)
    np.testing.assert_allclose(m0.predict([1, 1], ["a", "b"]), [4.0, 1.0], rtol=1e-6)


def test_evaluate_ranking_and_rating_metrics():
    # test: user 3 interacts with item 1 (second most popular) -> top-2 hit at rank 2
    m = mfrec.Popularity().fit(BINARY)
    test = mfrec.Ratings.from_indices([3], [1], [1.0], shape=(4, 4))
    res = evaluate_ranking(m, test, k=2, metrics=["recall", "ndcg"])
    assert res["recall@2"] == 1.0
    assert res["ndcg@2"] == pytest.approx(1 / np.log2(3))
    rating = mfrec.Popularity(score="mean", damping=0.0).fit(([0, 1, 1], [0, 0, 1],
                                                              [4.0, 2.0, 5.0]))
    got = evaluate(rating, ([0], [1], [3.0]), ["rmse"])
    assert got["rmse"] == pytest.approx(2.0)   # item 1's mean is 5


def test_fold_in_and_params():
    m = mfrec.Popularity().fit(BINARY)
    folded = m.fold_in([0])           # a new user who has seen item 0
    ids, _ = m.recommend(folded, n=2)
    np.testing.assert_array_equal(ids, [[1, 2]])
    with pytest.raises(ValueError, match="score must be one of"):
        mfrec.Popularity(score="median").fit(BINARY)
    with pytest.raises(ValueError, match="damping must be a number >= 0"):
        mfrec.Popularity(damping=-1).fit(BINARY)
    with pytest.raises(TypeError, match="weighted must be True or False"):
        mfrec.Popularity(weighted="yes").fit(BINARY)


def test_save_load_and_cli(tmp_path):
    # the model file round trip keeps scores, the no-clipping rule and the resolved score
    m = mfrec.Popularity().fit(BINARY)
    path = m.save(tmp_path / "pop.mfrec")
    back = mfrec.load(path)
    assert type(back) is mfrec.Popularity and back.score_ == "count"
    np.testing.assert_allclose(back.predict([3], [0]), [0.75])
    np.testing.assert_array_equal(back.recommend([0, 3], n=2)[0], m.recommend([0, 3], n=2)[0])
    # the CLI fits it by its registry name
    from mfrec.cli import main
    data = tmp_path / "r.csv"
    pd.DataFrame({"user": [1, 1, 2, 3], "item": [10, 20, 10, 10],
                  "rating": [1, 1, 1, 1]}).to_csv(data, index=False)
    assert main(["fit", str(data), "-m", "popularity", "-o", str(tmp_path / "p.mfrec"),
                 "-q"]) == 0
    cli_model = mfrec.load(tmp_path / "p.mfrec")
    assert cli_model.recommend([2], n=1)[0].tolist() == [[20]]
