"""Spark engine: train and score on a Spark cluster, get an ordinary mfrec model back.

:func:`fit` drives ``pyspark.ml.recommendation.ALS`` and returns an :class:`mfrec.ALS` or
:class:`mfrec.ImplicitALS` whose state (factors, biases, global mean, raw-id vocabularies, rating
range, training interactions) is what a local fit holds, so predict, recommend, fold-in, save,
evaluate and serve work on it unchanged. :func:`recommend_all` and :func:`evaluate` score any
fitted mfrec model inside Spark, for user bases and test sets too large for one machine.

What happens where:

- In Spark: reading, the factorization, the top-N products and the metrics.
- With ``keep_seen=True`` (the default) the model holds every training rating (``user_items_``,
  a CSR matrix of 8 bytes per rating: int32 item index and float32 value, which local models
  hold to exclude seen items), so :func:`fit` reads the ratings to the driver once and checks
  them, builds the vocabularies, encodes the ids and fits the biases there, in Arrow and NumPy;
  the encoded residuals (12 bytes per rating) go back to Spark's ALS. This costs one Spark job
  where doing each step in Spark costs a dozen (every job a scan, several a shuffle).
- With ``keep_seen=False`` the ratings never come to the driver: the checks, the vocabularies
  (distinct ids), the encoding, the duplicate check and the bias passes run in Spark, and only
  the distinct ids, per-user/per-item sums and the factors are collected.
- On the driver in both cases: the vocabularies (sorted exactly as a local fit sorts them), the
  factors and the biases. :func:`recommend_all` broadcasts the user and item factors and the
  seen-items matrix to the executors.

Requirements: ``pip install 'mfrec[spark]'`` (pyspark, pyarrow) and a Java runtime (17 or newer
for pyspark 4). On a cluster, mfrec and NumPy must be installed on the executors too (or shipped
with ``spark-submit --archives`` of a packed virtual environment), because the per-partition
work calls mfrec functions.
"""
from __future__ import annotations

import logging
import numbers
import os
import shutil
import time
from pathlib import Path

import numpy as np

__all__ = ["fit", "recommend_all", "evaluate", "session", "check_java", "SPARK_MODELS"]

#: model names :func:`fit` takes -> mfrec class name
SPARK_MODELS = {"als": "ALS", "implicit-als": "ImplicitALS"}

#: phase timings of :func:`fit` are logged here at DEBUG level ("phase <name> <seconds>")
_log = logging.getLogger(__name__)

_INSTALL_JAVA = ("install one, e.g. `apt-get install -y default-jre-headless` (Debian/Ubuntu), "
                 "`brew install openjdk@17` (macOS) or `conda install -c conda-forge "
                 "openjdk=17`, or set JAVA_HOME to an installed JDK/JRE")


# ---------------------------------------------------------------------- session and imports
def _require_pyspark():
    try:
        import pyarrow  # noqa: F401
        import pyspark
    except ImportError as exc:
        raise ImportError(f"mfrec.spark needs pyspark and pyarrow ({exc}); install them with "
                          f"pip install 'mfrec[spark]'") from None
    return pyspark


def check_java():
    """Path of the ``java`` executable Spark will start.

    Returns
    -------
    str

    Raises
    ------
    RuntimeError
        No Java runtime: neither ``$JAVA_HOME/bin/java`` nor ``java`` on ``PATH``. The message
        says how to install one.
    """
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        if java.is_file() and os.access(java, os.X_OK):
            return str(java)
        raise RuntimeError(f"JAVA_HOME={home!r} holds no bin/java; Spark needs a Java runtime "
                           f"(17 or newer for pyspark 4): {_INSTALL_JAVA}")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(f"Spark needs a Java runtime (17 or newer for pyspark 4) and none was "
                           f"found (no `java` on PATH, JAVA_HOME unset): {_INSTALL_JAVA}")
    return java


def session(master="local[*]", *, app_name="mfrec", driver_memory="4g",
            shuffle_partitions=None, conf=None):
    """A SparkSession for mfrec (the running one if there is one).

    Parameters
    ----------
    master : str, default="local[*]"
        ``local[N]``, ``local-cluster[...]``, ``spark://host:port``, ``yarn``, ... Ignored when a
        session is already running (Spark allows one per process).
    app_name : str, default="mfrec"
    driver_memory : str, default="4g"
        The driver holds the vocabularies, factors and seen-items matrix; only honoured when
        this call starts the JVM.
    shuffle_partitions : int, optional
        ``spark.sql.shuffle.partitions``; default Spark's (200), which is far too many for
        ``local[N]``: use a few per core there.
    conf : dict, optional
        More ``spark.*`` settings (the console progress bar is off unless
        ``spark.ui.showConsoleProgress`` says otherwise). With a ``local`` master, the Python
        workers run this interpreter (``$PYSPARK_PYTHON`` is set to it) unless
        ``$PYSPARK_PYTHON`` names another.

    Returns
    -------
    pyspark.sql.SparkSession

    Raises
    ------
    ImportError
        pyspark or pyarrow missing.
    RuntimeError
        No Java runtime.
    """
    _require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    check_java()
    builder = (SparkSession.builder.master(str(master)).appName(str(app_name))
               .config("spark.driver.memory", str(driver_memory))
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.ui.showConsoleProgress", "false"))
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(int(shuffle_partitions)))
    for key, value in (conf or {}).items():
        builder = builder.config(str(key), str(value))
    if str(master).startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # local workers run this interpreter, which has mfrec, NumPy and pyarrow: PySpark's
        # default is whatever "python3" the PATH finds (another environment, when a virtual
        # environment's Python is run by its path without activating it). PySpark reads only
        # the variable, when the context starts.
        import sys
        os.environ["PYSPARK_PYTHON"] = sys.executable
    return builder.getOrCreate()


def _session(spark):
    if spark is not None:
        from pyspark.sql import SparkSession
        if not isinstance(spark, SparkSession):
            raise TypeError(f"spark must be a SparkSession or None, got {type(spark).__name__}")
        return spark
    return session()


def _to_arrow(df):
    """A DataFrame collected to the driver as a pyarrow Table (Arrow all the way, no rows)."""
    if hasattr(df, "toArrow"):  # pyspark >= 4.0
        return df.toArrow()
    import pyarrow as pa
    batches = df._collect_as_arrow()  # pyspark 3.5
    return pa.Table.from_batches(batches, schema=None) if batches else \
        pa.Table.from_pandas(df.limit(0).toPandas())


def _column(table, name):
    """A column of an Arrow table as a NumPy array (strings as an object array)."""
    col = table.column(name)
    return col.to_numpy() if col.num_chunks else np.empty(0)


# ---------------------------------------------------------------------- input
def _read(spark, data, read_options):
    """A Spark DataFrame from a DataFrame (Spark or pandas) or a path Spark reads."""
    from pyspark.sql import DataFrame

    if isinstance(data, DataFrame):
        return data
    if type(data).__name__ == "DataFrame" and type(data).__module__.startswith("pandas"):
        return spark.createDataFrame(data)
    if not isinstance(data, (str, Path)):
        raise TypeError(f"data must be a Spark DataFrame, a pandas DataFrame or a path (Parquet, "
                        f"CSV/TSV), got {type(data).__name__}")
    path = str(data)
    options = dict(read_options or {})
    fmt = options.pop("format", None)
    local = Path(path) if "://" not in path else None
    if fmt is None:
        suffix = Path(path).suffix.lower()
        if suffix in (".parquet", ".pq") or (local is not None and local.is_dir()):
            fmt = "parquet"
        else:
            fmt = "csv"
    if fmt == "parquet":
        return spark.read.options(**options).parquet(path)
    if fmt != "csv":
        return spark.read.format(fmt).options(**options).load(path)
    if local is not None and not local.exists():
        raise FileNotFoundError(f"no such data file: {path!r}")
    if local is not None and local.is_file() and ("sep" not in options or "header" not in options):
        sep, header, n_cols = _sniff(local)
        options.setdefault("sep", sep)
        options.setdefault("header", "true" if header else "false")
        if not header and "names" not in options:
            options["names"] = ",".join(("user", "item", "rating", "timestamp")[:n_cols])
    names = options.pop("names", None)
    options.setdefault("inferSchema", "true")
    df = spark.read.options(**options).csv(path)
    if names:
        names = names.split(",") if isinstance(names, str) else list(names)
        if len(names) != len(df.columns):
            raise ValueError(f"names gives {len(names)} columns but {path!r} has "
                             f"{len(df.columns)}")
        df = df.toDF(*names)
    return df


def _sniff(path):
    """(separator, has a header, number of columns) from the first line of a text file."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().rstrip("\r\n")
    sep = next((s for s in ("\t", ",", ";", "|", "::", " ") if s in first), ",")
    if sep == "::":
        raise ValueError(f"{str(path)!r} is separated by '::' (MovieLens 1M/10M), which Spark's "
                         f"CSV reader cannot split; convert it to CSV or Parquet first")
    fields = first.split(sep)

    def number(text):
        try:
            float(text)
            return True
        except ValueError:
            return False

    # headerless rating files have a numeric rating in the third field
    header = not (len(fields) >= 3 and number(fields[2]))
    return sep, header, len(fields)


def _id_kind(dtype, name, column):
    from pyspark.sql import types as T

    if isinstance(dtype, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return "int"
    if isinstance(dtype, T.StringType):
        return "str"
    if isinstance(dtype, (T.FloatType, T.DoubleType)):
        return "float"
    raise TypeError(f"{name}={column!r} has Spark type {dtype.simpleString()}; ids must be "
                    f"integer, string or floating-point columns")


def _select(df, user_col, item_col, rating_col):
    """The (user, item, rating) columns, checked: names exist, types are usable."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    for arg, col in (("user_col", user_col), ("item_col", item_col), ("rating_col", rating_col)):
        if col is not None and col not in df.columns:
            raise ValueError(f"{arg}={col!r} is not a column of the data (columns: "
                             f"{df.columns})")
    fields = {f.name: f.dataType for f in df.schema.fields}
    ids = []
    for arg, col in (("user_col", user_col), ("item_col", item_col)):
        # integer ids of every width come back as int64, as pandas (and a local fit) reads them
        kind = _id_kind(fields[col], arg, col)
        ids.append(F.col(col).cast("long") if kind == "int" else F.col(col))
    if rating_col is not None and not isinstance(fields[rating_col], T.NumericType):
        raise TypeError(f"rating_col={rating_col!r} must be numeric, got Spark type "
                        f"{fields[rating_col].simpleString()}")
    rating = (F.lit(1.0) if rating_col is None else F.col(rating_col)).cast("double")
    return df.select(ids[0].alias("user"), ids[1].alias("item"), rating.alias("rating"))


def _stats(df):
    """Count, missing ids, non-finite ratings and rating min/max/sum, in one Spark job."""
    from pyspark.sql import functions as F

    r = F.col("rating")
    bad = r.isNull() | F.isnan(r) | (F.abs(r) == float("inf"))
    row = df.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("user").isNull().cast("long")).alias("null_user"),
        F.sum(F.col("item").isNull().cast("long")).alias("null_item"),
        F.sum(bad.cast("long")).alias("bad"),
        F.min(F.when(~bad, r)).alias("lo"), F.max(F.when(~bad, r)).alias("hi"),
        F.sum(F.when(~bad, r)).alias("total"),
    ).first()
    return row.asDict()


def _vocabulary(df, column, name):
    """Sorted distinct ids of a column, computed in Spark, as a local :class:`Vocabulary`.

    Distinct ids are found in Spark; only they come to the driver, where they are sorted by the
    same code as a local fit (``mfrec.data._encode``), so the vocabulary — order and dtype — is
    the one ``mfrec.ALS().fit`` would build from the same ratings.
    """
    from .data import _encode

    ids = _column(_to_arrow(df.select(column).distinct()), column)
    return _encode(ids, None, name)[1]


def _lookup_fn(vocab):
    """A function raw ids (NumPy) -> int64 indices, -1 for unknown, for use on executors."""
    ids = vocab.ids
    if ids.dtype.kind in "iuf" and (ids.size < 2 or np.all(ids[1:] > ids[:-1])):
        def lookup(raw):
            raw = np.asarray(raw)
            if raw.dtype.kind not in "iuf":
                raw = raw.astype(ids.dtype)
            pos = np.searchsorted(ids, raw)
            pos = np.minimum(pos, max(ids.size - 1, 0))
            hit = ids[pos] == raw if ids.size else np.zeros(raw.shape, bool)
            return np.where(hit, pos, -1).astype(np.int64)
        return lookup
    import pandas as pd

    index = pd.Index(ids)

    def lookup(raw):
        return index.get_indexer(np.asarray(raw, dtype=object) if ids.dtype == object
                                 else raw).astype(np.int64)
    return lookup


def _encode_frame(df, user_vocab, item_vocab, *, keep_unknown=False):
    """(u int, i int, r float) from (user, item, rating) through broadcast vocabularies.

    With ``keep_unknown`` ids outside a vocabulary become -1; otherwise they cannot occur.
    """
    import pyarrow as pa

    sc = df.sparkSession.sparkContext
    b_user, b_item = sc.broadcast(user_vocab), sc.broadcast(item_vocab)

    def encode(batches):
        lookup_u, lookup_i = _lookup_fn(b_user.value), _lookup_fn(b_item.value)
        for batch in batches:
            u = lookup_u(_arrow_ids(batch.column(0)))
            i = lookup_i(_arrow_ids(batch.column(1)))
            r = batch.column(2).to_numpy(zero_copy_only=False).astype(np.float32)
            if not keep_unknown:
                u, i = u.astype(np.int32), i.astype(np.int32)
            yield pa.RecordBatch.from_arrays([pa.array(u), pa.array(i), pa.array(r)],
                                             names=["u", "i", "r"])

    types = "bigint" if keep_unknown else "int"
    return df.mapInArrow(encode, f"u {types}, i {types}, r float")


def _arrow_ids(col):
    return col.to_numpy(zero_copy_only=False)


def _partition_sums(df, fn, size):
    """Sum over partitions of ``fn(batch) -> float64 vector of length size``, computed in Spark.

    Each partition adds up its batches and returns one vector; the driver adds the vectors (a
    few per core, each ``8 * size`` bytes) — no shuffle.
    """
    import pyarrow as pa

    def partial(batches):
        acc = np.zeros(size)
        for batch in batches:
            if batch.num_rows:
                acc += fn(batch)
        yield pa.RecordBatch.from_arrays([pa.array([acc.tobytes()], pa.binary())], names=["v"])

    table = _to_arrow(df.mapInArrow(partial, "v binary"))
    total = np.zeros(size)
    for blob in table.column("v").to_pylist():
        total += np.frombuffer(blob, dtype=np.float64)
    return total


# ---------------------------------------------------------------------- fit
def fit(data, model="als", *, spark=None, user_col="user", item_col="item", rating_col="rating",
        bias_passes=3, duplicates="error", keep_seen=True, read_options=None, spark_params=None,
        **params):
    """Fit ALS or implicit ALS in Spark; return an ordinary mfrec model.

    Parameters
    ----------
    data : pyspark.sql.DataFrame, pandas.DataFrame, str or Path
        Ratings with user, item and rating columns, or a path Spark reads: Parquet (a ``.parquet``
        file or a folder) or CSV/TSV (separator and header detected from the first line of a
        local file; headerless files of 3-4 columns read as user, item, rating[, timestamp]).
        Ids may be integer, string or floating-point columns.
    model : {"als", "implicit-als"}, default="als"
        :class:`mfrec.ALS` (explicit ratings, with biases) or :class:`mfrec.ImplicitALS`.
    spark : SparkSession, optional
        Default: the running session, or :func:`session` with its defaults.
    user_col, item_col, rating_col : str
        Column names. ``rating_col=None`` counts every row as an interaction of strength 1.
    bias_passes : int, default=3
        Alternating passes (users, then items) of the bias model fitted before the factors
        (explicit ALS with ``biases=True``): NumPy on the driver with ``keep_seen=True``, else
        two scans of the cached ratings in Spark per pass.
    duplicates : {"error", "mean", "sum"}, default="error"
        Repeated (user, item) pairs: an error naming them (as a local fit), or merged (on the
        driver with ``keep_seen=True``, in Spark otherwise).
    keep_seen : bool, default=True
        Collect the training interactions to the driver as ``user_items_`` (CSR, 8 bytes per
        rating), as a local model holds them, so ``recommend(exclude_seen=True)``, fold-in and
        :func:`recommend_all` work; the vocabularies, encoding and biases are then computed on
        the driver from them (see the module notes). With False the model's ``user_items_`` is
        empty: nothing is excluded as seen unless :func:`recommend_all` is given ``seen=``, and
        the training RMSE is not computed; the ratings stay in Spark.
    read_options : dict, optional
        Options of Spark's reader when ``data`` is a path (``sep``, ``header``, ``format``,
        ``names`` as "user,item,rating", ...).
    spark_params : dict, optional
        Extra parameters of ``pyspark.ml.recommendation.ALS`` (``numUserBlocks``,
        ``numItemBlocks``, ``checkpointInterval``, ``intermediateStorageLevel``, ...).
        ``numUserBlocks`` and ``numItemBlocks`` default to Spark's default parallelism (its
        total cores) rather than Spark's fixed 10, which on a few cores costs more in task
        overhead than it gains.
    **params
        Hyperparameters of the mfrec class, by their mfrec names, validated as a local fit
        validates them.

    Returns
    -------
    mfrec.ALS or mfrec.ImplicitALS
        Fitted, with the same attributes as a local fit: ``user_factors_``, ``item_factors_``
        (float32), ``user_bias_``, ``item_bias_``, ``global_mean_``, ``user_vocab_``,
        ``item_vocab_`` (the sorted distinct ids: integer columns give int64, strings an object
        array of str, floating-point columns float64, as a local fit from pandas),
        ``rating_range_``, ``user_items_``; ALS also ``regularization_``, and ``loss_history_`` and
        ``train_rmse_history_`` with one entry, after the last sweep (Spark does not report
        per-iteration losses).

    Notes
    -----
    How mfrec's hyperparameters become Spark's, and where the meaning differs:

    ======================  =====================================================================
    mfrec                   Spark ALS
    ======================  =====================================================================
    ``n_factors``           ``rank``
    ``n_epochs``            ``maxIter``
    ``regularization``      ``regParam``. Explicit: the same weighted lambda — Spark's ALS-WR
                            adds ``regParam * n_u`` to a row with ``n_u`` ratings, as mfrec does.
                            Implicit: Spark adds ``regParam * n_u`` (``n_u`` = positive
                            interactions of the row), whereas :class:`mfrec.ImplicitALS` adds
                            ``regularization * (n_u + n_other / (1 + alpha)) ** reg_exponent``;
                            the same number therefore regularizes less in Spark, and
                            ``reg_exponent`` has no effect. Fold-in on the returned model uses
                            mfrec's rule.
    ``alpha``               ``alpha``, same confidence ``1 + alpha * r`` (Spark takes ``|r|``,
                            mfrec rejects negative strengths, so they agree). ImplicitALS's
                            ``"auto"`` alpha and regularization are resolved from the data
                            (counts, density, mean strength) as a local fit resolves them, and
                            kept in ``alpha_`` and ``regularization_``.
    ``random_state``        ``seed`` (an int seed is passed as is; None or a Generator draws
                            one). Spark's initial factors are its own, so a Spark fit and a local
                            fit with the same seed differ by their starting point.
    ``biases``              Spark's ALS has no biases. They are fitted before the factors
                            (see ``bias_passes``): alternating passes of the bias model with
                            the same weighted penalty (``b_u = sum(r - mu - b_i) / (n_u (1 +
                            regularization))``), then Spark's ALS factorizes the residuals
                            ``r - mu - b_u - b_i``. mfrec.ALS solves biases and factors jointly;
                            the sequential fit lands within a few thousandths of its test RMSE.
                            With ``biases=False`` the ratings are centred on their mean, as
                            locally.
    ``solver``, ``cg_steps``, ``init_std`` / ``init_scale``, ``compute_loss``, ``num_threads``,
    ``verbose``             no effect: Spark solves each row exactly (Cholesky), draws its own
                            initial factors and runs on its executors' cores.
    ======================  =====================================================================

    Ids need not be integers (SPARK-10158): they are encoded to indices through the
    vocabularies. Users and items not in the training data are simply not in the vocabularies,
    so predictions fall back to the mean and the known side's bias, never NaN (SPARK-14489).

    Examples
    --------
    >>> import mfrec.spark  # doctest: +SKIP
    >>> model = mfrec.spark.fit("ratings.parquet", "als", n_factors=64,
    ...                         regularization=0.05)  # doctest: +SKIP
    >>> model.recommend([1, 2], n=5)  # doctest: +SKIP
    """
    from ._validation import check_bool, check_choice, check_int, rng_from
    from .models import get_model_class

    check_choice("model", model, tuple(SPARK_MODELS))
    bias_passes = check_int("bias_passes", bias_passes, low=0)
    check_choice("duplicates", duplicates, ("error", "mean", "sum"))
    keep_seen = check_bool("keep_seen", keep_seen)
    cls = get_model_class(SPARK_MODELS[model])
    estimator = cls(**params)  # unknown names: TypeError naming them, as the class does
    estimator._validate_params()
    implicit = model == "implicit-als"
    if rating_col is None and not implicit:
        raise ValueError("rating_col=None (every row an interaction) needs model='implicit-als'")
    _require_pyspark()
    from pyspark.ml.recommendation import ALS as SparkALS

    spark = _session(spark)
    extra = dict(spark_params or {})
    reserved = {"rank", "maxIter", "regParam", "implicitPrefs", "alpha", "seed", "userCol",
                "itemCol", "ratingCol", "predictionCol"}
    clash = sorted(reserved & set(extra))
    if clash:
        raise ValueError(f"spark_params may not set {clash}; give them as mfrec hyperparameters "
                         f"(n_factors, n_epochs, regularization, alpha, random_state)")
    unknown = sorted(k for k in extra if not SparkALS().hasParam(k))
    if unknown:
        raise ValueError(f"spark_params {unknown} are not parameters of pyspark's ALS")
    for key in ("numUserBlocks", "numItemBlocks"):
        extra.setdefault(key, max(1, spark.sparkContext.defaultParallelism))

    df = _select(_read(spark, data, read_options), user_col, item_col, rating_col)
    clock = _Phases()
    enc = None
    try:
        if keep_seen:
            # the model holds every rating anyway: one Spark read brings them here, and the
            # checks, vocabularies, encoding and biases run in NumPy/Arrow instead of a dozen
            # Spark jobs
            seen, user_vocab, item_vocab, stats = _collect_ratings(
                df, implicit, duplicates, user_col, item_col, rating_col)
            nnz = int(seen.nnz)
            clock("collect+encode")
        else:
            stats = _stats(df)
            _check_stats(stats, implicit, user_col, item_col, rating_col)
            clock("read+validate")
            user_vocab = _vocabulary(df, "user", "user")
            item_vocab = _vocabulary(df, "item", "item")
            clock("vocabulary")
            seen, enc = None, _spark_encoded(df, user_vocab, item_vocab, duplicates)
            nnz = int(stats["n"])
        n_users, n_items = len(user_vocab), len(item_vocab)
        if max(n_users, n_items) >= 2**31 - 1:
            raise ValueError(f"{n_users} users and {n_items} items: Spark's ALS takes at most "
                             f"2**31 - 2 of each")

        k, n_epochs = int(estimator.n_factors), int(estimator.n_epochs)
        alpha = 1.0
        seed = estimator.random_state
        seed = int(seed) if isinstance(seed, numbers.Integral) else int(
            rng_from(seed).integers(0, 2**31 - 1))
        passes = bias_passes if not implicit and estimator.biases else 0
        mu = 0.0
        bu, bi = np.zeros(n_users), np.zeros(n_items)
        if implicit:
            if enc is not None and duplicates != "error":
                nnz = enc.count()
            # "auto" alpha and regularization resolved from the data as a local fit does
            from types import SimpleNamespace
            counts = seen if seen is not None else SimpleNamespace(
                shape=(n_users, n_items), nnz=nnz,
                data=np.array([float(stats["total"]) / max(nnz, 1)]))
            alpha, reg = estimator._scaled_defaults(counts)
        else:
            reg = float(estimator.regularization)
            if seen is not None:
                mu, bu, bi = _fit_biases_local(seen, reg, passes)
            else:
                mu, bu, bi = _fit_biases(enc, n_users, n_items, reg, passes)
            clock("biases")
        if seen is not None:
            train = _driver_frame(spark, seen, mu, bu, bi)
            clock("ratings to Spark")
        else:
            train = enc if implicit else _residuals(enc, mu, bu, bi)
        als = SparkALS(rank=k, maxIter=n_epochs, regParam=reg, implicitPrefs=implicit,
                       alpha=float(alpha), seed=seed, userCol="u",
                       itemCol="i", ratingCol="r", nonnegative=False, **extra)
        fitted = als.fit(train)
        clock("spark ALS")
        P = _collect_factors(fitted.userFactors, n_users, k)
        Q = _collect_factors(fitted.itemFactors, n_items, k)
        clock("collect factors")
    finally:
        if enc is not None:
            enc.unpersist()

    est = estimator
    # as a local fit records the columns it read (None for a rating column that is absent)
    est.data_columns_ = {"user": str(user_col), "item": str(item_col),
                         "rating": None if rating_col is None else str(rating_col),
                         "timestamp": None}
    est.user_vocab_ = user_vocab
    est.item_vocab_ = item_vocab
    est.rating_range_ = ((float(seen.data.min()), float(seen.data.max())) if seen is not None
                         else (float(stats["lo"]), float(stats["hi"])))
    est.user_items_ = seen
    if implicit:
        est._set_factor_state(P, Q)
        est.alpha_, est.regularization_ = float(alpha), float(reg)
        est.loss_history_ = []
    else:
        est._set_factor_state(P, Q, bu.astype(np.float32), bi.astype(np.float32), mu)
    if seen is None:
        # set after the factors: _set_factor_state zeroes the rows of users without any seen item
        import scipy.sparse as sp
        est.user_items_ = sp.csr_matrix((np.zeros(0, np.float32), np.zeros(0, np.int32),
                                         np.zeros(n_users + 1, np.int32)),
                                        shape=(n_users, n_items))
    if not implicit:
        est.regularization_ = reg
        est.loss_history_, est.train_rmse_history_ = [], []
        if seen is not None:
            loss, train_rmse = _train_loss(est, seen, reg)
            est.loss_history_.append(loss)
            est.train_rmse_history_.append(train_rmse)
    clock("model")
    return est


class _Phases:
    """Logs the seconds since the previous call under a phase name (DEBUG level)."""

    def __init__(self):
        self.last = time.perf_counter()

    def __call__(self, name):
        now = time.perf_counter()
        _log.debug("phase %s %.3f", name, now - self.last)
        self.last = now


def _check_stats(stats, implicit, user_col, item_col, rating_col):
    if stats["n"] == 0:
        raise ValueError("ratings are empty: at least one observed rating is needed")
    for side, col in (("user", user_col), ("item", item_col)):
        if stats[f"null_{side}"]:
            raise ValueError(f"column {col!r} holds {stats[f'null_{side}']} missing (null) "
                             f"{side} ids")
    if stats["bad"]:
        raise ValueError(f"ratings must be finite: column {rating_col!r} holds {stats['bad']} "
                         f"null/NaN/inf value(s)")
    if implicit and stats["lo"] < 0:
        raise ValueError(f"ImplicitALS needs non-negative interaction strengths, got a minimum "
                         f"of {stats['lo']} in column {rating_col!r}")


def _collect_ratings(df, implicit, duplicates, user_col, item_col, rating_col):
    """The ratings brought to the driver once, checked and encoded as a local fit encodes them.

    Returns ``(seen, user_vocab, item_vocab, stats)``: the CSR (float32 values; repeated pairs
    an error naming them, or merged by ``duplicates``), the sorted vocabularies and the
    :func:`_stats` figures of the raw ratings.
    """
    from .data import Ratings

    table = _to_arrow(df)
    r = _column(table, "rating").astype(np.float64, copy=False)  # nulls arrive as NaN
    ok = np.isfinite(r)
    good = r[ok] if not ok.all() else r
    stats = {"n": table.num_rows, "null_user": table.column("user").null_count,
             "null_item": table.column("item").null_count, "bad": int(r.size - good.size),
             "lo": float(good.min()) if good.size else None,
             "hi": float(good.max()) if good.size else None}
    _check_stats(stats, implicit, user_col, item_col, rating_col)
    u, user_vocab = _encode_column(table.column("user"), "user")
    i, item_vocab = _encode_column(table.column("item"), "item")
    del table
    try:
        seen = Ratings(u, i, r, user_vocab=user_vocab, item_vocab=item_vocab,
                       duplicates=duplicates).csr
    except ValueError as exc:
        # the local message offers 'last' too, which has no meaning for rows read from Spark
        raise ValueError(str(exc).replace("'mean', 'last' or 'sum'", "'mean' or 'sum'")) from None
    return seen, user_vocab, item_vocab, stats


def _encode_column(col, name):
    """(int indices, Vocabulary) of an Arrow id column, the vocabulary sorted as a local fit
    sorts it (``mfrec.data._encode``).

    Numbers go through ``_encode`` itself. Strings are hashed by Arrow: only the distinct ids
    become Python strings (to be sorted), not one object per rating. ``col`` is not empty.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from .data import _encode

    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        vocab = _encode(pc.unique(col).to_numpy(zero_copy_only=False), None, name)[1]
        codes = pc.index_in(col, value_set=pa.array(vocab.ids, col.type))
        return codes.to_numpy().astype(np.int32, copy=False), vocab
    return _encode(col.to_numpy(), None, name)


def _spark_encoded(df, user_vocab, item_vocab, duplicates):
    """(u, i, r) encoded in Spark, repeated pairs merged or refused, persisted for the bias
    passes and the ALS (the caller unpersists)."""
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    enc = _encode_frame(df, user_vocab, item_vocab)
    if duplicates != "error":
        merge = F.avg("r") if duplicates == "mean" else F.sum("r")
        enc = enc.groupBy("u", "i").agg(merge.cast("float").alias("r"))
    parallelism = df.sparkSession.sparkContext.defaultParallelism
    if enc.rdd.getNumPartitions() < parallelism:
        # one Parquet file is one partition: spread the scans over every core
        enc = enc.repartition(parallelism)
    enc = enc.persist(StorageLevel.MEMORY_AND_DISK)
    if duplicates == "error":
        try:
            _check_no_duplicates(enc, user_vocab, item_vocab)
        except BaseException:
            enc.unpersist()
            raise
    return enc


def _check_no_duplicates(enc, user_vocab, item_vocab):
    from pyspark.sql import functions as F

    rows = (enc.groupBy("u", "i").count().filter(F.col("count") > 1).limit(5).collect())
    if rows:
        pairs = [(user_vocab.ids[r["u"]].item() if hasattr(user_vocab.ids[r["u"]], "item")
                  else user_vocab.ids[r["u"]],
                  item_vocab.ids[r["i"]].item() if hasattr(item_vocab.ids[r["i"]], "item")
                  else item_vocab.ids[r["i"]]) for r in rows]
        raise ValueError(f"duplicate (user, item) pairs, first {pairs}; pass duplicates='mean' "
                         f"or 'sum' to combine them")


# The bias model fitted before the factors: alternating passes, each solving one side exactly
# with the other fixed, b_u = sum_i (r_ui - mu - b_i) / (n_u * (1 + reg)) — the bias part of
# mfrec.ALS's row solve with the factors at zero. The same half-pass serves users and items,
# on the driver's CSR or on Spark partitions.
def _bias_sums(rows, cols, r, mu, other_bias, size):
    """``sum over each row of (r - mu - other_bias[col])``: the numerator of one side's biases
    (users: rows are users, cols items; items: the reverse)."""
    return np.bincount(rows, r - mu - other_bias[cols], minlength=size)


def _alternate(half, user_sums, n_u, n_i, reg, passes):
    """``(bu, bi)`` after ``passes >= 1`` alternating passes, from the first pass's user sums
    (:func:`_bias_sums` with the item biases at zero); ``half(side, other_bias)`` gives
    :func:`_bias_sums` of ``side`` ("user" or "item")."""
    den_u = np.maximum(n_u, 1) * (1.0 + reg)
    den_i = np.maximum(n_i, 1) * (1.0 + reg)
    bu = user_sums / den_u
    for _ in range(passes - 1):
        bu = half("user", half("item", bu) / den_i) / den_u
    return bu, half("item", bu) / den_i


def _fit_biases_local(seen, reg, passes):
    """``(mu, bu, bi)`` from the CSR on the driver (float64)."""
    n_users, n_items = seen.shape
    u = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(seen.indptr))
    i, r = seen.indices, seen.data.astype(np.float64)
    mu = float(r.mean())
    if passes == 0:
        return mu, np.zeros(n_users), np.zeros(n_items)
    sides = {"user": (u, i, n_users), "item": (i, u, n_items)}

    def half(side, other):
        rows, cols, size = sides[side]
        return _bias_sums(rows, cols, r, mu, other, size)

    bu, bi = _alternate(half, half("user", np.zeros(n_items)),
                        np.bincount(u, minlength=n_users).astype(np.float64),
                        np.bincount(i, minlength=n_items).astype(np.float64), reg, passes)
    return mu, bu, bi


def _fit_biases(enc, n_users, n_items, reg, passes):
    """``(mu, bu, bi)`` by passes over the encoded ratings in Spark: the first gathers the
    counts and sums (hence the mean), each later one a half-pass."""
    def counts_and_sums(batch):
        u = batch.column(0).to_numpy()
        i = batch.column(1).to_numpy()
        r = batch.column(2).to_numpy().astype(np.float64)
        return np.concatenate([np.bincount(u, minlength=n_users),
                               np.bincount(u, r, minlength=n_users),
                               np.bincount(i, minlength=n_items)])

    first = _partition_sums(enc, counts_and_sums, 2 * n_users + n_items)
    n_u, s_u, n_i = first[:n_users], first[n_users:2 * n_users], first[2 * n_users:]
    mu = float(s_u.sum() / n_u.sum())
    if passes == 0:
        return mu, np.zeros(n_users), np.zeros(n_items)
    sc = enc.sparkSession.sparkContext
    sizes = {"user": n_users, "item": n_items}

    def half(side, other):
        b_other = sc.broadcast(other)
        size = sizes[side]

        def sums(batch):
            u = batch.column(0).to_numpy()
            i = batch.column(1).to_numpy()
            r = batch.column(2).to_numpy().astype(np.float64)
            rows, cols = (u, i) if side == "user" else (i, u)
            return _bias_sums(rows, cols, r, mu, b_other.value, size)

        try:
            return _partition_sums(enc, sums, size)
        finally:
            b_other.unpersist()

    bu, bi = _alternate(half, s_u - n_u * mu, n_u, n_i, reg, passes)
    return mu, bu, bi


def _driver_frame(spark, seen, mu, bu, bi):
    """The driver's CSR as the Spark DataFrame ALS factorizes: (u int, i int, r float), ``r`` the
    residual ``rating - mu - b_u - b_i`` (the rating itself when all are zero), in one partition
    per core."""
    import pyarrow as pa

    u = np.repeat(np.arange(seen.shape[0], dtype=np.int32), np.diff(seen.indptr))
    i = seen.indices.astype(np.int32, copy=False)
    r = seen.data.astype(np.float32, copy=True)
    if mu or bu.any() or bi.any():
        r -= np.float32(mu)
        r -= bu.astype(np.float32)[u]
        r -= bi.astype(np.float32)[i]
    frame = spark.createDataFrame(pa.table({"u": u, "i": i, "r": r}))
    # createDataFrame makes one partition per Arrow batch (10,000 rows by default): merged into
    # one per core, ALS's first stage runs a few large tasks instead of hundreds of small ones
    return frame.coalesce(max(1, spark.sparkContext.defaultParallelism))


def _residuals(enc, mu, bu, bi):
    """(u, i, r - mu - b_u - b_i), the ratings Spark's ALS factorizes."""
    import pyarrow as pa

    sc = enc.sparkSession.sparkContext
    b = sc.broadcast((float(mu), bu.astype(np.float32), bi.astype(np.float32)))

    def residual(batches):
        mu_, bu_, bi_ = b.value
        for batch in batches:
            u = batch.column(0).to_numpy()
            i = batch.column(1).to_numpy()
            r = batch.column(2).to_numpy() - np.float32(mu_) - bu_[u] - bi_[i]
            yield pa.RecordBatch.from_arrays([batch.column(0), batch.column(1),
                                              pa.array(r.astype(np.float32))],
                                             names=["u", "i", "r"])

    return enc.mapInArrow(residual, "u int, i int, r float")


def _collect_factors(frame, n_rows, k):
    """Spark's (id, features) factors as a dense float32 array; ids are our indices."""
    table = _to_arrow(frame)
    ids = _column(table, "id").astype(np.int64)
    feats = table.column("features").combine_chunks()
    flat = feats.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    out = np.zeros((n_rows, k), np.float32)
    if ids.size:
        out[ids] = flat.reshape(ids.size, k)
    return out


def _train_loss(model, seen, reg):
    """(loss, RMSE) on the training ratings, as mfrec.ALS records them after a sweep."""
    from .kernels import als as _k

    P, Q, bu, bi = model.user_factors_, model.item_factors_, model.user_bias_, model.item_bias_
    sse = float(_k.row_squared_errors(seen.indptr.astype(np.int64), seen.indices, seen.data,
                                      P, bu, Q, bi, np.float32(model.global_mean_)).sum())
    user_counts = np.diff(seen.indptr)
    item_counts = np.bincount(seen.indices, minlength=Q.shape[0])
    penalty = reg * (user_counts @ (np.einsum("ij,ij->i", P, P) + bu * bu)
                     + item_counts @ (np.einsum("ij,ij->i", Q, Q) + bi * bi))
    return float((sse + penalty) / seen.nnz), float(np.sqrt(sse / seen.nnz))


# ---------------------------------------------------------------------- top-N in Spark
def _as_model(model):
    from .models.base import FactorModel

    if isinstance(model, (str, Path)):
        from .persist import load
        model = load(model)
    if not isinstance(model, FactorModel):
        raise TypeError(f"model must be a fitted mfrec model or a model file, got "
                        f"{type(model).__name__}")
    model._check_fitted()
    return model


def _item_blocks(sc, model, item_block):
    """The item side — float32 factors and biases — broadcast in blocks of ``item_block``
    items, so no single broadcast (and no score tile) grows with the catalogue."""
    Q = np.ascontiguousarray(model.item_factors_, dtype=np.float32)
    bias = np.asarray(model.item_bias_, dtype=np.float32)
    return [(start, sc.broadcast((Q[start:start + item_block], bias[start:start + item_block])))
            for start in range(0, Q.shape[0], item_block)]


def topn_block(U, blocks, seen_indptr, seen_indices, rows, n, *, chunk=64):
    """Top-``n`` item indices and scores of each user against item blocks (NumPy).

    Parameters
    ----------
    U : float32 array of shape (m, k)
        User factors.
    blocks : list of (start, Q_block, bias_block)
        Item factors (float32, shape (b, k)) and biases of items ``start .. start + b - 1``.
    seen_indptr, seen_indices : CSR arrays of the items to exclude per user, or None
    rows : int64 array of shape (m,)
        Row of each user in the seen matrix; -1 excludes nothing.
    n : int
    chunk : int, default=64
        Width of the column chunks that pre-select candidates in a score tile (see Notes); 0
        selects from whole tiles.

    Returns
    -------
    pos : int64 array of shape (m, n)
        Item indices, best first; -1 pads rows with fewer than ``n`` candidates.
    scores : float32 array of shape (m, n)
        ``bias[i] + U[u] . Q[i]``; ``-inf`` in the padding.

    Notes
    -----
    A user's best ``n`` items of a tile lie in the ``n`` chunks of ``chunk`` columns with the
    highest maxima (ties aside): any other chunk is beaten by ``n`` chunks each holding a better
    score. So each tile costs one max-reduction and a selection among ``n * chunk`` gathered
    scores per user, a few times cheaper than a selection over the whole row.
    """
    m = U.shape[0]
    best_pos = np.full((m, 0), -1, np.int64)
    best_sc = np.full((m, 0), -np.inf, np.float32)
    if seen_indptr is not None:
        has = rows >= 0
        r = np.where(has, rows, 0)
        starts, ends = seen_indptr[r], np.where(has, seen_indptr[r + 1], seen_indptr[r])
        lengths = ends - starts
        seen_row = np.repeat(np.arange(m), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        seen_item = seen_indices[np.repeat(starts, lengths) + offsets].astype(np.int64)
    for start, Q, bias in blocks:
        S = U @ Q.T
        S += bias
        if seen_indptr is not None and seen_item.size:
            sel = (seen_item >= start) & (seen_item < start + Q.shape[0])
            S[seen_row[sel], seen_item[sel] - start] = -np.inf
        part, cand_sc = _select_tile(S, n, chunk)
        best_pos = np.concatenate([best_pos, part + start], axis=1)
        best_sc = np.concatenate([best_sc, cand_sc], axis=1)
        if best_pos.shape[1] > n:
            keep = np.argpartition(-best_sc, n - 1, axis=1)[:, :n]
            best_pos = np.take_along_axis(best_pos, keep, axis=1)
            best_sc = np.take_along_axis(best_sc, keep, axis=1)
    order = np.argsort(-best_sc, axis=1, kind="stable")
    best_pos = np.take_along_axis(best_pos, order, axis=1)
    best_sc = np.take_along_axis(best_sc, order, axis=1)
    best_pos[~np.isfinite(best_sc)] = -1
    if best_pos.shape[1] < n:  # a catalogue smaller than n
        pad = n - best_pos.shape[1]
        best_pos = np.hstack([best_pos, np.full((m, pad), -1, np.int64)])
        best_sc = np.hstack([best_sc, np.full((m, pad), -np.inf, np.float32)])
    return best_pos, best_sc


def _select_tile(S, n, chunk):
    """(columns, scores) of the ``min(n, columns)`` best scores per row of a tile, in no order.

    NaN scores are picked only when there are not enough others (NumPy sorts them last, so the
    whole-row path selects on ``-S``; ``maximum`` propagates them, so the chunked path, taken
    only when no chunk maximum is NaN, never meets one).
    """
    c = S.shape[1]
    take = min(n, c)
    if chunk and c >= 2 * n * chunk:
        maxima = np.maximum.reduceat(S, np.arange(0, c, chunk), axis=1)
        if not np.isnan(maxima).any():  # NaN maxima would crowd out real chunks
            n_chunks = maxima.shape[1]
            top = np.argpartition(maxima, n_chunks - n, axis=1)[:, -n:]
            cols = (top[:, :, None] * chunk + np.arange(chunk)).reshape(S.shape[0], -1)
            vals = np.take_along_axis(S, np.minimum(cols, c - 1), axis=1)
            vals[cols >= c] = -np.inf  # past the end of a short last chunk
            keep = np.argpartition(vals, vals.shape[1] - n, axis=1)[:, -n:]
            return np.take_along_axis(cols, keep, axis=1), np.take_along_axis(vals, keep, axis=1)
    if take < c:
        part = np.argpartition(-S, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(c), S.shape).copy()
    return part, np.take_along_axis(S, part, axis=1)


def _arrow_type(ids, what):
    import pyarrow as pa

    kind = ids.dtype.kind
    if kind == "i" and ids.dtype.itemsize <= 4:
        return pa.int32(), "int"
    if kind in "iu":
        return pa.int64(), "bigint"
    if kind == "f":
        return pa.float64(), "double"
    if kind in "US" or (kind == "O" and all(isinstance(x, str) for x in ids[:1000])):
        return pa.string(), "string"
    raise TypeError(f"{what} ids of dtype {ids.dtype} cannot be written by Spark; use int, "
                    f"float or str ids")


def _task_threads():
    from pyspark import TaskContext

    ctx = TaskContext.get()
    try:
        return max(1, int(ctx.cpus())) if ctx is not None else 1
    except Exception:  # older pyspark: one core per task is Spark's default
        return 1


def _user_rows(spark, model, users, n_parts):
    """A DataFrame of model user indices (column ``u``) to score, and a note of drops."""
    from pyspark.sql import DataFrame

    if users is None:
        return spark.range(0, model.n_users_, numPartitions=n_parts).withColumnRenamed("id", "u")
    if isinstance(users, DataFrame):
        if len(users.columns) != 1:
            raise ValueError(f"users as a DataFrame must have one column of user ids, got "
                             f"columns {users.columns}")
        col = users.columns[0]
        _id_kind(users.schema.fields[0].dataType, "users column", col)
        import pyarrow as pa

        b_vocab = spark.sparkContext.broadcast(model.user_vocab_)

        def encode(batches):
            lookup = _lookup_fn(b_vocab.value)
            for batch in batches:
                u = lookup(_arrow_ids(batch.column(0)))
                u = u[u >= 0]  # users the model does not know have no factors to score
                yield pa.RecordBatch.from_arrays([pa.array(u)], names=["u"])

        return users.mapInArrow(encode, "u bigint").distinct()
    idx = np.unique(model.user_vocab_.lookup(users))  # unknown ids: KeyError naming them
    return spark.createDataFrame([(int(x),) for x in idx], "u bigint").repartition(n_parts)


def _seen_lists(spark, model, seen, user_col, item_col):
    """(u, items array) per user of a Spark DataFrame of items to exclude, via vocabularies."""
    from pyspark.sql import functions as F

    for arg, col in (("user_col", user_col), ("item_col", item_col)):
        if col not in seen.columns:
            raise ValueError(f"seen: {arg}={col!r} is not a column (columns: {seen.columns})")
    frame = seen.select(F.col(user_col).alias("user"), F.col(item_col).alias("item"),
                        F.lit(0.0).alias("rating"))
    enc = _encode_frame(frame, model.user_vocab_, model.item_vocab_, keep_unknown=True)
    return (enc.filter((F.col("u") >= 0) & (F.col("i") >= 0))
            .groupBy("u").agg(F.collect_set("i").alias("seen")))


def recommend_all(model, users=None, n=10, *, exclude_seen=True, seen=None, output=None,
                  table=None, mode="errorifexists", spark=None, user_col="user",
                  item_col="item", item_block=16384, user_batch=1024, num_partitions=None):
    """Top-``n`` items for many users, computed in Spark from a model's factors.

    Parameters
    ----------
    model : FactorModel or str or Path
        Any fitted mfrec model (trained locally or by :func:`fit`), or its model file.
    users : None, array-like of raw ids, or a one-column Spark DataFrame of raw ids
        Default every user of the model. Unknown ids in an array raise ``KeyError`` (as
        ``recommend``); in a DataFrame they are dropped (they have no factors).
    n : int, default=10
    exclude_seen : bool, default=True
        Leave out each user's seen items: the model's training interactions (``user_items_``,
        broadcast to the executors), or ``seen`` when given.
    seen : Spark DataFrame, optional
        (user, item) pairs to exclude instead of ``user_items_`` — e.g. the training data that
        stayed in Spark (:func:`fit` with ``keep_seen=False``). Raw ids; unknown ones are ignored.
    output : str, optional
        Write Parquet here (``user, rank, item, score``) and return the path.
    table : str, optional
        Save as this table (``saveAsTable``) instead; returns the table name.
    mode : str, default="errorifexists"
        Spark's save mode for ``output`` / ``table`` ("overwrite", "append", ...).
    spark : SparkSession, optional
    user_col, item_col : str
        Columns of ``seen``.
    item_block : int, default=16384
        Items per broadcast block and score tile (a tile is ``user_batch * item_block`` float32).
    user_batch : int, default=1024
        Users scored per matrix product.
    num_partitions : int, optional
        Partitions of the users; default Spark's default parallelism.

    Returns
    -------
    pyspark.sql.DataFrame or str
        Columns ``user`` (raw id), ``rank`` (1 = best), ``item`` (raw id), ``score`` (float64,
        the model's score as ``predict(..., clip=False)``). A user with fewer than ``n``
        candidates gets fewer rows (local ``recommend`` pads instead). Without ``output`` and
        ``table`` the DataFrame is lazy: each action recomputes it.

    Notes
    -----
    Each partition scores its users in batches: ``U @ Q_block.T + item_bias`` by NumPy (with as
    many BLAS threads as the task has cores), seen items set to ``-inf``, a partial selection per
    block merged into a running top-``n``. Ranking is by ``item_bias + U . Q`` as locally (the
    global mean and user bias do not change a user's ranking); items with equal scores may come
    in another order than local ``recommend``'s.
    """
    from ._validation import check_bool, check_int

    _require_pyspark()
    model = _as_model(model)
    n = check_int("n", n, low=1)
    exclude_seen = check_bool("exclude_seen", exclude_seen)
    item_block = check_int("item_block", item_block, low=1)
    user_batch = check_int("user_batch", user_batch, low=1)
    num_partitions = check_int("num_partitions", num_partitions, low=1, allow_none=True)
    if output is not None and table is not None:
        raise ValueError("give output (a Parquet path) or table, not both")
    spark = _session(spark)
    from pyspark.sql import DataFrame

    if seen is not None and not isinstance(seen, DataFrame):
        raise TypeError(f"seen must be a Spark DataFrame of (user, item) pairs or None, got "
                        f"{type(seen).__name__}")
    sc = spark.sparkContext
    n_parts = num_partitions or sc.defaultParallelism
    rows = _user_rows(spark, model, users, n_parts)
    use_lists = exclude_seen and seen is not None
    if use_lists:
        rows = rows.join(_seen_lists(spark, model, seen, user_col, item_col), "u", "left")
    if users is not None or use_lists:  # spark.range is already split evenly
        rows = rows.repartition(n_parts)

    uvt, u_sql = _arrow_type(model.user_vocab_.ids, "user")
    ivt, i_sql = _arrow_type(model.item_vocab_.ids, "item")
    blocks = _item_blocks(sc, model, item_block)
    b_users = sc.broadcast((np.ascontiguousarray(model.user_factors_, dtype=np.float32),
                            np.asarray(model.user_bias_, dtype=np.float64),
                            float(model.global_mean_), model.user_vocab_.ids,
                            model.item_vocab_.ids))
    b_seen = None
    if exclude_seen and seen is None:
        from .models.base import _csr_arrays
        b_seen = sc.broadcast(_csr_arrays(model.user_items_))

    def score(batches):
        import pyarrow as pa
        from threadpoolctl import threadpool_limits

        P, ubias, mu, user_ids, item_ids = b_users.value
        item_blocks = [(start, *b.value) for start, b in blocks]
        indptr, indices = b_seen.value if b_seen is not None else (None, None)
        with threadpool_limits(_task_threads()):
            for batch in batches:
                uidx = batch.column(0).to_numpy().astype(np.int64)
                lists = batch.column(1) if use_lists else None
                for s in range(0, uidx.size, user_batch):
                    ub = uidx[s:s + user_batch]
                    if use_lists:
                        ind, ptr = _list_csr(lists.slice(s, ub.size))
                        pos, sc_ = topn_block(P[ub], item_blocks, ptr, ind,
                                              np.arange(ub.size), n)
                    else:
                        pos, sc_ = topn_block(P[ub], item_blocks, indptr, indices,
                                              ub if indptr is not None else
                                              np.full(ub.size, -1), n)
                    ok = pos >= 0
                    r, c = np.nonzero(ok)
                    scores = sc_[ok].astype(np.float64) + mu + ubias[ub][r]
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(user_ids[ub][r], uvt), pa.array((c + 1).astype(np.int32)),
                         pa.array(item_ids[pos[ok]], ivt), pa.array(scores)],
                        names=["user", "rank", "item", "score"])

    out = rows.mapInArrow(score, f"user {u_sql}, rank int, item {i_sql}, score double")
    if output is not None:
        out.write.mode(mode).parquet(str(output))
        return str(output)
    if table is not None:
        out.write.mode(mode).saveAsTable(str(table))
        return str(table)
    return out


def _list_csr(col):
    """(indices, indptr) of an Arrow list column (nulls as empty lists)."""
    col = col.fill_null([]) if hasattr(col, "fill_null") and col.null_count else col
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.to_numpy(zero_copy_only=False).astype(np.int64) if len(col) else \
        np.zeros(0, np.int64)
    return values[offsets[0]:offsets[-1]], offsets - offsets[0]


# ---------------------------------------------------------------------- evaluation
_RATING_METRICS = ("rmse", "mae")
_RANK_METRICS = ("ndcg", "recall", "precision", "map", "hit_rate")


def evaluate(model, test, *, k=10, metrics=None, exclude_seen=True, relevance_threshold=None,
             spark=None, user_col="user", item_col="item", rating_col="rating",
             read_options=None, item_block=16384, user_batch=1024):
    """Rating and ranking metrics of a model on a test set held in Spark.

    Parameters
    ----------
    model : FactorModel or str or Path
        A fitted mfrec model or its model file.
    test : Spark DataFrame, pandas DataFrame or path
        Held-out (user, item[, rating]) interactions with raw ids.
    k : int, default=10
    metrics : sequence of str, optional
        From ``("rmse", "mae", "ndcg", "recall", "precision", "map", "hit_rate")`` (``@k``
        accepted and ignored); default all (the rating ones only with a rating column).
    exclude_seen : bool, default=True
        Rank only items unseen in training (the model's ``user_items_``), and drop test pairs
        seen in training from the relevant sets, as
        :func:`mfrec.evaluation.ranking.evaluate_ranking` does.
    relevance_threshold : float, optional
        Only test pairs rated at least this are relevant.
    spark : SparkSession, optional
    user_col, item_col, rating_col : str
    read_options : dict, optional
        As in :func:`fit`.
    item_block, user_batch : int
        As in :func:`recommend_all`.

    Returns
    -------
    dict
        ``"rmse"``, ``"mae"`` (over every test pair, by ``predict``: unknown users or items
        fall back to the mean and biases, clipped to the training range as the model clips) and
        ``"ndcg@k"``, ``"recall@k"``, ``"precision@k"``, ``"map@k"``, ``"hit_rate@k"``, means
        over the test users known to the model with a relevant item — the definitions and
        conventions of :func:`mfrec.evaluation.ranking.evaluate_ranking` (relevant items
        unknown to the model count against recall, NDCG and MAP), so the values agree with it.

    Notes
    -----
    The test set never comes to the driver: each partition encodes its pairs through the
    broadcast vocabularies and returns partial sums; the ranking metrics group the relevant
    items by user in Spark and score each group's users in NumPy against the broadcast item
    factors.
    """
    from ._validation import check_bool, check_float, check_int
    from .evaluation.ranking import _metric_list

    _require_pyspark()
    import pyarrow as pa
    from pyspark.sql import functions as F

    model = _as_model(model)
    k = check_int("k", k, low=1)
    exclude_seen = check_bool("exclude_seen", exclude_seen)
    relevance_threshold = check_float("relevance_threshold", relevance_threshold,
                                      allow_none=True)
    if metrics is None:
        names = list(_RATING_METRICS + _RANK_METRICS if rating_col is not None
                     else _RANK_METRICS)
    else:
        names = _metric_list(metrics, _RATING_METRICS + _RANK_METRICS)
    if rating_col is None and any(m in _RATING_METRICS for m in names):
        raise ValueError("rmse and mae need a rating column; rating_col is None")
    spark = _session(spark)
    sc = spark.sparkContext
    df = _select(_read(spark, test, read_options), user_col, item_col, rating_col)
    enc = _encode_frame(df, model.user_vocab_, model.item_vocab_, keep_unknown=True)
    out = {}
    clip = bool(model._clip_predictions)
    b_model = sc.broadcast((np.asarray(model.user_factors_, np.float32),
                            np.asarray(model.item_factors_, np.float32),
                            np.asarray(model.user_bias_, np.float64),
                            np.asarray(model.item_bias_, np.float64),
                            float(model.global_mean_), tuple(model.rating_range_)))
    try:
        if any(m in _RATING_METRICS for m in names):
            def errors(batch):
                P, Q, bu, bi, mu, (lo, hi) = b_model.value
                u, i = batch.column(0).to_numpy(), batch.column(1).to_numpy()
                r = batch.column(2).to_numpy().astype(np.float64)
                pred = np.full(u.size, mu)
                ku, ki = u >= 0, i >= 0
                pred[ku] += bu[u[ku]]
                pred[ki] += bi[i[ki]]
                both = ku & ki
                pred[both] += np.einsum("ij,ij->i", P[u[both]], Q[i[both]], dtype=np.float64)
                if clip:
                    np.clip(pred, lo, hi, out=pred)
                e = r - pred
                return np.array([e @ e, np.abs(e).sum(), e.size])

            sse, sae, cnt = _partition_sums(enc, errors, 3)
            if cnt == 0:
                raise ValueError("the test set is empty")
            if "rmse" in names:
                out["rmse"] = float(np.sqrt(sse / cnt))
            if "mae" in names:
                out["mae"] = float(sae / cnt)
        rank_names = [m for m in names if m in _RANK_METRICS]
        if rank_names:
            rel = enc.filter(F.col("u") >= 0)
            if relevance_threshold is not None:
                rel = rel.filter(F.col("r") >= relevance_threshold)
            b_seen = None
            if exclude_seen:
                from .models.base import _csr_arrays
                b_seen = sc.broadcast(_csr_arrays(model.user_items_))

                n_cols = model.n_items_

                def unseen(batches):
                    keys = _row_keys(*b_seen.value, n_cols)
                    for batch in batches:
                        u = batch.column(0).to_numpy()
                        i = batch.column(1).to_numpy()
                        keep = np.ones(u.size, bool)
                        known = i >= 0
                        keep[known] = ~_in_rows(keys, n_cols, u[known], i[known])
                        yield batch.filter(pa.array(keep))

                rel = rel.mapInArrow(unseen, rel.schema)
            grouped = rel.groupBy("u").agg(F.collect_list("i").alias("items"))
            blocks = _item_blocks(sc, model, item_block)

            def ranking(batch):
                P = b_model.value[0]
                item_blocks = [(start, *b.value) for start, b in blocks]
                indptr, indices = b_seen.value if b_seen is not None else (None, None)
                uidx = batch.column(0).to_numpy().astype(np.int64)
                items, ptr = _list_csr(batch.column(1))
                acc = np.zeros(len(_RANK_METRICS) + 1)
                with _limits():
                    for s in range(0, uidx.size, user_batch):
                        ub = uidx[s:s + user_batch]
                        pos, _ = topn_block(P[ub], item_blocks, indptr, indices,
                                            ub if indptr is not None else np.full(ub.size, -1),
                                            k)
                        acc += _ranking_sums(pos, items, ptr[s:s + ub.size + 1], k)
                return acc

            sums = _partition_sums(grouped, ranking, len(_RANK_METRICS) + 1)
            if sums[-1] == 0:
                raise ValueError("no test interaction is left to evaluate (all users unknown, "
                                 "or all pairs below the threshold or seen in training)")
            for j, name in enumerate(_RANK_METRICS):
                if name in rank_names:
                    out[f"{name}@{k}"] = float(sums[j] / sums[-1])
    finally:
        b_model.unpersist()
    return {m if m in out else f"{m}@{k}": out[m if m in out else f"{m}@{k}"] for m in names}


def _limits():
    from threadpoolctl import threadpool_limits
    return threadpool_limits(_task_threads())


def _in_rows(keys, n_cols, rows, cols):
    """Whether each (rows[t], cols[t]) is in ``keys``, the sorted row-major keys of a CSR
    pattern (:func:`_row_keys`)."""
    q = rows.astype(np.int64) * n_cols + cols
    if keys.size == 0:
        return np.zeros(q.shape, bool)
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return keys[pos] == q


def _row_keys(indptr, indices, n_cols):
    counts = np.diff(indptr)
    return np.repeat(np.arange(counts.size, dtype=np.int64), counts) * n_cols + indices


def _ranking_sums(pos, items, ptr, k):
    """Sums over users of ndcg, recall, precision, map and hit rate, and the user count.

    ``items[ptr[r]:ptr[r+1]]`` are user ``r``'s relevant item indices (-1 = unknown item, each
    pair counted; known items counted once).
    """
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    sums = np.zeros(len(_RANK_METRICS) + 1)
    for r in range(pos.shape[0]):
        rel = items[ptr[r]:ptr[r + 1]]
        known = np.unique(rel[rel >= 0])
        n_rel = known.size + int((rel < 0).sum())
        if n_rel == 0:
            continue
        hits = np.isin(pos[r, :k], known) & (pos[r, :k] >= 0)
        n_hits = hits.sum()
        ideal = discount[:min(n_rel, k)].sum()
        prec_j = np.cumsum(hits) / np.arange(1, k + 1)
        sums += (hits @ discount / ideal, n_hits / n_rel, n_hits / k,
                 (prec_j * hits).sum() / min(n_rel, k), float(n_hits > 0), 1.0)
    return sums


# ---------------------------------------------------------------------- command line
def cli_fit(args, name, model):
    """``mfrec fit DATA --engine spark``: fit ``model``'s hyperparameters in Spark, save, report.

    ``args`` is the parsed command line (``data``, ``output``, ``spark_master``, ``sep``,
    ``header``, ``names``, ``validation``, ``plot``, ``json``); ``name`` the registry name and
    ``model`` the unfitted model the command built from the options. Returns the exit code.
    """
    import json

    if name not in SPARK_MODELS:
        raise ValueError(f"--engine spark fits {', '.join(SPARK_MODELS)}, got -m {name}")
    if getattr(args, "validation", None) is not None:
        raise ValueError("--validation is not available with --engine spark")
    options = {}
    if getattr(args, "sep", None):
        options["sep"] = {"tab": "\t", "\\t": "\t", "comma": ",", "space": " ",
                          "semicolon": ";", "pipe": "|"}.get(args.sep.lower(), args.sep)
    if getattr(args, "header", "infer") in ("yes", "no"):
        options["header"] = "true" if args.header == "yes" else "false"
    if getattr(args, "names", None):
        options["names"] = args.names
    fmt = getattr(args, "fmt", "auto")
    if fmt in ("tsv", "movielens"):
        options.setdefault("sep", "\t")
        fmt = "csv"
    if fmt not in (None, "auto", "csv", "parquet"):
        raise ValueError(f"--format {fmt} is not available with --engine spark (csv, tsv, "
                         f"parquet, movielens are)")
    if fmt in ("csv", "parquet"):
        options["format"] = fmt
    duplicates = getattr(args, "duplicates", "error")
    if duplicates not in ("error", "mean", "sum"):
        raise ValueError(f"--duplicates {duplicates} is not available with --engine spark "
                         f"(error, mean, sum are)")
    spark = session(args.spark_master or "local[*]")
    params = model.get_params()
    t0 = time.perf_counter()
    fitted = fit(args.data, name, spark=spark, read_options=options, duplicates=duplicates,
                 **params)
    fit_time = time.perf_counter() - t0
    path = fitted.save(args.output)
    result = {"model": name, "class": type(fitted).__name__, "engine": "spark",
              "spark_master": spark.sparkContext.master, "path": str(path),
              "n_users": fitted.n_users_, "n_items": fitted.n_items_,
              "n_ratings": int(fitted.user_items_.nnz),
              "n_factors": int(fitted.item_factors_.shape[1]), "fit_time": round(fit_time, 3)}
    if getattr(args, "plot", None):
        from .plots import fit_report
        fit_report(fitted, args.plot)
        result["plot"] = args.plot
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print(f"Fitted {type(fitted).__name__} in Spark ({result['spark_master']}) on "
              f"{result['n_ratings']} ratings ({result['n_users']} users, {result['n_items']} "
              f"items) in {fit_time:.2f} s")
        print(f"Saved to {path}")
    return 0


def cli_recommend_all(args):
    """``mfrec recommend MODEL --all-users --engine spark -o recs.parquet``: top-N for every
    user computed in Spark, written as a Parquet folder (Spark's layout). Returns the exit
    code."""
    spark = session(args.spark_master or "local[*]")
    out = recommend_all(args.model_path, n=args.n, exclude_seen=not args.include_seen,
                        output=str(args.output), spark=spark, mode="overwrite")
    count = spark.read.parquet(out).select("user").distinct().count()
    print(f"Wrote top-{args.n} for {count} users to {out} (Spark, "
          f"{spark.sparkContext.master})")
    return 0
