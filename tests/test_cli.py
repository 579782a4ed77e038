"""The command line: fit -> save -> info/evaluate/recommend/similar, cv and tune with tables,
JSON and plots, data-option detection, and exit codes 0/1/2 with messages, not tracebacks."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import mfrec
from mfrec.cli import main

MODEL = ["--model", "biased-mf", "--n-epochs", "5", "--n-factors", "4", "--seed", "0",
         "--threads", "1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small headerless tab-separated file like MovieLens u.data, plus a held-out file."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    n = 1200
    u = rng.integers(1, 61, n)
    i = rng.integers(1, 81, n)
    r = np.clip(np.rint(3 + 0.02 * (u % 7) - 0.03 * (i % 5) + rng.normal(0, 1, n)), 1, 5)
    ts = 880000000 + rng.integers(0, 10**6, n)
    seen = set()
    lines, test = [], []
    for row in zip(u, i, r.astype(int), ts):
        if (row[0], row[1]) in seen:
            continue
        seen.add((row[0], row[1]))
        (test if len(seen) % 5 == 0 else lines).append("\t".join(map(str, row)))
    (d / "train.data").write_text("\n".join(lines) + "\n")
    (d / "test.data").write_text("\n".join(test) + "\n")
    (d / "names.txt").write_text("".join(f"{k}|Item number {k}|x\n" for k in range(1, 81)))
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model_path(folder):
    path = folder / "m.mfrec"
    assert main(["fit", str(folder / "train.data"), *MODEL, "-o", str(path), "-q"]) == 0
    return path


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"mfrec {mfrec.__version__}"
    code, out, _ = run(capsys, "fit", "--help")
    assert code == 0 and "--output" in out
    code, out, _ = run(capsys)
    assert code == 2 and "COMMAND" in out


def test_fit_saves_a_loadable_model(capsys, folder):
    path = folder / "fit.mfrec"
    code, out, err = run(capsys, "fit", folder / "train.data", *MODEL, "-o", path)
    assert code == 0, err
    assert "Fitted BiasedMF on" in out and f"Saved to {path}" in out
    assert "%|" not in err  # not a terminal: no progress bar
    m = mfrec.load(path)
    assert m.n_factors == 4 and m.n_epochs == 5 and m.random_state == 0
    # the headerless 4-column file was read as user, item, rating, timestamp
    n_lines = len((folder / "train.data").read_text().splitlines())
    assert m.user_items_.nnz == n_lines and m.rating_range_ == (1.0, 5.0)


def test_fit_json_validation_and_plot(capsys, folder):
    pytest.importorskip("matplotlib")
    code, out, err = run(capsys, "fit", folder / "train.data", *MODEL, "--n-epochs", "8",
                         "--validation", "0.2", "--plot", folder / "fit.png", "--labels",
                         folder / "names.txt", "-o", folder / "v.mfrec", "--json")
    assert code == 2 and "given twice" in err  # --n-epochs twice is a usage error
    args = ["fit", folder / "train.data", "--model", "biased-mf", "--n-epochs", "8", "--seed",
            "1", "--validation", "0.2", "--plot", folder / "fit.png", "--labels",
            folder / "names.txt", "-o", folder / "v.mfrec", "--json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    res = json.loads(out)
    assert res["epochs"] <= 8 and res["validation_ratings"] > 0 and res["validation_rmse"] > 0
    assert (folder / "fit.png").read_bytes()[:4] == b"\x89PNG"


def test_info(capsys, model_path):
    code, out, _ = run(capsys, "info", model_path)
    assert code == 0 and "BiasedMF model" in out and "n_factors = 4" in out
    code, out, _ = run(capsys, "info", model_path, "--json")
    info = json.loads(out)
    assert info["n_factors"] == 4 and info["params"]["n_epochs"] == 5
    assert info["format_version"] == 1 and info["mfrec_version"] == mfrec.__version__


def test_evaluate(capsys, folder, model_path):
    code, out, err = run(capsys, "evaluate", model_path, folder / "test.data", "--json")
    assert code == 0, err
    res = json.loads(out)
    for key in ("rmse", "mae", "ndcg@10", "precision@10", "recall@10", "n_test",
                "unseen_ratings"):
        assert key in res
    model = mfrec.load(model_path)
    test = mfrec.Ratings.from_file(folder / "test.data")
    assert res["rmse"] == pytest.approx(mfrec.evaluation.evaluate(model, test, ["rmse"])["rmse"])
    code, out, _ = run(capsys, "evaluate", model_path, folder / "test.data", "--metrics",
                       "mae,mrr")
    assert code == 0 and "mae" in out and "mrr" in out and "rmse" not in out


def test_recommend_and_similar(capsys, folder, model_path):
    code, out, err = run(capsys, "recommend", model_path, "--user", "7", "-n", "3", "--labels",
                         folder / "names.txt")
    assert code == 0, err
    assert "Top 3 for user 7:" in out and "Item number" in out
    model = mfrec.load(model_path)
    ids, scores = model.recommend([7], n=3)
    code, out, _ = run(capsys, "recommend", model_path, "-u", "7", "-n", "3", "--json")
    rows = json.loads(out)
    assert [r["item"] for r in rows] == ids[0].tolist()
    assert [r["score"] for r in rows] == pytest.approx(scores[0].tolist())
    # a file of users gives CSV, unknown users are skipped with a note
    (folder / "users.txt").write_text("user\n7\n8\n999\n")
    code, out, err = run(capsys, "recommend", model_path, "--users", folder / "users.txt",
                         "-n", "2", "-o", folder / "recs.csv")
    assert code == 0 and "unknown user" in err and "['999']" in err
    with open(folder / "recs.csv") as f:
        recs = list(csv.DictReader(f))
    assert len(recs) == 4 and [r["user"] for r in recs] == ["7", "7", "8", "8"]
    assert [int(r["rank"]) for r in recs] == [1, 2, 1, 2]
    code, out, _ = run(capsys, "similar", model_path, "--item", "5", "-n", "4", "--json")
    sims = json.loads(out)
    assert code == 0 and len(sims) == 4 and all(-1 <= s["similarity"] <= 1 for s in sims)
    assert [s["item"] for s in sims] == model.similar_items([5], n=4)[0][0].tolist()


def test_cv_table_csv_plot(capsys, folder):
    code, out, err = run(capsys, "cv", folder / "train.data", *MODEL, "--folds", "3",
                         "--metrics", "rmse,ndcg@5", "--csv", folder / "cv.csv")
    assert code == 0, err
    assert "3-fold cross-validation" in out
    assert out.count("\n1 ") + out.count("\nmean") + out.count("\nstd") == 3
    header = (folder / "cv.csv").read_text().splitlines()[0]
    assert header.startswith("fold,rmse,ndcg@5,fit_time,test_time")
    code, out, err = run(capsys, "cv", folder / "train.data", *MODEL, "--folds", "2", "--json")
    res = json.loads(out)
    assert len(res["folds"]) == 2 and {"rmse", "mae", "fit_time"} <= set(res["mean"])
    pytest.importorskip("matplotlib")
    code, _, _ = run(capsys, "cv", folder / "train.data", *MODEL, "--folds", "2", "--plot",
                     folder / "cv.png", "-q")
    assert code == 0 and (folder / "cv.png").read_bytes()[:4] == b"\x89PNG"


def test_cv_other_splits(capsys, folder):
    code, out, err = run(capsys, "cv", folder / "train.data", *MODEL, "--split", "user-temporal",
                         "--test-size", "2", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert len(res["folds"]) == 1 and res["folds"][0]["n_test"] > 0
    code, out, err = run(capsys, "cv", folder / "train.data", *MODEL, "--split", "loo",
                         "--folds", "2", "--metrics", "hit_rate@10", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert len(res["folds"]) == 2 and res["folds"][0]["n_test"] == 60  # one per user
    code, _, err = run(capsys, "cv", folder / "train.data", *MODEL, "--split", "holdout",
                       "--test-size", "5")
    assert code == 2 and "--test-size must be a fraction" in err


def test_tune_grid_and_random(capsys, folder):
    code, out, err = run(capsys, "tune", folder / "train.data", *MODEL, "--grid",
                         "regularization=0.02,0.2", "n_factors=2,4", "--folds", "2",
                         "-o", folder / "best.mfrec", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert len(res["results"]) == 4 and res["scoring"] == "rmse"
    best = mfrec.load(folder / "best.mfrec")
    assert {"regularization": best.regularization, "n_factors": best.n_factors} == \
        res["best_params"]
    assert res["best_score"] == min(r["mean_rmse"] for r in res["results"])
    code, out, err = run(capsys, "tune", folder / "train.data", *MODEL, "--grid",
                         "learning_rate=0.001:0.05:log", "--random", "3", "--folds", "2")
    assert code == 0, err
    assert "RandomSearch of BiasedMF: 3 candidates" in out and "Best:" in out


@pytest.mark.parametrize("argv, message", [
    (["fit", "DATA", "--model", "nope", "-o", "x"], "unknown model 'nope'"),
    (["fit", "DATA", "--model", "biased-mf", "--momentum", "0.9", "-o", "x"],
     "--momentum is not an option of this command nor a hyperparameter of BiasedMF"),
    (["fit", "DATA", "--model", "biased-mf", "--n-factors", "0", "-o", "x"],
     "n_factors must be an int >= 1, got 0"),
    (["fit", "DATA", "-o", "x"], "the following arguments are required: -m/--model"),
    (["cv", "DATA", "--model", "biased-mf", "--metrics", "rsme"], "'rsme' is not understood"),
    (["cv", "DATA", "--model", "biased-mf", "--folds", "1"], "--folds must be >= 2"),
    (["tune", "DATA", "--model", "biased-mf", "--grid", "n_factors"], "NAME=VALUES"),
    (["tune", "DATA", "--model", "biased-mf", "--grid", "lr=0.1:1"], "needs --random"),
    (["tune", "DATA", "--model", "biased-mf", "--grid", "momentum=1,2"],
     "--grid momentum: not a hyperparameter"),
    (["recommend", "MODEL"], "give --user ID"),
    (["evaluate", "MODEL"], "required: DATA"),
    (["fit", "DATA", "--model", "biased-mf", "-o", "x", "--header", "maybe"], "invalid choice"),
])
def test_usage_errors_exit_2(capsys, folder, argv, message):
    argv = [str(folder / "train.data") if a == "DATA" else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_runtime_errors_exit_1(capsys, folder, model_path):
    code, _, err = run(capsys, "fit", folder / "missing.csv", *MODEL, "-o", folder / "x")
    assert code == 1 and err.startswith("mfrec: error: no such file") and "Traceback" not in err
    (folder / "bad.mfrec").write_bytes(model_path.read_bytes()[:500])
    code, _, err = run(capsys, "info", folder / "bad.mfrec")
    assert code == 1 and "truncated or corrupted" in err
    code, _, err = run(capsys, "recommend", model_path, "--user", "12345")
    assert code == 1 and "unknown user id(s)" in err and "['12345']" in err
    (folder / "nan.csv").write_text("user,item,rating\n1,2,3\n1,3,oops\n")
    code, _, err = run(capsys, "fit", folder / "nan.csv", *MODEL, "-o", folder / "x")
    assert code == 1 and err.startswith("mfrec: error:") and "Traceback" not in err


def test_data_options(capsys, tmp_path):
    # a header with recognised names is detected; odd column orders need --names and --sep
    (tmp_path / "a.csv").write_text("userId,movieId,rating\n" + "".join(
        f"u{k % 9},m{k % 13},{1 + k % 5}\n" for k in range(80)))
    code, out, err = run(capsys, "fit", tmp_path / "a.csv", *MODEL, "-o", tmp_path / "a.mfrec",
                         "--json", "--duplicates", "last")
    assert code == 0, err
    assert json.loads(out)["n_users"] == 9
    assert mfrec.load(tmp_path / "a.mfrec").user_vocab_.ids[0] == "u0"
    (tmp_path / "b.txt").write_text("".join(f"m{k % 13};u{k % 9};{1 + k % 5}\n"
                                            for k in range(80)))
    code, out, err = run(capsys, "fit", tmp_path / "b.txt", *MODEL, "-o", tmp_path / "b.mfrec",
                         "--sep", ";", "--names", "item,user,rating", "--header", "no",
                         "--duplicates", "mean", "--json")
    assert code == 0, err
    assert json.loads(out)["n_items"] == 13
    code, out, _ = run(capsys, "recommend", tmp_path / "b.mfrec", "--user", "u3", "-n", "2",
                       "--json")
    assert code == 0 and all(r["item"].startswith("m") for r in json.loads(out))


def test_movielens_from_the_shell(capsys, ml100k_dir, tmp_path):
    # the new user's path on MovieLens: u1.base and u1.test need no data options
    path = tmp_path / "ml.mfrec"
    code, out, err = run(capsys, "fit", ml100k_dir / "u1.base", "--model", "biased-mf",
                         "--seed", "0", "-o", path)
    assert code == 0, err
    assert "80000 ratings (943 users, 1650 items)" in out
    code, out, err = run(capsys, "evaluate", path, ml100k_dir / "u1.test", "--json",
                         "--metrics", "rmse,mae")
    res = json.loads(out)
    assert res["n_test"] == 20000 and 0.85 < res["rmse"] < 0.96 and res["mae"] < res["rmse"]


def test_subprocess_exit_code(tmp_path):
    # the real process: exit status and a one-line message on stderr
    bad = subprocess.run([sys.executable, "-m", "mfrec.cli", "info", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "no such model file" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_model_help_lists_hyperparameters(capsys):
    # `fit -m NAME --help` documents each hyperparameter: option, default and a description
    code, out, err = run(capsys, "fit", "-m", "biased-mf", "--help")
    assert code == 0, err
    assert "hyperparameters of BiasedMF" in out
    flat = " ".join(out.split())  # argparse wraps the help text
    assert "--n-factors N Length of the user and item factor vectors. (int, default: 100)" in flat
    assert "--learning-rate X SGD step size of the first epoch. (float, default: 0.015)" in flat
    from mfrec.models import MODELS, get_model_class
    for name in MODELS:  # every model, every parameter, with some description
        cls = get_model_class(name)
        code, out, err = run(capsys, "cv", "--model", name, "-h")
        assert code == 0, err
        flat = " ".join(out.split())
        for param in cls._param_names():
            opt = "--" + param.replace("_", "-")
            assert opt in flat, (name, opt)
            after = flat.split(opt, 1)[1].split("default:", 1)[0]
            assert len(after.strip()) > 10, (name, param, after)  # a description, not blank
    # without -m the help says how to get the list; an unknown model is a usage error
    code, out, _ = run(capsys, "tune", "--help")
    assert code == 0 and "-m NAME with --help" in " ".join(out.split())
    code, _, err = run(capsys, "fit", "-m", "nope", "--help")
    assert code == 2 and "unknown model 'nope'" in err


def test_tune_grid_does_not_swallow_data(capsys, folder):
    # DATA after the --grid values is the data file, not one more grid entry
    code, out, err = run(capsys, "tune", *MODEL, "--grid", "regularization=0.02,0.2",
                         "n_factors=2,4", folder / "train.data", "--folds", "2", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert len(res["results"]) == 4
    assert set(res["best_params"]) == {"regularization", "n_factors"}
    code, out, err = run(capsys, "tune", "--grid=n_factors=2,4", *MODEL, folder / "train.data",
                         "--folds", "2", "--json")
    assert code == 0, err
    assert len(json.loads(out)["results"]) == 2
    # a grid without values is still a usage error
    code, _, err = run(capsys, "tune", *MODEL, "--grid", folder / "train.data")
    assert code == 2 and "NAME=VALUES" in err


@pytest.mark.parametrize("command", ["fit", "cv", "tune"])
def test_plot_without_matplotlib_fails_before_training(capsys, folder, monkeypatch, command):
    # None in sys.modules makes `import matplotlib` fail, as when the extra is not installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out_model = folder / f"plotless-{command}.mfrec"
    extra = {"fit": ["-o", out_model], "cv": ["--folds", "2"],
             "tune": ["--grid", "n_factors=2,4", "-o", out_model]}[command]
    fitted = []
    monkeypatch.setattr(mfrec.BiasedMF, "fit", lambda self, *a, **k: fitted.append(1))
    code, out, err = run(capsys, command, folder / "train.data", *MODEL, *extra, "--plot",
                         folder / "p.png")
    assert code == 1 and "pip install 'mfrec[plot]'" in err and "--plot" in err
    assert not fitted and not out_model.exists() and out == ""


def test_help_and_recommend_import_little(tmp_path, model_path):
    # `mfrec --help` imports no NumPy; recommending for a user of a saved model needs neither
    # Numba nor pandas (the NumPy top-N path), so a warm call stays fast
    code = ("import sys; from mfrec.cli import main; main(['--help']); "
            "print(sorted(m for m in ('numpy', 'pandas', 'numba', 'scipy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
    code = ("import sys; from mfrec.cli import main; "
            f"assert main(['recommend', {str(model_path)!r}, '--user', '7', '-n', '3']) == 0; "
            "print(sorted(m for m in ('pandas', 'numba', 'tqdm') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Top 3 for user 7:" in res.stdout and res.stdout.strip().splitlines()[-1] == "[]"


def test_labels_from_movielens_and_csv(capsys, folder, model_path, tmp_path):
    # --labels reads u.item ('|', latin-1) and a CSV with a header alike
    (tmp_path / "u.item").write_bytes("".join(
        f"{k}|Caf\xe9 {k} (1995)|01-Jan-1995||http://x|0|1\n" for k in range(1, 81)
    ).encode("latin-1"))
    (tmp_path / "names.csv").write_text("movieId,title,genres\n" + "".join(
        f'{k},"Film, number {k}",Drama\n' for k in range(1, 81)))
    model = mfrec.load(model_path)
    first = model.recommend([7], n=1)[0][0, 0]
    code, out, err = run(capsys, "recommend", model_path, "-u", "7", "-n", "1", "--labels",
                         tmp_path / "u.item", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["name"] == f"Caf\xe9 {first} (1995)"
    code, out, err = run(capsys, "recommend", model_path, "-u", "7", "-n", "1", "--labels",
                         tmp_path / "names.csv", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["name"] == f"Film, number {first}"
