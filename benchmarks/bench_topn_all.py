"""Top-10 for every user: exact streaming to Parquet against the machine's matmul peak, and the
approximate index (mfrec.index.ItemIndex) against exact, seen items excluded in both.

usage: python benchmarks/bench_topn_all.py MODEL.mfrec [--sample 20000] [--all-users]
                                           [--out results/topn_all.md]

1. The fp32 matrix-multiply peak: a plain NumPy (BLAS) product of a 4096 x k by k x 200,000
   matrix, best of 3, in the same process.
2. Exact: ``model.recommend`` for a sample of users (seen excluded); its arithmetic rate is
   counted as 2 * users * items * k flops.
3. Approximate: ``ItemIndex().fit(model)`` (build time), then the same sample: recall@10 against
   exact and the speed-up.
4. ``--all-users``: ``recommend_all`` for every user to Parquet, exact and through the index,
   with the peak resident memory of each (a fresh child process per run).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

K = 10

CHILD = r"""
import json, resource, sys, time
import mfrec
from mfrec.bulk import recommend_all
from mfrec.index import ItemIndex
model = mfrec.load(sys.argv[1])
index = ItemIndex().fit(model) if sys.argv[3] == "index" else None
t = time.perf_counter()
n = recommend_all(model, sys.argv[2], n=10, index=index)
dt = time.perf_counter() - t
print(json.dumps({"users": n, "seconds": dt,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def matmul_peak(k, n_items):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4096, k), dtype=np.float32)
    B = rng.standard_normal((k, n_items), dtype=np.float32)
    A @ B
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        A @ B
        best = min(best, time.perf_counter() - t)
    return 2 * 4096 * k * n_items / best / 1e9


def main():
    import mfrec
    from mfrec.index import ItemIndex

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--sample", type=int, default=20000)
    ap.add_argument("--all-users", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    model = mfrec.load(args.model)
    n_items, k = model.item_factors_.shape
    peak = matmul_peak(k, n_items)
    rng = np.random.default_rng(0)
    users = model.user_vocab_.to_ids(
        np.sort(rng.choice(model.n_users_, size=min(args.sample, model.n_users_), replace=False)))
    model.recommend(users[:100], n=K)
    t = time.perf_counter()
    exact, _ = model.recommend(users, n=K)
    t_exact = time.perf_counter() - t
    gflops = 2 * len(users) * n_items * k / t_exact / 1e9
    t = time.perf_counter()
    index = ItemIndex().fit(model)
    t_build = time.perf_counter() - t
    index.recommend(users[:100], n=K)
    t = time.perf_counter()
    approx, _ = index.recommend(users, n=K)
    t_approx = time.perf_counter() - t
    recall = np.mean([len(set(a) & set(e)) / K for a, e in zip(approx, exact)])
    lines = [
        f"model: {args.model} ({model.n_users_:,} users, {n_items:,} items, k={k}); "
        f"sample of {len(users):,} users, top-{K}, seen items excluded",
        "",
        "| measure | value |", "|---|---|",
        f"| NumPy fp32 matmul peak (4096 x {k} @ {k} x {n_items}) | {peak:.1f} GFLOP/s |",
        f"| exact `recommend`: users/s | {len(users) / t_exact:,.0f} |",
        f"| exact `recommend`: GFLOP/s (share of matmul peak) | {gflops:.1f} ({gflops / peak:.0%}) |",
        f"| `ItemIndex().fit(model)` build | {t_build:.1f} s |",
        f"| `ItemIndex` users/s | {len(users) / t_approx:,.0f} |",
        f"| `ItemIndex` speed-up over exact | {t_exact / t_approx:.1f}x |",
        f"| `ItemIndex` recall@10 against exact | {recall:.4f} |",
    ]
    print("\n".join(lines), flush=True)
    if args.all_users:
        work = os.path.join(os.path.dirname(__file__), "_work")
        os.makedirs(work, exist_ok=True)
        for mode in ("exact", "index"):
            out = os.path.join(work, f"recs_{mode}.parquet")
            res = json.loads(subprocess.run(
                [sys.executable, "-c", CHILD, args.model, out, mode], check=True,
                capture_output=True, text=True).stdout.strip().splitlines()[-1])
            lines.append(f"| `recommend_all` {mode}, all {res['users']:,} users to Parquet | "
                         f"{res['seconds']:.1f} s, peak RSS {res['peak_mb']:,.0f} MB |")
            print(lines[-1], flush=True)
            os.unlink(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Top-N for every user: exact and approximate\n\n"
                    f"`python benchmarks/bench_topn_all.py {args.model} --sample {args.sample}"
                    f"{' --all-users' if args.all_users else ''}`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
