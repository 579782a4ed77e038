"""GridSearch / RandomSearch: the same folds for every candidate (scores equal cross_validate's),
best by the right direction, refit, early stopping passed through, and clear errors."""
import numpy as np
import pytest
import scipy.stats

from mfrec import FactorModel, Ratings
from mfrec.evaluation import GridSearch, KFold, RandomSearch, cross_validate
from mfrec.evaluation.search import parameter_grid

from conftest import damped_biases


class Means(FactorModel):
    """Global mean plus damped biases; ``shrink`` scales the biases (1 is best on biased data)."""

    def __init__(self, *, regularization=1.0, shrink=1.0, random_state=None):
        self.regularization = regularization
        self.shrink = shrink
        self.random_state = random_state

    def _validate_params(self):
        if not self.regularization >= 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization!r}")

    def fit(self, data, validation=None):
        r = self._prepare(data)
        mu, bu, bi = damped_biases(r, self.regularization)
        self._set_data_state(r)
        self._set_factor_state(np.zeros((r.n_users, 1)), np.zeros((r.n_items, 1)),
                               self.shrink * bu, self.shrink * bi, mu)
        self.loss_history_ = [0.0] * (2 if validation is not None else 4)
        return self


@pytest.fixture(scope="module")
def ratings():
    rng = np.random.default_rng(11)
    bu, bi = rng.normal(0, 0.8, 50), rng.normal(0, 0.8, 30)
    u, i = rng.integers(0, 50, 1200), rng.integers(0, 30, 1200)
    r = np.clip(np.rint(3.2 + bu[u] + bi[i] + rng.normal(0, 0.4, u.size)), 1, 5)
    return Ratings.from_ids(u, i, r, duplicates="last")


def test_parameter_grid():
    assert parameter_grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert parameter_grid([{"a": [1]}, {"b": np.array([2, 3])}]) == [{"a": 1}, {"b": 2}, {"b": 3}]
    assert type(parameter_grid({"b": np.array([2])})[0]["b"]) is int
    with pytest.raises(TypeError, match=r"param_grid\['a'\] must be a list"):
        parameter_grid({"a": 5})
    with pytest.raises(ValueError, match="is empty"):
        parameter_grid({"a": []})


def test_grid_search_scores_equal_cross_validate(ratings):
    grid = {"shrink": [0.0, 0.5, 1.0], "regularization": [1.0, 20.0]}
    search = GridSearch(Means(), grid, cv=KFold(3, random_state=2), metrics=["rmse", "mae"])
    assert search.fit(ratings) is search
    res = search.cv_results_
    assert len(res) == 6
    for row in res.itertuples():
        cv = cross_validate(Means(**row.params), ratings, cv=KFold(3, random_state=2))
        assert row.mean_rmse == pytest.approx(cv.loc["mean", "rmse"], abs=1e-12)
        assert row.std_mae == pytest.approx(cv.loc["std", "mae"], abs=1e-12)
        assert row.split0_rmse == pytest.approx(cv.loc[1, "rmse"], abs=1e-12)
    best = int(res["mean_rmse"].idxmin())
    assert search.best_index_ == best and search.best_params_ == res.loc[best, "params"]
    assert search.best_score_ == res["mean_rmse"].min()
    assert search.best_params_ == {"shrink": 1.0, "regularization": 1.0}
    # the two shrink=0 candidates tie
    assert res.loc[best, "rank_rmse"] == 1 and sorted(res["rank_rmse"]) == [1, 2, 3, 4, 5, 5]
    assert {"param_shrink", "param_regularization", "mean_fit_time", "mean_test_time",
            "mean_epochs"} <= set(res.columns)
    # refit on all data with the best parameters
    assert search.best_model_.user_items_.nnz == ratings.nnz
    assert search.best_model_.shrink == 1.0 and search.best_estimator_ is search.best_model_
    assert np.array_equal(search.predict([0, 1], [2, 3]),
                          search.best_model_.predict([0, 1], [2, 3]))


def test_scoring_picks_direction(ratings, monkeypatch):
    # a higher-is-better metric must pick the largest mean; fake a ranking metric that is
    # largest for shrink=0 so the choice is visibly different from rmse's
    import mfrec.evaluation.cross_validation as cvmod
    real = cvmod._ranking_metrics

    def fake(model, test, names, exclude_seen):
        return {n: 1.0 - model.shrink for n in names}
    monkeypatch.setattr(cvmod, "_ranking_metrics", fake)
    search = GridSearch(Means(), {"shrink": [0.0, 1.0]}, cv=2, scoring="ndcg@10",
                        metrics=["rmse"], random_state=0, refit=False).fit(ratings)
    assert search.best_params_ == {"shrink": 0.0} and search.best_score_ == 1.0
    assert list(search.cv_results_["rank_ndcg@10"]) == [1, 2]
    assert not hasattr(search, "best_model_")
    assert real is not fake


def test_early_stopping_is_passed_through(ratings):
    search = GridSearch(Means(), {"shrink": [1.0]}, cv=2, random_state=0,
                        validation_size=0.2).fit(ratings)
    assert search.cv_results_.loc[0, "mean_epochs"] == 2
    assert len(search.best_model_.loss_history_) == 2
    assert search.best_model_.user_items_.nnz == round(0.8 * ratings.nnz)


def test_random_search_lists_distinct_and_capped(ratings):
    s = RandomSearch(Means(), {"shrink": [0.0, 0.5, 1.0], "regularization": [1.0, 5.0]},
                     n_iter=4, cv=2, random_state=0).fit(ratings)
    combos = [tuple(sorted(p.items())) for p in s.cv_results_["params"]]
    assert len(combos) == 4 and len(set(combos)) == 4
    s = RandomSearch(Means(), {"shrink": [0.0, 1.0]}, n_iter=10, cv=2, random_state=0,
                     refit=False).fit(ratings)
    assert len(s.cv_results_) == 2


def test_random_search_distributions_reproducible(ratings):
    dist = {"shrink": scipy.stats.uniform(0.5, 0.5),
            "regularization": scipy.stats.loguniform(0.1, 100)}
    a = RandomSearch(Means(), dist, n_iter=5, cv=2, random_state=3, refit=False).fit(ratings)
    b = RandomSearch(Means(), dist, n_iter=5, cv=2, random_state=3, refit=False).fit(ratings)
    assert list(a.cv_results_["params"]) == list(b.cv_results_["params"])
    assert np.array_equal(a.cv_results_["mean_rmse"], b.cv_results_["mean_rmse"])
    shrink = a.cv_results_["param_shrink"]
    assert ((shrink >= 0.5) & (shrink <= 1.0)).all() and shrink.nunique() == 5
    assert all(type(p["regularization"]) is float for p in a.cv_results_["params"])


def test_search_errors_before_fitting(ratings):
    with pytest.raises(ValueError, match="'momentum' is not a parameter of Means"):
        GridSearch(Means(), {"momentum": [0.9]}).fit(ratings)
    with pytest.raises(ValueError, match="regularization must be >= 0"):
        GridSearch(Means(), {"regularization": [1.0, -1.0]}).fit(ratings)
    with pytest.raises(ValueError, match="is not understood"):
        GridSearch(Means(), {"shrink": [1.0]}, scoring="rsme").fit(ratings)
    with pytest.raises(TypeError, match="must be a non-empty list or a distribution"):
        RandomSearch(Means(), {"shrink": 0.5}).fit(ratings)
    with pytest.raises(ValueError, match="n_iter must be an int >= 1"):
        RandomSearch(Means(), {"shrink": [1.0]}, n_iter=0).fit(ratings)


def test_models_clone_like_scikit_learn():
    # scikit-learn's clone: type(est)(**est.get_params(deep=False)), parameters kept identical
    m = Means(regularization=3.0, random_state=np.random.default_rng(0))
    c = type(m)(**m.get_params(deep=False))
    assert all(c.get_params()[k] is v for k, v in m.get_params().items())
    assert m.clone().set_params(shrink=0.1).shrink == 0.1 and m.shrink == 1.0
    try:
        from sklearn.base import clone
    except ImportError:
        return
    assert clone(m).get_params()["regularization"] == 3.0
