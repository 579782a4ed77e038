"""Approximate top-N: faiss-cpu, hnswlib and usearch side by side on one model's item factors.

Each library gets the same item vectors: the item factors with the item bias appended (space
``ip``: the library's own inner-product search) or those lifted by the MIPS-to-L2 transform of
``mfrec.index`` (space ``l2``). Graph libraries build an HNSW graph with the same degree and
construction effort; ``faiss-ivf`` is a plain inverted file (4 * sqrt(n_items) lists, efforts
read as lists probed per 1024); ``itemindex`` is ``mfrec.index.ItemIndex`` itself (lifted lists,
inner-product scan, efforts read as ``n_probe``). All answer top-10 queries for the same sample
of users at several search efforts. Recall is measured against exact top-10 by
``model.recommend(exclude_seen=False)``; throughput against that exact path in the same run.

``--exclude-seen`` leaves each user's training items out everywhere: exact, ItemIndex (its own
way), and the libraries through the same recipe (ask for 10 plus the user's number of seen items,
rounded up to a power of two, with the search effort raised to at least that; drop the seen
ones), timed with that filtering.

usage: python benchmarks/bench_ann.py MODEL.mfrec [--users 5000] [--items N] [--exclude-seen]
           [--libraries faiss,hnswlib,usearch,faiss-ivf,itemindex] [--spaces ip,l2]
           [--efforts 32 128 512] [--out FILE.md]

``--items N`` bounds graph build times by indexing a random subset of N items (the exact anchor
then ranks the same subset, through ``model.recommend(items=...)``); the table says so.

The model used for the table: ImplicitALS(n_factors=64, n_epochs=5, regularization=10,
reg_exponent=0, alpha=1, random_state=0) fitted on synth 25M
(``python ../shared/bench/synth.py 25000000 1000000 200000 synth25m_200k.npz``: 845k users, 200k
items).
"""
import argparse
import datetime as dt
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

import mfrec  # noqa: E402
from common import command_line, machine_info  # noqa: E402
from mfrec.index import mips_lift  # noqa: E402

M, EF_CONSTRUCTION, K = 32, 200, 10


def recall(approx, exact):
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx, exact))
    return hits / exact.size


def faiss_backend(X, threads, metric):
    import faiss
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(X.shape[1], M, faiss.METRIC_L2 if metric == "l2"
                                else faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(X)

    def query(Q, k, ef):
        index.hnsw.efSearch = ef
        return index.search(Q, k)[1]
    return query


def hnswlib_backend(X, threads, metric):
    import hnswlib
    index = hnswlib.Index(space=metric, dim=X.shape[1])
    index.init_index(max_elements=X.shape[0], M=M, ef_construction=EF_CONSTRUCTION, random_seed=0)
    index.add_items(X, num_threads=threads)

    def query(Q, k, ef):
        index.set_ef(ef)
        return index.knn_query(Q, k=k, num_threads=threads)[0]
    return query


def usearch_backend(X, threads, metric):
    from usearch.index import Index
    index = Index(ndim=X.shape[1], metric="l2sq" if metric == "l2" else "ip", dtype="f32",
                  connectivity=M, expansion_add=EF_CONSTRUCTION)
    index.add(np.arange(X.shape[0]), X, threads=threads)

    def query(Q, k, ef):
        index.expansion_search = ef
        return index.search(Q, k, threads=threads).keys
    return query


def faiss_ivf_backend(X, threads, metric):
    import faiss
    faiss.omp_set_num_threads(threads)
    nlist = int(4 * np.sqrt(X.shape[0]))
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    quantizer = faiss.IndexFlatL2(X.shape[1]) if metric == "l2" else faiss.IndexFlatIP(X.shape[1])
    index = faiss.IndexIVFFlat(quantizer, X.shape[1], nlist, mt)
    index.cp.seed = 0
    index.train(X)
    index.add(X)

    def query(Q, k, ef):
        index.nprobe = max(1, nlist * ef // 1024)  # ef read as probes per 1024 lists
        return index.search(Q, k)[1]
    return query


def itemindex_backend(model, users, threads, exclude_seen):
    """mfrec's own ItemIndex: efforts are n_probe; queries are user indices."""
    from mfrec.index import ItemIndex
    index = ItemIndex(num_threads=threads).fit(model)

    def query(Q, k, ef):
        index.n_probe = ef
        return index._recommend_indices(users[:len(Q)], k, exclude_seen=exclude_seen)[0]
    return query


def unseen_query(query, model, users, subset):
    """A library's query made to leave out each user's seen items, as ItemIndex does without
    its seen-in-probed-lists count: ask for K plus the user's seen items (a power of two, one
    call per power), search effort at least that, drop the seen ones, keep K. Items are
    returned as indices of the whole catalogue."""
    from mfrec._ivf_select import select_unseen
    from mfrec.models.base import _csr_arrays
    indptr, indices = _csr_arrays(model.user_items_)
    n_index = model.n_items_ if subset is None else subset.size

    def run(Q, k, ef):
        u = users[:len(Q)]
        want = np.minimum(k + indptr[u + 1] - indptr[u], n_index)
        bucket = np.ceil(np.log2(np.maximum(want, 1))).astype(np.int64)
        out = np.full((len(Q), k), -1, dtype=np.int64)
        for b in np.unique(bucket):
            sel = np.flatnonzero(bucket == b)
            kb = int(min(n_index, 2 ** b))
            got = to_global(query(np.ascontiguousarray(Q[sel]), kb, max(ef, kb)), n_index,
                            subset)
            out[sel] = select_unseen(got, np.zeros(got.shape, np.float32), indptr, indices,
                                     u[sel], k, model.n_items_)[0]
        return out
    return run


def to_global(got, n_index, subset):
    """Library answers as int64 indices of the whole catalogue, -1 for padding."""
    got = np.asarray(got).astype(np.int64)  # usearch: uint64 keys
    got[(got < 0) | (got >= n_index)] = -1  # padding, whatever its form
    if subset is not None:
        got = np.where(got >= 0, subset[np.maximum(got, 0)], -1)
    return got


BACKENDS = {"faiss-ivf": faiss_ivf_backend, "faiss": faiss_backend, "hnswlib": hnswlib_backend,
            "usearch": usearch_backend}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, help="index only a random subset of this many items")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--libraries", default="faiss,hnswlib,usearch")
    ap.add_argument("--spaces", default="ip,l2")
    ap.add_argument("--efforts", type=int, nargs="+", default=[32, 128, 512],
                    help="efSearch of the graphs; for faiss-ivf, lists probed per 1024; for "
                         "itemindex, n_probe")
    ap.add_argument("--exclude-seen", action="store_true",
                    help="leave each user's training items out (exact and every library)")
    ap.add_argument("--out")
    args = ap.parse_args()
    seen = args.exclude_seen
    model = mfrec.load(args.model)
    rng = np.random.default_rng(0)
    users = rng.choice(model.n_users_, size=min(args.users, model.n_users_), replace=False)
    raw = model.user_vocab_.to_ids(users)
    subset = None
    if args.items is not None and args.items < model.n_items_:
        subset = np.sort(rng.choice(model.n_items_, size=args.items, replace=False))
    cand = None if subset is None else model.item_vocab_.to_ids(subset)
    model.recommend(raw[:2000], n=K, exclude_seen=seen, items=cand)  # compile/warm up
    t = time.perf_counter()
    exact_ids, _ = model.recommend(raw, n=K, exclude_seen=seen, items=cand)
    t_exact = time.perf_counter() - t
    exact = model.item_vocab_.lookup(exact_ids.ravel()).reshape(exact_ids.shape)
    Qf = model.item_factors_ if subset is None else model.item_factors_[subset]
    bf = model.item_bias_ if subset is None else model.item_bias_[subset]
    X, lift_query = mips_lift(Qf, bf)
    Q = lift_query(model.user_factors_[users])
    # "ip": the libraries' own inner-product search over [q_i, b_i] and [p_u, 1]; "l2": the
    # lifted vectors in L2 (the last coordinate is what the lift adds)
    spaces = {"l2": (X, Q), "ip": (np.ascontiguousarray(X[:, :-1]),
                                   np.ascontiguousarray(Q[:, :-1]))}
    n_items = X.shape[0]
    head = [f"Produced by `{command_line()}` on "
            f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
            f"Machine: {machine_info()}.", "",
            f"exact (mfrec.recommend, exclude_seen={seen}): {len(users) / t_exact:,.0f} users/s "
            f"over {n_items:,} items"
            + (f" (a random subset of the {model.n_items_:,})" if subset is not None else "")
            + f", k={model.item_factors_.shape[1]}, {args.threads} threads; {len(users):,} users;"
            f" graphs M={M}, efConstruction={EF_CONSTRUCTION}", ""]
    rows = ["| library | space | build s | effort | recall@10 | users/s | x exact |",
            "|---|---|---|---|---|---|---|"]
    print("\n".join(head + rows), flush=True)
    for name in args.libraries.split(","):
        for metric in (["l2"] if name == "itemindex" else args.spaces.split(",")):
            Xs, Qs = spaces[metric]
            t = time.perf_counter()
            if name == "itemindex":
                if subset is not None:
                    raise SystemExit("itemindex indexes the whole catalogue: drop --items")
                query = itemindex_backend(model, users, args.threads, seen)
            else:
                query = BACKENDS[name](Xs, args.threads, metric)
                if seen:
                    query = unseen_query(query, model, users, subset)
            t_build = time.perf_counter() - t
            for ef in args.efforts:
                query(Qs[:100], K, ef)  # warm up
                t = time.perf_counter()
                got = query(Qs, K, ef)
                dt_q = time.perf_counter() - t
                if name != "itemindex" and not seen:
                    got = to_global(got, n_items, subset)
                rows.append(f"| {name} | {metric} | {t_build:.1f} | {ef} | "
                            f"{recall(got, exact):.4f} | {len(users) / dt_q:,.0f} | "
                            f"{t_exact / dt_q:.1f} |")
                print(rows[-1], flush=True)
            del query
    text = "\n".join(head + rows)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# Approximate top-10: ANN libraries side by side\n\n{text}\n")


if __name__ == "__main__":
    main()
