"""evaluate() on hand-computed cases (fallback for unseen users/items included) and
cross_validate(): one row per fold, mean/std rows, times, the same folds as a manual loop."""
import numpy as np
import pandas as pd
import pytest

from mfrec import FactorModel, Ratings, Vocabulary
from mfrec.evaluation import KFold, cross_validate, evaluate, train_test_split
from mfrec.evaluation.cross_validation import parse_metrics

from conftest import damped_biases


class Means(FactorModel):
    """Global mean plus damped user and item biases, no factors (rank 1 of zeros)."""

    def __init__(self, *, regularization=1.0, stop_after=None):
        self.regularization = regularization
        self.stop_after = stop_after

    def _validate_params(self):
        if not self.regularization >= 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization!r}")

    def fit(self, data, validation=None):
        r = self._prepare(data)
        mu, bu, bi = damped_biases(r, self.regularization)
        self._set_data_state(r)
        self._set_factor_state(np.zeros((r.n_users, 1), np.float32),
                               np.zeros((r.n_items, 1), np.float32), bu, bi, mu)
        # "early stopping": fewer epochs when a validation set is given
        self.loss_history_ = [1.0] * (3 if validation is not None else 5)
        self.validation_seen_ = None if validation is None else validation.nnz
        return self


def fixed_model(mu, bu, bi, users, items, seen_pairs):
    """A model with hand-set state: predictions are mu + bu[u] + bi[i]."""
    m = Means()
    m.user_vocab_ = Vocabulary(np.array(users), name="user")
    m.item_vocab_ = Vocabulary(np.array(items), name="item")
    m._set_factor_state(np.zeros((len(users), 1)), np.zeros((len(items), 1)), bu, bi, mu)
    m.rating_range_ = (1.0, 5.0)
    u, i = zip(*seen_pairs)
    m.user_items_ = Ratings(np.array(u), np.array(i), np.ones(len(u)), user_vocab=m.user_vocab_,
                            item_vocab=m.item_vocab_).csr
    return m


def test_evaluate_hand_computed():
    # users a, b (b has no training rating), items x, y; test has an unknown user and item
    m = fixed_model(3.0, [0.5, 1.0], [-1.0, 0.25], ["a", "b"], ["x", "y"], [(0, 0), (0, 1)])
    test = Ratings.from_ids(["a", "a", "b", "zed", "a"], ["x", "y", "y", "x", "new"],
                            [2.0, 4.0, 3.0, 1.0, 5.0])
    # sorted by (user, item): a/new, a/x, a/y, b/y, zed/x
    # a/new: 3 + 0.5 = 3.5 (item unknown)      err  1.5
    # a/x:   3 + 0.5 - 1 = 2.5                  err -0.5
    # a/y:   3 + 0.5 + .25 = 3.75               err  0.25
    # b/y:   b never rated in training -> fallback 3 + .25 = 3.25, its bias 1.0 ignored: -0.25
    # zed/x: 3 - 1 = 2                          err -1.0
    errs = np.array([1.5, -0.5, 0.25, -0.25, -1.0])
    got = evaluate(m, test, ["rmse", "mae"])
    assert got == {"rmse": pytest.approx(np.sqrt(np.mean(errs ** 2)), abs=1e-12),
                   "mae": pytest.approx(np.mean(np.abs(errs)), abs=1e-12)}
    assert list(evaluate(m, test, "MAE,rmse")) == ["mae", "rmse"]


def test_evaluate_clips_to_rating_range():
    m = fixed_model(4.5, [1.0], [1.0], [1], [7], [(0, 0)])
    assert evaluate(m, Ratings.from_ids([1], [7], [5.0]), ["mae"]) == {"mae": 0.0}


def test_metric_names():
    assert parse_metrics("RMSE, ndcg@5,mrr,precision") == ["rmse", "ndcg@5", "mrr",
                                                          "precision@10"]
    for bad in ("rmse@10", "mrr@5", "ndcg@0", "n dcg", "@10"):
        with pytest.raises(ValueError, match="is not understood"):
            parse_metrics([bad])


@pytest.fixture(scope="module")
def ratings():
    rng = np.random.default_rng(3)
    n_u, n_i = 60, 40
    bu, bi = rng.normal(0, 0.7, n_u), rng.normal(0, 0.7, n_i)
    u = rng.integers(0, n_u, 1500)
    i = rng.integers(0, n_i, 1500)
    r = np.clip(np.rint(3.5 + bu[u] + bi[i] + rng.normal(0, 0.5, u.size)), 1, 5)
    return Ratings.from_ids(u, i, r, duplicates="last")


def test_cross_validate_table(ratings):
    res = cross_validate(Means(), ratings, cv=4, random_state=0)
    assert list(res.index) == [1, 2, 3, 4, "mean", "std"]
    assert list(res.columns) == ["rmse", "mae", "fit_time", "test_time", "n_train", "n_test",
                                 "unseen_ratings", "epochs"]
    folds = res.loc[[1, 2, 3, 4]]
    assert res.loc["mean", "rmse"] == pytest.approx(folds["rmse"].mean())
    assert res.loc["std", "mae"] == pytest.approx(folds["mae"].std(ddof=1))
    assert folds["n_test"].sum() == ratings.nnz
    assert (folds["n_train"] + folds["n_test"] == ratings.nnz).all()
    assert (folds["fit_time"] > 0).all() and (folds["epochs"] == 5).all()
    # a biases model on data made of biases beats the rating spread
    assert 0.4 < res.loc["mean", "rmse"] < ratings.values.std()


def test_cross_validate_matches_manual_folds(ratings):
    res = cross_validate(Means(regularization=2.0), ratings, cv=KFold(3, random_state=1))
    manual = [evaluate(Means(regularization=2.0).fit(tr), te)["rmse"]
              for tr, te in KFold(3, random_state=1).split(ratings)]
    assert np.allclose(res.loc[[1, 2, 3], "rmse"], manual, rtol=0, atol=1e-12)
    again = cross_validate(Means(regularization=2.0), ratings, cv=3, random_state=1)
    assert np.array_equal(again.loc[[1, 2, 3], "rmse"], res.loc[[1, 2, 3], "rmse"])


def test_cross_validate_predefined_pairs_and_models(ratings):
    pairs = [train_test_split(ratings, random_state=s) for s in range(2)]
    res, models = cross_validate(Means(), cv=pairs, metrics=["mae"], return_models=True)
    assert len(res) == 4 and len(models) == 2
    assert res.loc[1, "mae"] == pytest.approx(evaluate(models[0], pairs[0][1], ["mae"])["mae"])
    assert models[0] is not models[1]


def test_cross_validate_unseen_drop(ratings):
    keep = cross_validate(Means(), ratings, cv=5, random_state=0, metrics=["rmse"])
    drop = cross_validate(Means(), ratings, cv=5, random_state=0, metrics=["rmse"],
                          unseen="drop")
    k = [1, 2, 3, 4, 5]
    assert (drop.loc[k, "unseen_ratings"] == 0).all()
    assert np.array_equal(drop.loc[k, "n_test"],
                          keep.loc[k, "n_test"] - keep.loc[k, "unseen_ratings"])


def test_validation_part_for_early_stopping(ratings):
    res, models = cross_validate(Means(), ratings, cv=3, random_state=0, validation_size=0.1,
                                 return_models=True)
    assert (res.loc[[1, 2, 3], "epochs"] == 3).all()
    n_train = res.loc[1, "n_train"]
    assert models[0].validation_seen_ == round(0.1 * n_train)
    # the model was fitted on the training part minus the validation part
    assert models[0].user_items_.nnz == n_train - models[0].validation_seen_

    class NoValidation(Means):
        def fit(self, data):
            return super().fit(data)
    with pytest.raises(ValueError, match="fit accepts validation="):
        cross_validate(NoValidation(), ratings, cv=2, validation_size=0.1)


def test_cross_validate_ranking_metrics(ratings):
    from mfrec.models import available_models
    if "biased-mf" not in available_models():
        pytest.skip("BiasedMF not available")
    from mfrec import BiasedMF
    res = cross_validate(BiasedMF(n_epochs=3, random_state=0), ratings, cv=2, random_state=0,
                         metrics=["rmse", "ndcg@5", "mrr"])
    assert {"rmse", "ndcg@5", "mrr"} <= set(res.columns)
    assert ((res.loc[[1, 2], "ndcg@5"] >= 0) & (res.loc[[1, 2], "ndcg@5"] <= 1)).all()


def test_cross_validate_errors(ratings):
    with pytest.raises(ValueError, match="regularization must be >= 0"):
        cross_validate(Means(regularization=-1), ratings, cv=2)
    with pytest.raises(ValueError, match="cv must be an int >= 2"):
        cross_validate(Means(), ratings, cv=1)
    with pytest.raises(ValueError, match="data is required"):
        cross_validate(Means(), None, cv=3)
    with pytest.raises(ValueError, match="unseen must be one of"):
        cross_validate(Means(), ratings, unseen="maybe")
    with pytest.raises(TypeError, match="cv must be"):
        cross_validate(Means(), ratings, cv="five")
    assert isinstance(cross_validate(Means(), ratings, cv=2, metrics=["mae"]), pd.DataFrame)
