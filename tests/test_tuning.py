"""auto_tune: the budget is kept, the best trial is the best of the trials, the refitted model is
fitted on all the data and saved; every model and both kinds of metric; argument errors."""
import sys
import time

import numpy as np
import pytest

import mfrec

pytest.importorskip("optuna")

from mfrec.evaluation.tuning import (SEARCH_SPACES, Dim, Space, _Clock, _rungs,  # noqa: E402
                                     auto_tune, format_trials)


def implicit_data(n_users=120, n_items=80, seed=0):
    """Binary interactions from 4 communities with a few cross-community ones."""
    rng = np.random.default_rng(seed)
    group_u = rng.integers(0, 4, n_users)
    group_i = rng.integers(0, 4, n_items)
    p = np.where(group_u[:, None] == group_i[None, :], 0.35, 0.02)
    X = (rng.random((n_users, n_items)) < p).astype(float)
    X[X.sum(axis=1) == 0, 0] = 1
    return mfrec.Ratings.from_dense(X)


def rating_data(seed=0):
    from conftest import low_rank_ratings
    (u, i, r), _, shape = low_rank_ratings(n_users=100, n_items=70, seed=seed)
    return mfrec.Ratings.from_indices(u, i, np.clip(np.round(r * 2) / 2, 1, 5), shape=shape)


def test_rungs_grow_by_three_up_to_the_epochs():
    assert _rungs(18) == [2, 6, 18]
    assert _rungs(100) == [12, 36, 100]
    assert _rungs(15) == [2, 6, 15]
    assert _rungs(2) == [1, 2]
    assert _rungs(1) == [1]


def test_clock_fits_fixed_and_per_epoch_costs():
    c = _Clock()
    assert c.fit_time(64, 10, 1000) is None
    # one kind of fit: time proportional to epochs (x safety 1.2)
    c.fits.append((64, 2, 1000, 1.0))
    assert c.fit_time(64, 6, 1000) == pytest.approx(1.2 * 3.0)
    # fits of 0.5 s fixed + 0.25 s per epoch at 64 factors, times (k / 64)**1.5 per epoch
    c.fits += [(64, 6, 1000, 2.0), (256, 2, 1000, 0.5 + 0.25 * 2 * 8)]
    assert c.fit_time(64, 18, 1000) == pytest.approx(1.2 * (0.5 + 0.25 * 18))
    assert c.fit_time(1024, 2, 1000) == pytest.approx(1.2 * (0.5 + 0.25 * 2 * 64))
    # twice the ratings: twice both parts
    assert c.fit_time(64, 6, 2000) == pytest.approx(1.2 * 2 * 2.0)


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    # the budget tests time the search, not Numba's first compilation of the kernels (which a
    # cold cache adds to the first fit of a process)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = implicit_data(20, 10)
        mfrec.ImplicitALS(n_factors=2, n_epochs=1, num_threads=1).fit(small)
        mfrec.ImplicitALS(n_factors=2, n_epochs=1).fit(small)
        mfrec.BiasedMF(n_factors=2, n_epochs=1, num_threads=1).fit(rating_data(), validation=
                                                                   rating_data(1))
        mfrec.Popularity().fit(small).recommend([0], n=2)


def _check_result(res, data, budget, t_wall):
    assert t_wall <= budget + 0.5          # the whole call, refit and saving included
    assert res.elapsed_ <= budget
    done = res.trials[res.trials.state == "complete"]
    assert len(done) >= 2
    best = done.value.max() if res.greater_is_better else done.value.min()
    assert res.best_score_ == best
    row = done[done.value == best].iloc[0]
    for name, value in res.best_params_.items():
        if name != "n_epochs":
            assert row[f"param_{name}"] == value
    # the best setting, refitted on every training interaction
    assert res.best_model_.user_items_.nnz == data.nnz
    for name, value in res.best_params_.items():
        assert getattr(res.best_model_, name) == value


def test_ranking_metric_within_budget_and_saved(tmp_path):
    data = implicit_data()
    budget = 6.0
    t0 = time.perf_counter()
    res = auto_tune("implicit-als", data, metric="recall@10", time_budget=budget,
                    output=tmp_path / "best.mfrec", fixed={"num_threads": 1})
    _check_result(res, data, budget, time.perf_counter() - t0)
    assert res.metric == "recall@10" and res.greater_is_better
    assert set(res.best_params_) == {"n_factors", "regularization", "alpha", "n_epochs"}
    # successive halving: some trials stop at an early rung (2 or 6 epochs of 18)
    assert res.best_params_["n_epochs"] == 18
    assert (res.trials.state == "pruned").any()
    assert set(res.trials.epochs[res.trials.state == "pruned"]) <= {2, 6}
    # trial 0 is the model's defaults (symbolic ones such as "auto" included)
    first = res.trials.iloc[0]
    for name in ("n_factors", "regularization", "alpha"):
        assert first[f"param_{name}"] == getattr(mfrec.ImplicitALS(), name)
    loaded = mfrec.load(tmp_path / "best.mfrec")
    np.testing.assert_array_equal(loaded.recommend([0, 1], n=5)[0],
                                  res.best_model_.recommend([0, 1], n=5)[0])
    # a tuned model is at least as good on its validation data as trial 0 (the defaults)
    assert res.best_score_ >= first.value
    assert "recall@10" in format_trials(res)
    # the refit carries the best values over to all the data: the final model uses them
    final = res.best_model_.get_params()
    for name, value in res.refit_params_.items():
        assert final[name] == value


def test_implicit_als_carries_alpha_and_regularization_to_denser_data():
    # 20 x 2000 binary cells: 400 of them in `full` (density 1%), the first 300 in `part`
    rng = np.random.default_rng(0)
    cells = rng.choice(40_000, 400, replace=False)
    users, items = cells // 2000, cells % 2000
    ones = np.ones(400)
    full = mfrec.Ratings.from_indices(users, items, ones, shape=(20, 2000))
    part = mfrec.Ratings.from_indices(users[:300], items[:300], ones[:300], shape=(20, 2000))
    # "auto": alpha = 1 / w0 - 1 with w0 = 30 * density (mean strength 1, below the 0.5 cap)
    a_part, a_full = 1 / (30 * 0.0075) - 1, 1 / (30 * 0.01) - 1
    got = mfrec.ImplicitALS._carry_params({"alpha": 40.0, "regularization": 2.0,
                                           "n_factors": 8}, part, full)
    assert got["n_factors"] == 8
    assert got["alpha"] == pytest.approx(40.0 * a_full / a_part)
    # regularization stays the same multiple of a mean observation's confidence, 1 + alpha
    assert got["regularization"] == pytest.approx(2.0 * (1 + got["alpha"]) / (1 + 40.0))
    # symbolic values stay symbolic; "auto" alpha moves a fixed regularization with itself
    got = mfrec.ImplicitALS._carry_params({"alpha": "auto", "regularization": 2.0}, part, full)
    assert got["alpha"] == "auto"
    assert got["regularization"] == pytest.approx(2.0 * (1 + a_full) / (1 + a_part))


def test_rating_metric_with_early_stopping(tmp_path):
    data = rating_data()
    budget = 4.0
    t0 = time.perf_counter()
    res = auto_tune(mfrec.BiasedMF, data, metric="rmse", time_budget=budget,
                    output=tmp_path / "mf.mfrec", random_state=1, fixed={"num_threads": 1})
    _check_result(res, data, budget, time.perf_counter() - t0)
    assert not res.greater_is_better
    # early stopping: the refit runs the epochs the best trial stopped at
    row = res.trials[res.trials.value == res.best_score_].iloc[0]
    assert res.best_params_["n_epochs"] == row.epochs <= 100
    assert mfrec.load(tmp_path / "mf.mfrec").n_epochs == row.epochs


@pytest.mark.parametrize("name", ["svd", "nmf", "gd", "baseline", "svdpp", "als", "bayesian-mf",
                                  "bpr", "popularity"])
def test_every_model_can_be_tuned(name):
    # two trials each, scored by a metric of its kind; the result is a fitted model of the class
    from mfrec.models import get_model_class, is_implicit
    cls = get_model_class(name)
    implicit = is_implicit(cls)
    data = implicit_data(60, 40) if implicit else rating_data()
    metric = "ndcg@5" if implicit else "mae"
    # the slow-per-epoch models run a fixed, short n_epochs here (then it is not searched)
    fixed = {"n_epochs": 40} if name in ("gd", "nmf", "bayesian-mf") else None
    res = auto_tune(name, data, metric=metric, time_budget=20, n_trials=2, fixed=fixed)
    assert isinstance(res.best_model_, cls)
    assert len(res.trials) <= 2 and np.isfinite(res.best_score_)
    assert cls.__name__ in SEARCH_SPACES


@pytest.mark.parametrize("sampler, pruner", [("random", "hyperband"), ("tpe", "none")])
def test_other_samplers_and_pruners(sampler, pruner):
    # without halving every trial runs the full epochs; Hyperband stops trials at the same rungs
    res = auto_tune("implicit-als", implicit_data(60, 40), metric="ndcg@5", time_budget=20,
                    n_trials=4, sampler=sampler, pruner=pruner, fixed={"num_threads": 1})
    t = res.trials
    assert len(t) == 4 and set(t.state) <= {"complete", "pruned"}
    if pruner == "none":
        assert (t.state == "complete").all() and (t.epochs == 18).all()
    else:
        assert set(t.epochs) <= {2, 6, 18}


def test_fixed_params_and_custom_space():
    # a fixed hyperparameter is not searched; a custom space replaces the table's
    data = implicit_data(60, 40)
    res = auto_tune("implicit-als", data, metric="auc", time_budget=20, n_trials=3,
                    fixed={"n_factors": 8},
                    space=Space({"n_factors": Dim("int", 2, 64), "alpha": Dim("float", 1, 10)},
                                epochs=3))
    assert res.best_model_.n_factors == 8
    assert set(res.best_params_) == {"alpha", "n_epochs"}
    assert res.best_params_["n_epochs"] == 3
    # trial 0 runs the default alpha ("auto"); the sampled ones lie in the custom range
    assert res.trials.param_alpha[0] == mfrec.ImplicitALS().alpha
    assert all(1 <= a <= 10 for a in res.trials.param_alpha[1:])
    assert res.best_params_["alpha"] in res.trials.param_alpha.tolist()


def test_argument_errors(tmp_path, monkeypatch):
    data = implicit_data(30, 20)
    with pytest.raises(ValueError, match="not understood"):
        auto_tune("bpr", data, metric="recall@x")
    with pytest.raises(ValueError, match="time_budget must be a number > 0"):
        auto_tune("bpr", data, time_budget=0)
    with pytest.raises(ValueError, match="'n_factorz' is not a hyperparameter of BPR"):
        auto_tune("bpr", data, fixed={"n_factorz": 3})
    with pytest.raises(ValueError, match="n_factors must be an int >= 1"):
        auto_tune("bpr", data, fixed={"n_factors": 0})
    with pytest.raises(ValueError, match="unknown model"):
        auto_tune("nope", data)
    with pytest.raises(ValueError, match="sampler must be one of"):
        auto_tune("bpr", data, sampler="grid")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        auto_tune("bpr", data, output=tmp_path / "no" / "m.mfrec")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"mfrec\[plot\]"):
        auto_tune("bpr", data, plot=tmp_path / "p.png")
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"mfrec\[tune\]"):
        auto_tune("bpr", data)


# ---------------------------------------------------------------------- mfrec tune --auto
def _csv(tmp_path, ratings, name="data.csv"):
    path = tmp_path / name
    ratings.to_frame()[["user", "item", "rating"]].to_csv(path, index=False)
    return path


def _run_json(capsys, argv):
    import json

    from mfrec.cli import main
    t0 = time.perf_counter()
    rc = main(argv + ["--json"])
    wall = time.perf_counter() - t0
    out = capsys.readouterr().out
    return rc, (json.loads(out) if rc == 0 else None), wall


def test_cli_auto_ranking_metric(tmp_path, capsys):
    data = implicit_data()
    path = _csv(tmp_path, data)
    out = tmp_path / "best.mfrec"
    rc, info, wall = _run_json(capsys, ["tune", str(path), "-m", "implicit-als", "--auto",
                                        "--time-budget", "6", "--metric", "recall@10",
                                        "-o", str(out), "--seed", "0", "--threads", "1"])
    assert rc == 0
    assert wall <= 6.5 and info["elapsed"] <= 6
    assert info["metric"] == "recall@10" and info["n_trials"] >= 2
    complete = [t["value"] for t in info["trials"] if t["state"] == "complete"]
    assert info["best_score"] == max(complete)
    model = mfrec.load(out)
    assert isinstance(model, mfrec.ImplicitALS) and model.num_threads == 1
    assert model.user_items_.nnz == data.nnz
    for name, value in info["best_params"].items():
        assert getattr(model, name) == value


def test_cli_auto_rating_metric_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from mfrec.cli import main
    path = _csv(tmp_path, rating_data())
    out, png = tmp_path / "mf.mfrec", tmp_path / "trials.png"
    t0 = time.perf_counter()
    rc = main(["tune", str(path), "-m", "biased-mf", "--auto", "--time-budget", "8",
               "--metric", "rmse", "-o", str(out), "--plot", str(png), "--threads", "1"])
    assert rc == 0 and time.perf_counter() - t0 <= 8.5
    text = capsys.readouterr().out
    assert "Auto-tuned BiasedMF for validation rmse" in text
    assert "trial  state" in text and "Best model saved to" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(mfrec.load(out), mfrec.BiasedMF)


def test_cli_auto_reads_user_item_lists(tmp_path, capsys):
    # LightGCN's format: --format adjacency; the default metric of an implicit model
    f = tmp_path / "train.txt"
    f.write_text("".join(f"{u} {u % 25} {(u + 1) % 25} {25 + u % 3}\n" for u in range(60)))
    rc, info, _ = _run_json(capsys, ["tune", str(f), "--format", "adjacency", "-m",
                                     "popularity", "--auto", "--time-budget", "3"])
    assert rc == 0 and info["metric"] == "recall@20" and info["n_train"] > 0


@pytest.mark.parametrize("extra, match", [
    (["--auto", "--grid", "n_factors=2,3"], "--auto searches the model's own ranges"),
    (["--auto", "--time-budget", "0"], "--time-budget must be"),
    (["--auto", "--metric", "recall@x"], "not understood"),
    ([], "--grid"),
    (["--metric", "rmse", "--grid", "n_factors=2,3"], "--metric"),
])
def test_cli_auto_usage_errors(tmp_path, capsys, extra, match):
    from mfrec.cli import main
    path = _csv(tmp_path, implicit_data(20, 10))
    assert main(["tune", str(path), "-m", "bpr"] + extra) == 2
    assert match in capsys.readouterr().err
