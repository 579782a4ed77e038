"""Training and serving hold under hostile settings (issue 13, items 8 and 10-13).

Every fit either succeeds with finite state or raises DivergenceError naming what to change; a
fixed seed reproduces a fit in any process; concurrent serving leaves the BLAS thread count as
it was; a huge ``n`` allocates nothing; fold-in of nobody gives the bias-only fallback, and a
folded-in user can be scored with ``predict``.
"""
import importlib
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

import mfrec
from mfrec.models.base import DivergenceError, FoldedUsers

from conftest import random_csr

pytestmark = pytest.mark.filterwarnings("ignore::mfrec.models._guard.FitWarning")

KERNEL_MODULES = ["als", "bayes", "bpr", "implicit_als", "sgd", "sparse", "svdpp", "topn"]


def _triples(csr, scale=1.0):
    coo = csr.tocoo()
    return coo.row, coo.col, coo.data.astype(np.float64) * scale


@pytest.fixture(scope="module")
def ratings():
    # 120 users x 60 items, ~30% rated with 1..5 stars
    return random_csr(120, 60, 0.3, seed=3)


# ---------------------------------------------------------------------- kernels never raise
@pytest.mark.parametrize("name", KERNEL_MODULES)
def test_kernels_use_numpy_errors_and_reproducible_fastmath(name):
    # error_model="numpy": a division by zero is inf/NaN (caught by the models' checks), never
    # a ZeroDivisionError raised in compiled code (which surfaced as an opaque SystemError);
    # no 'arcp' or 'fast': with reassociation it made a freshly compiled kernel compute
    # differently from the cached one (ALS(solver="cg") not reproducible across processes)
    from numba.core.registry import CPUDispatcher

    module = importlib.import_module(f"mfrec.kernels.{name}")
    kernels = [v for v in vars(module).values() if isinstance(v, CPUDispatcher)]
    assert kernels
    for k in kernels:
        assert k.targetoptions.get("error_model") == "numpy", k.__name__
        flags = k.targetoptions.get("fastmath")
        flags = getattr(flags, "flags", flags) or set()
        assert not {"fast", "arcp"} & set(flags), (k.__name__, flags)
        # Numba-level inlining of floating-point code had the same effect (BiasedMF)
        assert not (flags and k.targetoptions.get("inline") == "always"), k.__name__


# ---------------------------------------------------------------------- divergence
@pytest.mark.parametrize("params, named", [
    ({"learning_rate": 0.5}, "learning_rate"),
    ({"learning_rate": 100.0}, "learning_rate"),
    ({"init_scale": 1e10}, "init_scale"),
    ({"regularization": 1e6}, "regularization"),
])
def test_bpr_divergence_is_a_clear_error(params, named):
    # formerly: SystemError from a ZeroDivisionError in the kernel, or a silent loss of 4.8e12
    X = sp.random(300, 200, density=0.1, random_state=1, format="csr", dtype=np.float32)
    X.data[:] = 1
    model = mfrec.BPR(n_factors=16, n_epochs=30, random_state=0, num_threads=1, **params)
    with pytest.raises(DivergenceError, match=f"BPR training diverged.*{named} \\(now") as err:
        model.fit(X)
    assert isinstance(err.value, FloatingPointError)
    assert not hasattr(model, "user_factors_")


def test_bpr_default_fit_passes_the_divergence_guard():
    X = sp.random(300, 200, density=0.1, random_state=1, format="csr", dtype=np.float32)
    X.data[:] = 1
    model = mfrec.BPR(n_factors=16, n_epochs=30, random_state=0, num_threads=1).fit(X)
    assert max(model.loss_history_) < 0.7 and model.loss_history_[-1] < model.loss_history_[0]


@pytest.mark.parametrize("cls, params, named", [
    (mfrec.ALS, {"regularization": 1e30}, "regularization"),
    (mfrec.ImplicitALS, {"regularization": 1e30}, "regularization"),
    (mfrec.ImplicitALS, {"alpha": 1e30}, "alpha"),
    (mfrec.BiasedMF, {"learning_rate": 50.0}, "learning_rate"),
])
def test_overflowing_hyperparameters_raise_instead_of_nan_models(ratings, cls, params, named):
    # formerly: NaN factors with exit 0 (ALS, ImplicitALS)
    model = cls(n_factors=4, n_epochs=3, random_state=0, num_threads=1, **params)
    with pytest.raises(DivergenceError, match=f"{cls.__name__} training diverged.*{named}"):
        model.fit(ratings)
    assert not hasattr(model, "user_factors_")


def test_finite_check_names_the_array_and_the_model():
    model = mfrec.ALS(regularization=3.0)
    with pytest.raises(DivergenceError, match=r"2 of 4 values of item_factors.*regularization "
                                              r"\(now 3.0\)"):
        model._set_factor_state(np.zeros((2, 2)), np.array([[1, np.nan], [np.inf, 0]]))


@pytest.mark.parametrize("cls, extra", [
    (mfrec.ALS, {"solver": "cg"}),
    (mfrec.ALS, {"solver": "cholesky"}),
    (mfrec.BayesianMF, {"n_epochs": 8, "burn_in": 3}),
    (mfrec.BayesianMF, {"n_epochs": 8, "burn_in": 3, "noise_precision": 2.0}),
])
def test_rating_scale_is_exactly_equivariant_for_powers_of_two(ratings, cls, extra):
    # ratings x 2**17 are fitted on the same unit-spread numbers as the ratings themselves, so
    # every prediction is exactly 2**17 times the other's (BayesianMF died at ratings >= ~1000
    # with a SystemError; ALS overflowed float32)
    s = 2.0 ** 17
    kw = dict(n_factors=4, random_state=0, num_threads=1, **extra)
    if cls is mfrec.ALS:
        kw["n_epochs"] = 4
    base = cls(**kw).fit(_triples(ratings))
    if "noise_precision" in kw:  # a precision in the ratings' units: 1 / variance
        kw["noise_precision"] /= s * s
    big = cls(**kw).fit(_triples(ratings, s))
    u, i = np.nonzero(np.ones((20, 15)))
    np.testing.assert_allclose(big.predict(u, i), s * base.predict(u, i), rtol=1e-6)
    np.testing.assert_allclose(big.loss_history_, np.asarray(base.loss_history_) * (
        s if cls is mfrec.BayesianMF else s * s), rtol=1e-6)
    if cls is mfrec.BayesianMF:
        np.testing.assert_allclose(big.noise_precision_history_,
                                   np.asarray(base.noise_precision_history_) / s**2, rtol=1e-6)


def test_bayesian_mf_at_ratings_times_1000(ratings):
    # the case: ratings x 1000 (not a power of two) fit as well as the originals
    kw = dict(n_factors=4, n_epochs=20, burn_in=5, random_state=0, num_threads=1)
    base = mfrec.BayesianMF(**kw).fit(_triples(ratings))
    big = mfrec.BayesianMF(**kw).fit(_triples(ratings, 1000.0))
    u, i, r = _triples(ratings)
    rmse = np.sqrt(np.mean((base.predict(u, i) - r) ** 2))
    rmse_big = np.sqrt(np.mean((big.predict(u, i) - 1000 * r) ** 2)) / 1000
    assert np.isfinite(big.user_factors_).all() and np.isfinite(big.user_bias_).all()
    assert abs(rmse_big - rmse) < 0.1 * rmse


def test_als_at_the_largest_ratings_the_data_boundary_admits(ratings):
    u, i, r = _triples(ratings)
    scale = 1e6 / r.max()
    kw = dict(n_factors=4, n_epochs=4, random_state=0)
    try:
        model = mfrec.ALS(**kw).fit((u, i, r * scale))
    except ValueError as err:  # the data boundary may refuse them: that is a clear error too
        assert "rating" in str(err)
        return
    base = mfrec.ALS(**kw).fit((u, i, r))
    rmse = np.sqrt(np.mean((model.predict(u, i) / scale - r) ** 2))
    rmse_base = np.sqrt(np.mean((base.predict(u, i) - r) ** 2))
    assert np.isfinite(model.user_factors_).all() and abs(rmse - rmse_base) < 0.05 * rmse_base


# ---------------------------------------------------------------------- reproducibility
_REPRO = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from mfrec.kernels.als import solve_rows_cg, balanced_order
    rng = np.random.default_rng(0)
    n_u, n_i, k = 400, 150, 24
    dense = (rng.random((n_u, n_i)) < 0.2) * rng.integers(1, 6, (n_u, n_i))
    import scipy.sparse as sp
    R = sp.csr_matrix(dense.astype(np.float32)); C = R.tocsc()
    P = rng.standard_normal((n_u, k), dtype=np.float32) * np.float32(0.1)
    Q = rng.standard_normal((n_i, k), dtype=np.float32) * np.float32(0.1)
    bu = np.zeros(n_u, np.float32); bi = np.zeros(n_i, np.float32)
    mu = float(R.data.mean(dtype=np.float64))
    ou = balanced_order(np.diff(R.indptr)); oi = balanced_order(np.diff(C.indptr))
    for _ in range(4):
        solve_rows_cg(R.indptr.astype(np.int64), R.indices, R.data, P, bu, Q, bi, mu, 0.1, True,
                      3, ou, 8)
        solve_rows_cg(C.indptr.astype(np.int64), C.indices, C.data, Q, bi, P, bu, mu, 0.1, True,
                      3, oi, 8)
    from mfrec.kernels.sgd import make_blocks, sgd_epoch
    blocks = make_blocks(R.indptr, R.indices, R.data, n_i, 8, rng)
    f32 = np.float32
    for _ in range(3):
        sgd_epoch(*blocks, 1, P, Q, bu, bi, f32(mu), f32(0.01), f32(0.01), f32(0.02),
                  f32(0.02), f32(0.05), f32(0.05), np.zeros(64))
    print(hashlib.sha256(P.tobytes() + Q.tobytes() + bu.tobytes() + bi.tobytes()).hexdigest())
""")


def test_als_cg_and_sgd_reproducible_between_compiling_and_cached_processes(tmp_path):
    # the first process compiles the kernels into an empty cache, the next ones load them: with
    # fast-math 'arcp' + 'reassoc' (ALS) or an inline="always" helper (SGD) the two computed
    # differently (issue: ALS(solver="cg") gave 4 results in 76 runs)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), NUMBA_NUM_THREADS="1")
    digests = [subprocess.run([sys.executable, "-c", _REPRO], env=env, capture_output=True,
                              text=True, timeout=300, check=True).stdout.strip()
               for _ in range(3)]
    assert len(digests[0]) == 64 and len(set(digests)) == 1, digests


def test_als_fit_reproducible_in_process_with_fixed_seed(ratings):
    a = mfrec.ALS(n_factors=6, n_epochs=5, random_state=4, num_threads=1).fit(ratings)
    b = mfrec.ALS(n_factors=6, n_epochs=5, random_state=4, num_threads=1).fit(ratings)
    assert a.user_factors_.tobytes() == b.user_factors_.tobytes()
    assert a.item_bias_.tobytes() == b.item_bias_.tobytes()


# ---------------------------------------------------------------------- concurrent serving
def _blas_threads():
    from threadpoolctl import threadpool_info
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


def test_thread_context_restores_blas_limit_when_exits_interleave(monkeypatch):
    # A enters, B enters, A leaves, B leaves: restoring per block (the old code) left the
    # process at B's "original", i.e. A's limit of 1, for good. The BLAS is a stand-in with
    # threadpoolctl's semantics (a real OpenBLAS may ignore limits set from other threads).
    import mfrec._threads
    from mfrec._threads import thread_context

    blas = {"threads": 3}

    class FakeLimits:
        def __init__(self, limits):
            self.original = blas["threads"]
            blas["threads"] = limits

        def restore_original_limits(self):
            blas["threads"] = self.original

    class FakeController:  # threadpoolctl's ThreadpoolController, narrowed to the BLAS
        def limit(self, *, limits):
            return FakeLimits(limits)

    monkeypatch.setattr(mfrec._threads, "_blas_controller", lambda: FakeController())
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with thread_context(1):
            a_in.set()
            assert b_in.wait(10)
        a_out.set()

    def second():
        assert a_in.wait(10)
        with thread_context(1):
            b_in.set()
            assert a_out.wait(10)
            inside = blas["threads"]
        return inside

    with ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(first), pool.submit(second)
        fa.result(20)
        assert fb.result(20) == 1  # still limited while B's block is open
    assert blas["threads"] == 3


def test_concurrent_recommend_leaves_blas_threads_as_they_were(ratings, monkeypatch):
    from threadpoolctl import threadpool_limits

    from mfrec.kernels import topn_numpy

    if not _blas_threads():
        pytest.skip("no BLAS library loaded")
    monkeypatch.setattr(topn_numpy, "MAX_CELLS", 0)  # every call takes the threaded kernel path
    model = mfrec.ALS(n_factors=8, n_epochs=2, random_state=0, num_threads=2).fit(ratings)
    users = model.user_vocab_.ids
    want = model.recommend(users, n=5)[0]
    with threadpool_limits(limits=3, user_api="blas"):
        before = _blas_threads()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: model.recommend(users, n=5)[0], range(32)))
        assert all(np.array_equal(r, want) for r in results)
        assert _blas_threads() == before


# ---------------------------------------------------------------------- bounded n and k
def test_huge_n_is_capped_at_the_catalogue():
    X = np.array([[5.0, 0.0], [0.0, 3.0], [4.0, 1.0]])
    model = mfrec.ALS(n_factors=1, n_epochs=2, random_state=0).fit(X)
    ids, scores = model.recommend([0, 1], n=10**8, exclude_seen=False)
    assert ids.shape == scores.shape == (2, 2) and np.isfinite(scores).all()
    ids, scores = model.recommend([0], n=10**8)  # one of two items seen: one row of padding
    assert ids.shape == (1, 2) and ids[0, 1] == -1 and np.isneginf(scores[0, 1])
    assert model.recommend([0], n=10**8, items=[1])[0].shape == (1, 1)
    assert model.similar_items([0], n=10**8)[0].shape == (1, 1)
    assert model.similar_users([0], n=10**8)[0].shape == (1, 2)


def test_huge_k_allocates_only_the_catalogue_in_evaluate_ranking():
    from mfrec.evaluation.ranking import evaluate_ranking

    X = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    model = mfrec.ALS(n_factors=1, n_epochs=2, random_state=0).fit(X)
    test = ([0, 1], [1, 2], [1.0, 1.0])
    names = ["recall", "precision", "ndcg", "map"]
    huge = evaluate_ranking(model, test, k=10**9, metrics=names)
    # every unseen item is in a ranking of the whole (3-item) catalogue; positions past it are
    # misses, so only precision (hits / k) differs from k=3
    full = evaluate_ranking(model, test, k=3, metrics=names)
    assert huge["recall@1000000000"] == full["recall@3"] == 1.0
    assert huge["precision@1000000000"] == pytest.approx(1e-9)
    assert huge["ndcg@1000000000"] == full["ndcg@3"] and huge["map@1000000000"] == full["map@3"]


# ---------------------------------------------------------------------- fold-in and predict
def _fitted_models(ratings):
    kw = dict(random_state=0)
    return [
        mfrec.SVD(n_factors=3),
        mfrec.NMF(n_factors=3, n_epochs=20, **kw),
        mfrec.GradientDescent(n_factors=3, n_epochs=20, **kw),
        mfrec.Baseline(),
        mfrec.BiasedMF(n_factors=3, n_epochs=5, num_threads=1, **kw),
        mfrec.SVDpp(n_factors=3, n_epochs=3, num_threads=1, **kw),
        mfrec.ALS(n_factors=3, n_epochs=3, num_threads=1, **kw),
        mfrec.BayesianMF(n_factors=3, n_epochs=6, burn_in=2, num_threads=1, **kw),
        mfrec.ImplicitALS(n_factors=3, n_epochs=3, num_threads=1, **kw),
        mfrec.BPR(n_factors=3, n_epochs=5, num_threads=1, **kw),
    ]


@pytest.fixture(scope="module")
def fitted(ratings):
    return [m.fit(ratings) for m in _fitted_models(ratings)]


def test_fold_in_of_nothing_is_the_bias_only_fallback(fitted):
    # formerly a random vector for BiasedMF and SVDpp
    for model in fitted:
        name = type(model).__name__
        folded = model.fold_in({})
        assert isinstance(folded, FoldedUsers)
        assert folded.factors.shape == (1, model.item_factors_.shape[1]), name
        assert not folded.factors.any() and not np.asarray(folded.bias).any(), name
        items = model.item_vocab_.ids[:7]
        want = model.predict([-12345] * 7, items)  # an unknown user: the same fallback
        np.testing.assert_allclose(model.predict(folded, items), want, rtol=1e-6, err_msg=name)


def test_predict_on_folded_users_matches_recommend(fitted):
    # formerly a NumPy error; the scores are mu + b_u + b_i + p_u . q_i, as for known users
    for model in fitted:
        name = type(model).__name__
        items = model.item_vocab_.ids
        values = [5.0, 1.0, 4.0, 2.0] if not isinstance(model, (mfrec.BPR, mfrec.ImplicitALS)) \
            else [1.0, 1.0, 1.0, 1.0]
        one = model.fold_in(dict(zip(items[[0, 3, 8, 11]].tolist(), values)))
        ids, scores = model.recommend(one, n=5)
        np.testing.assert_allclose(model.predict(one, ids[0], clip=False), scores[0],
                                   rtol=1e-5, atol=1e-5, err_msg=name)
        want = (model.global_mean_ + float(one.bias[0]) + model.item_bias_[:4]
                + model.item_factors_[:4].astype(np.float64) @ one.factors[0])
        np.testing.assert_allclose(model.predict(one, items[:4], clip=False), want, rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_predict_on_several_folded_users_pairs_position_by_position(fitted):
    model = fitted[6]  # ALS
    items = model.item_vocab_.ids
    batch = model.fold_in(([10, 10, 11, 11], items[[0, 1, 2, 3]], [5.0, 3.0, 1.0, 4.0]))
    got = model.predict(batch, items[[5, 6]], clip=False)
    singles = [model.predict(FoldedUsers(None, batch.factors[r:r + 1], batch.bias[r:r + 1],
                                         batch.seen[r]), items[[5 + r]], clip=False)[0]
               for r in range(2)]
    np.testing.assert_allclose(got, singles, rtol=1e-12)
    with pytest.raises(ValueError, match="2 folded-in users pair with as many items"):
        model.predict(batch, items[:3])
    # unknown items fall back to mean + the folded user's bias, as for known users
    np.testing.assert_allclose(model.predict(batch, [10**6, 10**6 + 1], clip=False),
                               model.global_mean_ + batch.bias.astype(np.float64), rtol=1e-6)


def test_cli_exit_code_on_divergence(tmp_path, capsys):
    # the CLI reports a diverged fit as a runtime error (exit 1) with the message, no traceback
    from mfrec.cli import main

    data = tmp_path / "r.tsv"
    rng = np.random.default_rng(0)
    rows = [f"{u}\t{i}\t1" for u in range(60) for i in rng.choice(40, 8, replace=False)]
    data.write_text("\n".join(rows) + "\n")
    rc = main(["fit", str(data), "-m", "bpr", "--learning-rate", "100", "--n-epochs", "3",
               "--threads", "1", "-o", str(tmp_path / "m.mfrec"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "BPR training diverged" in err and "learning_rate (now 100" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m.mfrec").exists()
