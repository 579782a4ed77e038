"""The fit guard (mfrec.models._guard): real fits that went wrong warn; healthy defaults don't."""
import warnings

import numpy as np
import pytest

import mfrec
from mfrec.models._guard import FitWarning, check_fit, diagnose

from conftest import read_ml100k_split


@pytest.fixture(scope="module")
def u1(ml100k_dir):
    train, _ = read_ml100k_split(ml100k_dir, "u1")
    return mfrec.Ratings.from_frame(train)


def _fit_quietly(model, data):
    """Fit with every FitWarning turned into an error: a healthy fit must not warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)
        return model.fit(data)


def _fit_warnings(model, data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(data)
    return [str(w.message) for w in caught if issubclass(w.category, FitWarning)]


def test_fitwarning_is_public_and_a_userwarning():
    assert mfrec.FitWarning is FitWarning
    assert issubclass(FitWarning, UserWarning)


def test_the_demo_stays_quiet():
    # SVD, NMF and GradientDescent (notebook settings and defaults) on the seed matrix
    import io

    from mfrec.demo import run_demo
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)
        run_demo(io.StringIO())


@pytest.mark.parametrize("cls", [mfrec.SVD, mfrec.ALS, mfrec.BiasedMF, mfrec.SVDpp,
                                 mfrec.Baseline, mfrec.ImplicitALS, mfrec.BPR])
def test_quiet_on_default_fits_of_the_seed_matrix(cls, seed_matrix):
    params = cls().get_params()
    kw = {k: v for k, v in (("random_state", 0), ("num_threads", 1)) if k in params}
    model = _fit_quietly(cls(**kw), seed_matrix)
    assert diagnose(model) == []


@pytest.mark.parametrize("cls", [mfrec.ImplicitALS, mfrec.ALS, mfrec.BiasedMF, mfrec.SVDpp,
                                 mfrec.Baseline])
def test_quiet_on_default_fits_of_ml100k(cls, u1):
    # the slow defaults (BPR, BayesianMF, NMF, SVD, GradientDescent) are checked quiet on ML-100K
    # in benchmarks/results/defaults.md; here the fast ones, with real fits
    model = _fit_quietly(cls(random_state=0), u1)
    assert diagnose(model) == []


def test_quiet_on_bpr_ml100k_short(u1):
    model = _fit_quietly(mfrec.BPR(n_epochs=20, random_state=0, num_threads=1), u1)
    assert diagnose(model) == []


def test_implicit_als_collapse_warns_with_the_parameter_to_move(u1):
    # a regularization 4000 times the default crushes every user vector
    msgs = _fit_warnings(mfrec.ImplicitALS(regularization=100.0, reg_exponent=1.0,
                                           random_state=0), u1)
    assert len(msgs) == 1
    assert msgs[0].startswith("ImplicitALS factors collapsed (median user norm")
    assert "lower regularization (now 100.0)" in msgs[0]
    assert "reg_exponent (now 1.0)" in msgs[0]


def test_als_collapse_on_ratings_warns(u1):
    msgs = _fit_warnings(mfrec.ALS(regularization=1e5, random_state=0), u1)
    assert len(msgs) == 1 and "ALS factors collapsed" in msgs[0]
    assert "lower regularization (now 100000.0)" in msgs[0]


def test_bpr_no_better_than_popularity_warns(u1):
    # a step size so small that one epoch leaves the random start: a random ranking
    msgs = _fit_warnings(mfrec.BPR(n_epochs=1, learning_rate=1e-6, random_state=0,
                                   num_threads=1), u1)
    assert len(msgs) == 1
    assert msgs[0].startswith("BPR ranks its own training items no better than popularity")
    assert "raise n_epochs (now 1)" in msgs[0]


def test_blowup_warns_on_a_real_fit(seed_matrix):
    # unregularized gradient descent with a fixed step far beyond stability
    # (a fixed step past stability, stopped before mfrec's own divergence check trips)
    msgs = _fit_warnings(mfrec.GradientDescent(learning_rate=0.09, n_epochs=3, regularization=0.0,
                                               random_state=0), seed_matrix)
    assert len(msgs) == 1 and msgs[0].startswith("GradientDescent factors blew up")
    assert "lower learning_rate (now 0.09) or raise regularization (now 0.0)" in msgs[0]


def test_worse_than_the_mean_rating_warns(seed_matrix):
    msgs = _fit_warnings(mfrec.GradientDescent(learning_rate=0.07, n_epochs=3, regularization=0.0,
                                               random_state=0), seed_matrix)
    assert len(msgs) == 1
    assert msgs[0].startswith("GradientDescent fits its training ratings no better than the "
                              "constant 2.5 (RMSE 2.6")
    # regularization is already 0: the hint does not say to lower it
    assert "raise n_epochs (now 3) or lower learning_rate (now 0.07)" in msgs[0]
    assert "regularization" not in msgs[0]


def test_hand_built_models_are_not_checked():
    m = mfrec.FactorModel()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)
        m._set_factor_state(np.zeros((3, 2)), np.zeros((4, 2)))
    assert check_fit(m) == []


def test_the_warning_points_at_the_callers_line(seed_matrix):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mfrec.GradientDescent(learning_rate=0.09, n_epochs=3, regularization=0.0,
                              random_state=0).fit(seed_matrix)
    fit_warnings = [w for w in caught if issubclass(w.category, FitWarning)]
    assert fit_warnings and fit_warnings[0].filename == __file__


def test_cli_fit_prints_the_warning_as_one_line(u1, tmp_path, capsys):
    from mfrec.cli import main
    path = tmp_path / "u1.csv"
    with open(path, "w") as fh:
        fh.write("user,item,rating\n")
        for u, i, r in zip(u1.user_vocab.ids[u1.csr.tocoo().row],
                           u1.item_vocab.ids[u1.csr.tocoo().col], u1.csr.tocoo().data):
            fh.write(f"{u},{i},{r:g}\n")
    rc = main(["fit", str(path), "-m", "implicit-als", "--regularization", "100",
               "--threads", "1", "-o", str(tmp_path / "m.mfrec")])
    err = capsys.readouterr().err
    assert rc == 0
    lines = [line for line in err.splitlines() if "warning" in line]
    assert len(lines) == 1
    assert lines[0].startswith("mfrec: warning: ImplicitALS factors collapsed")
    assert "lower regularization (now 100)" in lines[0]
    # a healthy default fit prints no warning
    rc = main(["fit", str(path), "-m", "implicit-als", "--threads", "1",
               "-o", str(tmp_path / "m2.mfrec")])
    assert rc == 0 and "warning" not in capsys.readouterr().err
