"""mfrec.spark: a Spark fit is an ordinary model (same state as a local fit, saves, loads and
recommends locally), recommend_all and evaluate in Spark agree with the local code, and the
missing-Java / missing-pyspark errors say what to install.

Spark runs in ``local[2]`` with one session for the module; one test starts a
``local-cluster[2,1,1024]`` (executors in their own JVMs) in a subprocess. Without pyspark or Java
the Spark tests skip, except in CI (``CI`` set, or ``MFREC_REQUIRE_SPARK=1`` as ``.ci/run``
sets), where they fail.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mfrec
from conftest import read_ml100k_split, two_blocks

SPARK_CONF = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
              "spark.default.parallelism": "2"}


def spark_missing():
    """Why Spark cannot run here, or None."""
    try:
        import pyarrow  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError as exc:
        return f"pyspark/pyarrow not installed ({exc}); pip install 'mfrec[spark]'"
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        return "no Java runtime (java on PATH or JAVA_HOME)"
    return None


def need_spark():
    why = spark_missing()
    if why is None:
        return
    if (os.environ.get("MFREC_REQUIRE_SPARK") == "1"
            or os.environ.get("CI", "").lower() not in ("", "0", "false")):
        pytest.fail(f"Spark tests must run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def spark():
    need_spark()
    from pyspark.sql import SparkSession

    import mfrec.spark as ms
    running = SparkSession.getActiveSession()
    session = ms.session("local[2]", driver_memory="1g", shuffle_partitions=4, conf=SPARK_CONF)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    if running is None:
        session.stop()


def test_local_workers_run_this_interpreter(spark):
    # (not whatever "python3" the PATH finds: a virtual environment run by its path, without
    # activating it, has mfrec and pyarrow where that one may not)
    import sys
    if os.environ.get("PYSPARK_PYTHON") not in (None, sys.executable):
        pytest.skip("PYSPARK_PYTHON names another interpreter")
    ran = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("sys").executable)
    assert ran.collect() == [sys.executable]


@pytest.fixture(scope="module")
def u1(ml100k_dir):
    train, test = read_ml100k_split(ml100k_dir, "u1")
    return train[["user", "item", "rating"]], test[["user", "item", "rating"]]


@pytest.fixture(scope="module")
def spark_als(spark, u1):
    """mfrec.ALS fitted by Spark on u1.base (k=64, lambda=0.05, 10 sweeps)."""
    import mfrec.spark as ms
    return ms.fit(spark.createDataFrame(u1[0]), "als", spark=spark, n_factors=64,
                  regularization=0.05, n_epochs=10, random_state=0)


# ---------------------------------------------------------------------- no Spark needed
def test_missing_java_is_a_clear_error(monkeypatch, tmp_path):
    # no JAVA_HOME and an empty PATH: the error names how to install a runtime
    import mfrec.spark as ms
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install -y default-jre-headless"):
        ms.check_java()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="holds no bin/java"):
        ms.check_java()


def test_missing_pyspark_names_the_extra(monkeypatch):
    # pyspark unimportable: ImportError naming the extra, raised before any work
    import mfrec.spark as ms
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(ImportError, match=r"pip install 'mfrec\[spark\]'"):
        ms.recommend_all(mfrec.ALS(n_factors=2, n_epochs=2, random_state=0).fit(two_blocks()))


def test_bad_arguments_fail_before_spark():
    # validated like a local fit, without starting Spark
    import mfrec.spark as ms
    with pytest.raises(ValueError, match="model must be one of"):
        ms.fit("x.parquet", "bpr")
    with pytest.raises(ValueError, match="n_factors must be an int >= 1, got 0"):
        ms.fit("x.parquet", "als", n_factors=0)
    with pytest.raises(TypeError, match="nosuch"):
        ms.fit("x.parquet", "als", nosuch=1)


def brute_topn(U, Q, bias, seen_rows, n):
    S = (U @ Q.T + bias).astype(np.float64)
    for r, items in enumerate(seen_rows):
        S[r, list(items)] = -np.inf
    return -np.sort(-S, axis=1)[:, :n]


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 6), n_items=st.integers(1, 80), k=st.integers(1, 4),
       block=st.integers(1, 40), n=st.integers(1, 8), chunk=st.sampled_from([0, 1, 2, 3, 64]),
       seed=st.integers(0, 10**6))
def test_topn_block_equals_brute_force(m, n_items, k, block, n, chunk, seed):
    # the per-partition top-N over item blocks, seen items excluded, equals a full sort, with
    # candidates pre-selected by chunk maxima (chunk > 0, tiles of >= 2 * n * chunk items) or not
    from mfrec.spark import topn_block
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((m, k)).astype(np.float32)
    Q = rng.standard_normal((n_items, k)).astype(np.float32)
    bias = rng.standard_normal(n_items).astype(np.float32)
    seen_rows = [sorted(rng.choice(n_items, rng.integers(0, n_items + 1), replace=False))
                 for _ in range(m)]
    indptr = np.r_[0, np.cumsum([len(s) for s in seen_rows])].astype(np.int64)
    indices = np.array([i for s in seen_rows for i in s], dtype=np.int32)
    blocks = [(s, Q[s:s + block], bias[s:s + block]) for s in range(0, n_items, block)]
    pos, sc = topn_block(U, blocks, indptr, indices, np.arange(m), n, chunk=chunk)
    want = brute_topn(U, Q, bias, seen_rows, n)
    if want.shape[1] < n:
        want = np.hstack([want, np.full((m, n - want.shape[1]), -np.inf)])
    np.testing.assert_allclose(sc, want, rtol=1e-5, atol=1e-5)
    assert np.array_equal(pos < 0, ~np.isfinite(want))
    for r in range(m):
        ok = pos[r] >= 0
        assert not set(pos[r, ok]) & set(seen_rows[r])
        np.testing.assert_allclose(sc[r, ok], U[r] @ Q[pos[r, ok]].T + bias[pos[r, ok]],
                                   rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- Spark, local[2]
def test_string_ids_give_the_local_state(spark):
    # string ids are encoded in Spark; vocabularies, seen matrix, mean, range and biases are
    # what a local fit holds (biases checked against the bias passes done by hand in NumPy)
    import mfrec.spark as ms
    rng = np.random.default_rng(1)
    users = [f"u{j}" for j in rng.integers(0, 12, 120)]
    items = [f"item-{j}" for j in rng.integers(0, 9, 120)]
    frame = pd.DataFrame({"who": users, "what": items}).drop_duplicates().reset_index(drop=True)
    frame["stars"] = rng.integers(1, 6, len(frame)).astype(float)
    model = ms.fit(spark.createDataFrame(frame), "als", spark=spark, user_col="who",
                   item_col="what", rating_col="stars", n_factors=3, n_epochs=3,
                   regularization=0.1, random_state=0, bias_passes=3)
    local = mfrec.ALS(n_factors=3, n_epochs=3, regularization=0.1, random_state=0).fit(
        frame.rename(columns={"who": "user", "what": "item", "stars": "rating"}))
    assert isinstance(model, mfrec.ALS)
    assert set(vars(model)) == set(vars(local))  # the attributes of a local fit, no more
    assert model.get_params() == local.get_params()
    assert model.user_vocab_ == local.user_vocab_ and model.item_vocab_ == local.item_vocab_
    assert model.user_vocab_.ids.dtype == object and model.user_vocab_.ids[0] == "u0"
    assert model.user_items_.dtype == np.float32
    assert (model.user_items_ != local.user_items_).nnz == 0
    assert model.rating_range_ == local.rating_range_
    assert model.global_mean_ == pytest.approx(local.global_mean_)
    assert model.user_factors_.shape == local.user_factors_.shape
    assert model.user_factors_.dtype == np.float32 and model.regularization_ == 0.1
    # the bias passes by hand: b_u = sum(r - mu - b_i) / (n_u (1 + lambda)), items likewise
    u, i, r = (local.user_items_.tocoo().row, local.user_items_.tocoo().col,
               local.user_items_.tocoo().data.astype(float))
    mu = r.mean()
    nu, ni = np.bincount(u), np.bincount(i)
    bu = np.bincount(u, r - mu) / (nu * 1.1)
    for p in range(3):
        bi = np.bincount(i, r - mu - bu[u]) / (ni * 1.1)
        if p < 2:
            bu = np.bincount(u, r - mu - bi[i]) / (nu * 1.1)
    np.testing.assert_allclose(model.user_bias_, bu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.item_bias_, bi, rtol=1e-5, atol=1e-6)
    # an unknown user falls back to mean + item bias, never NaN (SPARK-14489)
    got = model.predict(["nobody"], ["item-0"])
    assert got[0] == pytest.approx(np.clip(mu + bi[0], 1, 5), rel=1e-5)


def test_ml100k_spark_fit_matches_local(spark_als, u1, tmp_path):
    # same hyperparameters, same data: test RMSE within 0.005 of mfrec.ALS; the saved model
    # loads and recommends locally exactly as the fitted one
    from mfrec.evaluation import rmse
    train, test = u1
    local = mfrec.ALS(n_factors=64, regularization=0.05, n_epochs=10, random_state=0).fit(train)
    got = rmse(test.rating, spark_als.predict(test.user, test.item))
    want = rmse(test.rating, local.predict(test.user, test.item))
    assert abs(got - want) < 0.005, (got, want)
    assert spark_als.user_vocab_ == local.user_vocab_
    assert spark_als.user_vocab_.ids.dtype == local.user_vocab_.ids.dtype == np.int64
    assert (spark_als.user_items_ != local.user_items_).nnz == 0
    assert len(spark_als.train_rmse_history_) == 1 and spark_als.train_rmse_history_[0] < 0.8
    path = spark_als.save(tmp_path / "spark.mfrec")
    back = mfrec.load(path)
    assert type(back) is mfrec.ALS and back.get_params() == spark_als.get_params()
    ids, scores = spark_als.recommend([1, 2, 3], n=5)
    ids2, scores2 = back.recommend([1, 2, 3], n=5)
    assert np.array_equal(ids, ids2) and np.array_equal(scores, scores2)
    seen = set(train.item[train.user == 1])
    assert not seen & set(ids[0].tolist())


def compare_with_local(recs, model, users, n):
    """recommend_all rows == model.recommend for ``users``, ties aside."""
    ids, scores = model.recommend(users, n=n)
    recs = recs.sort_values(["user", "rank"])
    assert recs.groupby("user").size().eq(n).all() and set(recs.user) == set(users)
    order = np.argsort(users)
    got_items = recs.item.to_numpy().reshape(-1, n)
    got_scores = recs.score.to_numpy().reshape(-1, n)
    np.testing.assert_allclose(got_scores, scores[order], rtol=1e-5, atol=1e-5)
    # the same items in the same order, except where two items' scores are within float32
    # rounding of each other (then either order is right)
    want_items = ids[order]
    diff = np.nonzero(got_items != want_items)
    assert diff[0].size <= 0.01 * got_items.size
    u = np.asarray(users)[order][diff[0]]
    a = model.predict(u, got_items[diff], clip=False)
    b = model.predict(u, want_items[diff], clip=False)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_recommend_all_equals_local_recommend(spark, spark_als):
    # every user, seen items excluded, scores as predict(clip=False)
    import mfrec.spark as ms
    recs = ms.recommend_all(spark_als, n=10, spark=spark).toPandas()
    assert list(recs.columns) == ["user", "rank", "item", "score"]
    assert recs["rank"].min() == 1 and recs["rank"].max() == 10
    compare_with_local(recs, spark_als, spark_als.user_vocab_.ids, 10)
    row = recs[(recs.user == 7) & (recs["rank"] == 1)].iloc[0]
    assert row.score == pytest.approx(spark_als.predict([7], [row["item"]], clip=False)[0])


def test_evaluate_in_spark_equals_local(spark, spark_als, u1):
    # rmse/mae as predict gives them; ranking metrics as evaluate_ranking defines them
    import mfrec.spark as ms
    from mfrec.evaluation import mae, rmse
    from mfrec.evaluation.ranking import evaluate_ranking
    test = u1[1]
    got = ms.evaluate(spark_als, spark.createDataFrame(test), k=10, spark=spark)
    pred = spark_als.predict(test.user, test.item)
    assert got["rmse"] == pytest.approx(rmse(test.rating, pred), rel=1e-9)
    assert got["mae"] == pytest.approx(mae(test.rating, pred), rel=1e-9)
    want = evaluate_ranking(spark_als, test, k=10,
                            metrics=["ndcg", "recall", "precision", "map", "hit_rate"])
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=2e-3), name
    with pytest.raises(ValueError, match="metrics must be names from"):
        ms.evaluate(spark_als, test, metrics=["nope"], spark=spark)


def test_recommend_all_subset_seen_frame_and_parquet(spark, tmp_path):
    # a local model, some users, seen items from a Spark DataFrame, written to Parquet
    import mfrec.spark as ms
    X = two_blocks()
    model = mfrec.ALS(n_factors=2, n_epochs=10, random_state=0).fit(X)
    seen = spark.createDataFrame(pd.DataFrame({"user": [0, 0, 5], "item": [1, 2, 4]}))
    out = ms.recommend_all(model, users=[0, 5], n=3, seen=seen, output=str(tmp_path / "r"),
                           spark=spark)
    recs = pd.read_parquet(out).sort_values(["user", "rank"])
    for user, excluded in ((0, {1, 2}), (5, {4})):
        rows = recs[recs.user == user]
        assert not excluded & set(rows.item)
        allowed = np.setdiff1d(np.arange(8), sorted(excluded))
        scores = model.predict(np.full(allowed.size, user), allowed, clip=False)
        np.testing.assert_allclose(rows.score, np.sort(scores)[::-1][:3], rtol=1e-5)
    with pytest.raises(KeyError, match="unknown user"):
        ms.recommend_all(model, users=[99], spark=spark)


def test_implicit_als_in_spark(spark):
    # two communities: the unseen item of each user's own block comes first
    import mfrec.spark as ms
    X = two_blocks()
    u, i = np.nonzero(X)
    frame = pd.DataFrame({"user": u, "item": i})
    model = ms.fit(spark.createDataFrame(frame), "implicit-als", spark=spark, rating_col=None,
                   n_factors=2, n_epochs=8, regularization=0.01, alpha=2.0, random_state=0)
    assert isinstance(model, mfrec.ImplicitALS) and model.alpha == 2.0
    assert (model.alpha_, model.regularization_) == (2.0, 0.01)
    local = mfrec.ImplicitALS(n_factors=2, n_epochs=8, random_state=0).fit(X)
    assert set(vars(model)) == set(vars(local))  # the attributes of a local fit, no more
    assert model.global_mean_ == 0.0 and not model.user_bias_.any()
    ids, _ = model.recommend([0, 5], n=1)
    assert ids[:, 0].tolist() == [0, 6]
    # seen items given as a Spark DataFrame (the training data left in Spark) are excluded
    recs = ms.recommend_all(model, users=[0, 5], n=1, seen=spark.createDataFrame(frame),
                            spark=spark).toPandas().sort_values("user")
    assert recs.item.tolist() == [0, 6]


def test_bad_data_is_named(spark):
    # duplicates, missing ids, unknown columns and negative strengths: errors naming them
    import mfrec.spark as ms
    dup = spark.createDataFrame(pd.DataFrame({"user": [1, 1, 2], "item": [3, 3, 4],
                                              "rating": [1.0, 5.0, 2.0]}))
    for keep_seen in (True, False):  # found on the driver, or by a count in Spark
        with pytest.raises(ValueError, match=r"duplicate \(user, item\) pairs.*\(1, 3\).*"
                                             r"duplicates='mean' or 'sum'"):
            ms.fit(dup, "als", spark=spark, n_factors=2, n_epochs=1, keep_seen=keep_seen)
    with pytest.raises(ValueError, match="rating_col='stars' is not a column"):
        ms.fit(dup, "als", spark=spark, rating_col="stars")
    nulls = spark.createDataFrame([(1, 3, 1.0), (None, 4, 2.0)], "user int, item int, rating double")
    with pytest.raises(ValueError, match="column 'user' holds 1 missing"):
        ms.fit(nulls, "als", spark=spark)
    neg = spark.createDataFrame(pd.DataFrame({"user": [1, 2], "item": [3, 4],
                                              "rating": [1.0, -2.0]}))
    with pytest.raises(ValueError, match="non-negative"):
        ms.fit(neg, "implicit-als", spark=spark)
    # merged in Spark, and with keep_seen=False nothing comes to the driver but the factors
    merged = ms.fit(dup, "als", spark=spark, duplicates="mean", keep_seen=False, n_factors=2,
                    n_epochs=1, random_state=0)
    assert merged.global_mean_ == pytest.approx(2.5)  # (mean(1, 5) + 2) / 2
    assert merged.user_items_.nnz == 0 and merged.user_items_.shape == (2, 2)
    assert np.all(np.abs(merged.user_factors_).sum(axis=1) > 0)


# ---------------------------------------------------------------------- local-cluster
CLUSTER_SCRIPT = textwrap.dedent("""
    import numpy as np, pandas as pd, mfrec, mfrec.spark as ms
    spark = ms.session("local-cluster[2,1,1024]", driver_memory="1g", shuffle_partitions=4,
                       conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user": [f"u{j}" for j in rng.integers(0, 40, 600)],
                          "item": rng.integers(0, 30, 600)}).drop_duplicates()
    frame["rating"] = rng.integers(1, 6, len(frame)).astype(float)
    # keep_seen=False: the distinct ids, encoding, duplicate check and bias passes run in Spark,
    # as closures on the executors (with keep_seen=True the driver does them)
    model = ms.fit(spark.createDataFrame(frame), "als", spark=spark, n_factors=4, n_epochs=2,
                   random_state=0, bias_passes=2, keep_seen=False)
    # two executors, each its own JVM process, did the work
    assert spark.sparkContext._jsc.sc().getExecutorIds().size() == 2
    # vocabularies, mean and biases as a local encoding and the bias passes by hand give them
    local = mfrec.Ratings.from_frame(frame)
    assert model.user_vocab_ == local.user_vocab and model.item_vocab_ == local.item_vocab
    coo = local.csr.tocoo()
    u, i, r = coo.row, coo.col, coo.data.astype(float)
    reg = model.regularization
    mu, den_u, den_i = r.mean(), np.bincount(u) * (1 + reg), np.bincount(i) * (1 + reg)
    bu = np.bincount(u, r - mu) / den_u
    bi = np.bincount(i, r - mu - bu[u]) / den_i
    bu = np.bincount(u, r - mu - bi[i]) / den_u
    bi = np.bincount(i, r - mu - bu[u]) / den_i
    assert model.regularization_ == reg and abs(model.global_mean_ - mu) < 1e-6
    np.testing.assert_allclose(model.user_bias_, bu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.item_bias_, bi, rtol=1e-5, atol=1e-6)
    seen = spark.createDataFrame(frame[["user", "item"]])
    recs = ms.recommend_all(model, n=5, spark=spark, seen=seen).toPandas().sort_values(
        ["user", "rank"])
    model.user_items_ = local.csr  # the local recommend excludes the same seen items
    ids, scores = model.recommend(model.user_vocab_.ids, n=5)
    np.testing.assert_allclose(recs.score.to_numpy().reshape(-1, 5), scores, rtol=1e-5)
    got = ms.evaluate(model, spark.createDataFrame(frame), spark=spark, metrics=["rmse"])
    from mfrec.evaluation import rmse
    want = rmse(frame.rating, model.predict(frame.user, frame.item))
    assert abs(got["rmse"] - want) < 1e-9, (got, want)
    spark.stop()
    print("CLUSTER-OK", model.user_factors_.shape)
""")


@pytest.mark.slow
def test_local_cluster_executors_in_their_own_jvms(tmp_path):
    # closures and broadcasts really serialized to two executor JVMs; SPARK_HOME must point at
    # the pip-installed pyspark, whose jars the workers start from
    need_spark()
    import pyspark
    env = dict(os.environ, SPARK_HOME=os.path.dirname(pyspark.__file__),
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0 and "CLUSTER-OK (40, 4)" in proc.stdout, proc.stderr[-3000:]


def test_cli_fit_and_recommend_all_with_spark(spark, tmp_path, capsys):
    # mfrec fit --engine spark on a headerless TSV, then recommend --all-users --engine spark;
    # the Parquet output equals the saved model's local recommend
    from mfrec.cli import main
    rng = np.random.default_rng(3)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(1, 31, 400), rng.integers(1, 21, 400))}
    lines = [f"{u}\t{i}\t{(u * i) % 5 + 1}\t88000000" for u, i in sorted(pairs)]
    (tmp_path / "train.data").write_text("\n".join(lines) + "\n")
    model_path, recs = tmp_path / "m.mfrec", tmp_path / "recs.parquet"
    assert main(["fit", str(tmp_path / "train.data"), "-m", "als", "--engine", "spark",
                 "--spark-master", "local[2]", "--n-factors", "3", "--n-epochs", "3",
                 "--seed", "0", "-o", str(model_path)]) == 0
    assert "Fitted ALS in Spark" in capsys.readouterr().out
    model = mfrec.load(model_path)
    assert model.user_vocab_.ids.tolist() == sorted({u for u, _ in pairs})
    assert model.user_items_.nnz == len(pairs) and model.n_factors == 3
    assert main(["recommend", str(model_path), "--all-users", "--engine", "spark", "-n", "4",
                 "-o", str(recs)]) == 0
    got = pd.read_parquet(recs)
    compare_with_local(got, model, model.user_vocab_.ids, 4)
    assert main(["fit", str(tmp_path / "train.data"), "-m", "bpr", "--engine", "spark",
                 "-o", str(model_path)]) == 2
    assert main(["recommend", str(model_path), "--user", "1", "--engine", "spark"]) == 2
