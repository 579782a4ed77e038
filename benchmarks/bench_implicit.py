"""Implicit feedback and top-N: mfrec (ImplicitALS, BPR, recommend) against implicit 0.7.3.

Two parts, written to ``benchmarks/results/implicit_quality.md`` and ``implicit_speed.md``:

1. Quality on MovieLens 100K u1: train interactions = u1.base (ratings as interaction
   strengths), relevant = every u1.test pair, seen items excluded, k = 64 factors; ALS 15
   iterations, BPR 100. Metrics for *both* libraries come from the same mfrec code
   (``evaluate_ranking``) applied to each one's factors; implicit's own ``ndcg_at_k`` is shown for
   its models as a cross-check. Popularity (items by training count) is the baseline.
2. Speed and memory on ``synth.py 5000000 200000 40000`` used as interaction counts, k = 64,
   ``--threads`` threads: seconds per ALS iteration and BPR epoch, top-10 for 10,000 users with
   seen items excluded (same random factors for both), and the peak RSS of each fitting process.
   Every measurement runs in a fresh process; libraries alternate and each figure is the best
   of ``--repeats`` runs. The achieved GFLOP/s of the CG solve is set against the machine's peak.

usage: flock /tmp/mfrec-bench.lock python benchmarks/bench_implicit.py [--quick] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

K = 64


# ---------------------------------------------------------------------- quality (ML-100K u1)
def _wrap(ratings, P, Q, item_bias=None):
    """An mfrec FactorModel holding another library's factors (so mfrec's metrics apply)."""
    from mfrec import FactorModel
    m = FactorModel()
    m._set_data_state(ratings)
    m._set_factor_state(np.asarray(P, np.float32), np.asarray(Q, np.float32), item_bias=item_bias)
    m.num_threads = 1
    return m


def quality(threads):
    import implicit
    import scipy.sparse as sp
    from implicit.evaluation import ndcg_at_k as implicit_ndcg
    from threadpoolctl import threadpool_limits

    import mfrec
    from mfrec.evaluation.ranking import evaluate_ranking

    train_df, test_df = common.load_ml100k_split("u1")
    train = mfrec.Ratings.from_frame(train_df)
    C = train.csr.astype(np.float32)
    # implicit's own metric needs the test pairs on the same indices
    known = test_df.user.isin(train.user_vocab.ids) & test_df.item.isin(train.item_vocab.ids)
    t = test_df[known]
    test_csr = sp.csr_matrix((np.ones(len(t), np.float32),
                              (train.user_vocab.lookup(t.user.to_numpy()),
                               train.item_vocab.lookup(t.item.to_numpy()))), shape=C.shape)
    rows = []

    def add(name, model, fit_s, own=None):
        res = evaluate_ranking(model, test_df, k=10)
        row = {"model": name, "fit s": fit_s}
        row.update(res)
        row["implicit's own ndcg@10"] = own
        rows.append(row)
        print(row, flush=True)

    # load (or compile) mfrec's kernels first, so "fit s" is fitting time for both libraries
    tiny = mfrec.Ratings.from_indices([0, 1, 1], [0, 1, 2], [1.0, 1.0, 2.0])
    for cls in (mfrec.ImplicitALS, mfrec.BPR):
        evaluate_ranking(cls(n_factors=2, n_epochs=1).fit(tiny), tiny, k=1, exclude_seen=False)
    with common.timer() as tm:
        m = mfrec.ImplicitALS(n_factors=K, n_epochs=15, random_state=0, num_threads=threads)
        m.fit(train)
    add("mfrec ImplicitALS (defaults)", m, tm.seconds)
    with threadpool_limits(1, "blas"):
        with common.timer() as tm:
            im = implicit.cpu.als.AlternatingLeastSquares(factors=K, iterations=15, random_state=0,
                                                          num_threads=threads)
            im.fit(C, show_progress=False)
        own = implicit_ndcg(im, C, test_csr, K=10, show_progress=False)
    add("implicit ALS (defaults)", _wrap(train, im.user_factors, im.item_factors), tm.seconds, own)

    with common.timer() as tm:
        m = mfrec.BPR(n_factors=K, n_epochs=100, random_state=0, num_threads=threads).fit(train)
    add("mfrec BPR (defaults)", m, tm.seconds)
    with common.timer() as tm:
        ib = implicit.cpu.bpr.BayesianPersonalizedRanking(factors=K, iterations=100,
                                                          random_state=0, num_threads=threads)
        ib.fit(C, show_progress=False)
    own = implicit_ndcg(ib, C, test_csr, K=10, show_progress=False)
    # implicit keeps the item bias as an extra factor (users carry a constant 1)
    add("implicit BPR (defaults)", _wrap(train, ib.user_factors, ib.item_factors), tm.seconds, own)

    pop = _wrap(train, np.zeros((train.n_users, 1)), np.zeros((train.n_items, 1)),
                item_bias=train.item_counts().astype(np.float32))
    add("popularity (training counts)", pop, 0.0)
    return rows


# ---------------------------------------------------------------------- speed (fresh processes)
def _cpu_seconds():
    """User + system CPU time of this process (all threads)."""
    import resource
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _vm_hwm_mb():
    """Peak RSS of this process's own address space (VmHWM), in MB.

    Read in the child rather than taken from ``getrusage``: Linux carries a parent's RSS high
    water mark into ``ru_maxrss`` across fork and exec, which puts a floor under every child's
    figure; VmHWM belongs to the new address space alone.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _load_synth_csr(size=()):
    import scipy.sparse as sp
    u, i, r = common.load_synth(*size)
    n_u, n_i = int(u.max()) + 1, int(i.max()) + 1
    return sp.csr_matrix((r, (u, i)), shape=(n_u, n_i), dtype=np.float32)


def child_fit(lib, algo, epochs, threads, size=()):
    """Fit on the synthetic set (``size``: synth.py's arguments, default the 5M set); returns
    seconds per iteration (and build seconds)."""
    if lib == "mfrec":
        import mfrec
        u, i, r = common.load_synth(*size)
        with common.timer() as tb:
            data = mfrec.Ratings.from_indices(u, i, r)
        del u, i, r
        cls = mfrec.ImplicitALS if algo == "als" else mfrec.BPR
        # compile (or load cached) kernels on a tiny problem first
        cls(n_factors=K, n_epochs=1, num_threads=threads, random_state=0).fit(
            mfrec.Ratings.from_indices([0, 1, 1], [0, 1, 2], [1.0, 1.0, 2.0]))
        model = cls(n_factors=K, n_epochs=epochs, num_threads=threads, random_state=0)
        c0 = _cpu_seconds()
        with common.timer() as t:
            model.fit(data)
        cpu = _cpu_seconds() - c0
    else:
        import implicit
        from threadpoolctl import threadpool_limits
        with common.timer() as tb:
            data = _load_synth_csr(size)
        with threadpool_limits(1, "blas"):
            if algo == "als":
                model = implicit.cpu.als.AlternatingLeastSquares(
                    factors=K, iterations=epochs, num_threads=threads, random_state=0,
                    calculate_training_loss=False)
            else:
                model = implicit.cpu.bpr.BayesianPersonalizedRanking(
                    factors=K, iterations=epochs, num_threads=threads, random_state=0)
            c0 = _cpu_seconds()
            with common.timer() as t:
                model.fit(data, show_progress=False)
            cpu = _cpu_seconds() - c0
    return {"per_iter": t.seconds / epochs, "cpu_per_iter": cpu / epochs, "build": tb.seconds,
            "hwm": _vm_hwm_mb()}


def child_baseline(lib, algo, threads):
    """Import the library and fit a 3-interaction problem: the fixed memory of a process."""
    import scipy.sparse as sp
    tiny = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 1.0, 2.0]], np.float32))
    if lib == "mfrec":
        import mfrec
        cls = mfrec.ImplicitALS if algo == "als" else mfrec.BPR
        cls(n_factors=K, n_epochs=1, num_threads=threads).fit(tiny)
    else:
        import implicit
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1, "blas"):
            cls = (implicit.cpu.als.AlternatingLeastSquares if algo == "als"
                   else implicit.cpu.bpr.BayesianPersonalizedRanking)
            cls(factors=K, iterations=1, num_threads=threads).fit(tiny, show_progress=False)
    return {"hwm": _vm_hwm_mb()}


def child_recommend(lib, threads, n_users=10_000, n=10):
    """Top-n with seen items excluded for random users, same random factors for both."""
    rng = np.random.default_rng(0)
    csr = _load_synth_csr() if lib == "implicit" else None
    if lib == "mfrec":
        import mfrec
        u, i, r = common.load_synth()
        data = mfrec.Ratings.from_indices(u, i, r)
        del u, i, r
        shape = data.shape
    else:
        shape = csr.shape
    P = rng.standard_normal((shape[0], K), dtype=np.float32) * np.float32(0.1)
    Q = rng.standard_normal((shape[1], K), dtype=np.float32) * np.float32(0.1)
    users = np.sort(rng.choice(shape[0], n_users, replace=False))
    if lib == "mfrec":
        model = mfrec.FactorModel()
        model._set_data_state(data)
        model._set_factor_state(P, Q)
        model.num_threads = threads
        model.recommend(users[:10], n=n)  # warm-up (kernel load)
        c0 = _cpu_seconds()
        with common.timer() as t:
            ids, _ = model.recommend(users, n=n)
        cpu = _cpu_seconds() - c0
        # the raw ids are the indices here
        return {"seconds": t.seconds, "cpu": cpu, "first": ids[:3].tolist(), "hwm": _vm_hwm_mb()}
    import implicit
    from threadpoolctl import threadpool_limits
    model = implicit.cpu.als.AlternatingLeastSquares(factors=K, num_threads=threads)
    model.user_factors, model.item_factors = P, Q
    # implicit's recommend multiplies with BLAS; give it the same threads
    with threadpool_limits(threads, "blas"):
        model.recommend(users[:10], csr[users[:10]], N=n)
        c0 = _cpu_seconds()
        with common.timer() as t:
            ids, _ = model.recommend(users, csr[users], N=n, filter_already_liked_items=True)
        cpu = _cpu_seconds() - c0
    return {"seconds": t.seconds, "cpu": cpu, "first": ids[:3].tolist(), "hwm": _vm_hwm_mb()}


def cg_flops(csr, k, cg_steps):
    """Flops of one ImplicitALS iteration (both half-steps, CG solver)."""
    nnz = csr.nnz
    total = 0.0
    for n_rows, n_other in ((csr.shape[0], csr.shape[1]), (csr.shape[1], csr.shape[0])):
        total += 2.0 * n_other * k * k                          # Gram matrix
        per_pass = 2.0 * k * k * n_rows + 4.0 * k * nnz         # YtY v and the rank-1 terms
        total += (cg_steps + 1) * per_pass + cg_steps * 10.0 * k * n_rows
    return total


def peak_gflops(threads):
    """Nominal fp32 peak: cores x 32 flops/cycle (two 256-bit FMA pipes) x clock."""
    mhz = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    mhz = float(line.split(":")[1])
                    break
    except OSError:
        pass
    return (threads * 32 * mhz / 1000.0, mhz) if mhz else (float("nan"), None)


def speed(threads, repeats, epochs):
    rows = []
    results = {}
    for rep in range(repeats):
        for what in (("als",), ("bpr",), ("rec",)):
            for lib in ("mfrec", "implicit"):
                if what[0] == "rec":
                    res, _ = common.peak_rss_mb(child_recommend, lib, threads)
                    peak = res["hwm"]
                    key = ("top-10 for 10,000 users, seen excluded (s)", lib)
                    val = res["seconds"]
                    results.setdefault(("top-10 for 10,000 users: CPU s (all threads)", lib),
                                       []).append(res["cpu"])
                else:
                    res, _ = common.peak_rss_mb(child_fit, lib, what[0], epochs, threads)
                    peak = res["hwm"]
                    key = (("ImplicitALS s/iteration" if what[0] == "als" else "BPR s/epoch"), lib)
                    val = res["per_iter"]
                    ckey = (("ImplicitALS CPU s/iteration (all threads)" if what[0] == "als"
                             else "BPR CPU s/epoch (all threads)"), lib)
                    results.setdefault(ckey, []).append(res["cpu_per_iter"])
                    mkey = ((f"peak RSS of {what[0].upper()} fit process (MB)"), lib)
                    results.setdefault(mkey, []).append(peak)
                results.setdefault(key, []).append(val)
                print(rep, key, round(val, 3), f"peak {peak:.0f} MB", flush=True)
    for algo in ("als", "bpr"):
        for lib in ("mfrec", "implicit"):
            res, _ = common.peak_rss_mb(child_baseline, lib, algo, threads)
            base = res["hwm"]
            fit = min(results[(f"peak RSS of {algo.upper()} fit process (MB)", lib)])
            name = f"working memory of {algo.upper()} fit: peak - fixed (MB)"
            results[(name, lib)] = [fit - base]
            results[(f"fixed memory: import + tiny {algo.upper()} fit (MB)", lib)] = [base]
            print(lib, algo, "fixed", round(base), flush=True)
    order = ["ImplicitALS s/iteration", "BPR s/epoch",
             "top-10 for 10,000 users, seen excluded (s)",
             "ImplicitALS CPU s/iteration (all threads)", "BPR CPU s/epoch (all threads)",
             "top-10 for 10,000 users: CPU s (all threads)",
             "peak RSS of ALS fit process (MB)", "peak RSS of BPR fit process (MB)",
             "fixed memory: import + tiny ALS fit (MB)", "fixed memory: import + tiny BPR fit (MB)",
             "working memory of ALS fit: peak - fixed (MB)",
             "working memory of BPR fit: peak - fixed (MB)"]
    for name in order:
        a = min(results[(name, "mfrec")])
        b = min(results[(name, "implicit")])
        rows.append({"measure": name, "mfrec": a, "implicit 0.7.3": b,
                     "mfrec / implicit": a / b if b else float("nan"),
                     "all runs mfrec": " ".join(f"{v:.3g}" for v in results[(name, "mfrec")]),
                     "all runs implicit": " ".join(f"{v:.3g}"
                                                   for v in results[(name, "implicit")])})
    return rows, (min(results[("ImplicitALS s/iteration", "mfrec")]),
                  min(results[("ImplicitALS CPU s/iteration (all threads)", "mfrec")]))


def memory_at_scale(threads, size):
    """Peak RSS of ALS and BPR fit processes (1 iteration) on a larger synthetic set."""
    rows = []
    for algo in ("als", "bpr"):
        peaks = {}
        for lib in ("mfrec", "implicit"):
            res, _ = common.peak_rss_mb(child_fit, lib, algo, 1, threads, tuple(size))
            base, _ = common.peak_rss_mb(child_baseline, lib, algo, threads)
            peaks[lib] = (res["hwm"], base["hwm"])
            print(lib, algo, peaks[lib], flush=True)
        (a, fa), (b, fb) = peaks["mfrec"], peaks["implicit"]
        name = "ImplicitALS" if algo == "als" else "BPR"
        rows.append({"measure": f"peak RSS of {name} fit process (MB)", "mfrec": a,
                     "implicit 0.7.3": b, "mfrec / implicit": a / b})
        rows.append({"measure": f"fixed memory: import + tiny {name} fit (MB)", "mfrec": fa,
                     "implicit 0.7.3": fb, "mfrec / implicit": fa / fb})
        rows.append({"measure": f"working memory of {name} fit: peak - fixed (MB)",
                     "mfrec": a - fa, "implicit 0.7.3": b - fb,
                     "mfrec / implicit": (a - fa) / (b - fb)})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="iterations timed per fit")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", default="implicit", help="results file prefix")
    ap.add_argument("--memory-at", type=int, nargs=3, metavar=("N", "USERS", "ITEMS"),
                    help="only measure peak memory of 1-iteration fits on synth.py N USERS ITEMS")
    a = ap.parse_args()
    cmd = common.command_line()
    if a.memory_at:
        n, nu, ni = a.memory_at
        m_rows = memory_at_scale(a.threads, a.memory_at)
        path = common.write_table(
            f"{a.out}_memory_{n // 1_000_000}m.md",
            f"Implicit feedback peak memory: mfrec vs implicit 0.7.3 (synth {n // 1_000_000}M)",
            m_rows, cmd, [
                f"Data: synth.py {n} {nu} {ni} (values used as interaction counts), k={K}, "
                f"{a.threads} threads, one iteration (ALS) or epoch (BPR) per fit. Each figure is "
                "a fresh process's VmHWM: imports, loading the arrays, building the library's "
                "input (mfrec Ratings / scipy CSR), fitting. The fixed memory is a process that "
                "only imports the library and fits a 3-interaction matrix; working memory is the "
                "peak minus it. No pandas in the measured processes."])
        print(f"wrote {path}")
        return
    notes = []
    s_rows = []
    if not a.skip_speed:
        s_rows, (als_s, als_cpu) = speed(a.threads, a.repeats, a.epochs)
        csr = _load_synth_csr()
        flops = cg_flops(csr, K, 3)
        peak, mhz = peak_gflops(a.threads)
        gf = flops / als_s / 1e9
        notes.append(
            f"Cost model (ImplicitALS, CG with 3 steps, k={K}, nnz={csr.nnz:,}, "
            f"{csr.shape[0]:,} x {csr.shape[1]:,}): {flops / 1e9:.1f} GFLOP per iteration "
            f"(Gram matrices, (steps+1) x (2k^2 per row + 4k per interaction) per side, vector "
            f"updates) in {als_s:.3f} s = {gf:.1f} GFLOP/s achieved, against a nominal fp32 peak "
            f"of {peak:.0f} GFLOP/s for {a.threads} cores ({a.threads} x 32 flops/cycle x "
            f"{mhz} MHz as /proc/cpuinfo reports) = {100 * gf / peak:.1f}% of peak. Per CPU "
            f"second actually received ({als_cpu:.3f} CPU s per iteration over all threads, "
            f"which discounts time lost to other work on the shared machine): "
            f"{flops / als_cpu / 1e9:.1f} GFLOP/s per core = "
            f"{100 * flops / als_cpu / 1e9 / (peak / a.threads):.1f}% of one core's peak. "
            f"Most flops are "
            f"short k=64 dot/axpy loops over vectors gathered by random reads, so memory latency "
            f"rather than the FMA units probably sets the pace (not measured separately).")
    speed_note = (
        "Speed: synth.py 5000000 200000 40000 (values used as interaction counts), k=64, "
        f"{a.threads} threads, BLAS held to 1 thread during fits. Per-iteration figures are fit "
        f"time / {a.epochs} iterations after a warm-up; each figure is the best of {a.repeats} "
        "fresh processes, libraries alternating; CPU seconds (user + system, all threads) are "
        "less sensitive than wall time to other work on the machine. Recommend: the same "
        "random factors for both "
        "libraries, 10,000 random users, seen items excluded; implicit's recommend may use "
        f"{a.threads} BLAS threads. Peak RSS is the whole fitting process (imports, loading the "
        "data, building the matrices, fitting), read as VmHWM inside each process. The fixed "
        "memory is that of a process that only imports the library and fits a 3-interaction "
        "matrix (for mfrec: numba's LLVM runtime and the loaded kernels); working memory is the "
        "peak minus it. No pandas in the measured processes. On a larger set, where the fixed "
        "cost weighs less, see implicit_memory_25m.md (`--memory-at 25000000 1000000 200000`).")
    if s_rows:
        path = common.write_table(f"{a.out}_speed.md", "Implicit feedback speed and memory: mfrec "
                                  "vs implicit 0.7.3 (synth 5M)", s_rows, cmd, notes + [speed_note])
        print(f"wrote {path}")
    if not a.skip_quality:
        q_rows = quality(a.threads)
        q_note = (
            "Quality: ML-100K u1.base as interactions (ratings as strengths), every u1.test pair "
            "relevant, training items excluded, users known to the model evaluated; k=64 "
            "factors, ALS 15 iterations, BPR 100 epochs, each library at its own defaults "
            "otherwise. All metric columns come from mfrec.evaluation.ranking.evaluate_ranking "
            "applied to each library's factors; the last column is implicit's own ndcg_at_k for "
            "its models. 'fit s' excludes mfrec's one-off kernel loading (done before timing).")
        path = common.write_table(f"{a.out}_quality.md", "Implicit feedback quality: mfrec vs "
                                  "implicit 0.7.3 (ML-100K u1)", q_rows, cmd, [q_note])
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
