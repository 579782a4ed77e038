"""``mfrec recommend`` and ``mfrec similar``: answers from a saved model."""
from __future__ import annotations

import sys

from ._common import (EXIT_OK, UsageError, _check_outputs, _coerce_ids, _load_model, _note,
                      _output_options, _progress, _print_json, _read_labels, _table)


def register(sub):
    p = sub.add_parser("recommend", help="top-N items for users of a saved model",
                       allow_abbrev=False)
    p.set_defaults(run=cmd_recommend)
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("-u", "--user", action="append", metavar="ID", help="user id (repeatable)")
    p.add_argument("--users", metavar="FILE", help="file of user ids, one per line (or the "
                                                   "first column of a CSV); writes CSV")
    p.add_argument("--all-users", action="store_true",
                   help="every user of the model, streamed in chunks to -o FILE.parquet "
                        "(columns user, rank, item, score)")
    p.add_argument("--index", metavar="FILE", help="with --all-users: an approximate index "
                   "saved by mfrec.index.ItemIndex (default: exact scoring)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="N",
                   help="with --all-users: users scored per chunk (default 65536)")
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="with --all-users: score here (default) or in Spark through "
                        "mfrec.spark (the spark extra and Java; -o is then a Parquet folder, "
                        "any path Spark writes)")
    p.add_argument("--spark-master", metavar="URL",
                   help="with --engine spark: local[2], spark://host:7077, yarn, ... "
                        "(default local[*])")
    p.add_argument("-n", type=int, default=10, help="items per user (default: 10)")
    p.add_argument("--include-seen", action="store_true", help="also recommend items the user "
                                                               "rated in training")
    p.add_argument("-o", "--output", metavar="FILE.csv", help="write CSV here (default stdout)")
    p.add_argument("--labels", metavar="FILE", help="item names (id, name), e.g. ml-100k/u.item")
    _output_options(p)

    p = sub.add_parser("similar", help="items most similar to an item", allow_abbrev=False)
    p.set_defaults(run=cmd_similar)
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("-i", "--item", action="append", required=True, metavar="ID",
                   help="item id (repeatable)")
    p.add_argument("-n", type=int, default=10, help="similar items per item (default: 10)")
    p.add_argument("--labels", metavar="FILE", help="item names (id, name)")
    _output_options(p)


def _read_user_file(path):
    """User ids from a file: one per line, or the first field of a CSV/TSV line."""
    import re
    ids = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            field = re.split(r"[,\t;|]|\s+", line.strip(), maxsplit=1)[0].strip().strip('"')
            if field:
                ids.append(field)
    if ids and ids[0].lower() in ("user", "user_id", "userid", "users", "id"):
        ids = ids[1:]
    if not ids:
        raise ValueError(f"no user ids in {str(path)!r}")
    return ids


def _ranked_rows(queries, ids, scores, query_key, score_key, labels):
    """One record per (query, rank) of a top-n answer, stopping at the first non-finite score;
    a "name" from ``labels`` (when given) for each item."""
    import numpy as np

    rows = []
    for q, row_ids, row_scores in zip(queries, ids, scores):
        for rank, (item, score) in enumerate(zip(row_ids, row_scores), 1):
            if not np.isfinite(score):
                break
            rec = {query_key: q, "rank": rank, "item": item, score_key: float(score)}
            if labels is not None:
                rec["name"] = labels.get(item, "")
            rows.append(rec)
    return rows


def _ranked_table(rows, score_key, labels):
    """Text table of one query's records from :func:`_ranked_rows`."""
    cols = ["rank", "item", score_key] + (["name"] if labels is not None else [])
    return _table([[r[c] if c != score_key else f"{r[c]:.4f}" for c in cols] for r in rows],
                  cols, [">", ">", ">", "<"][:len(cols)])


def _recommend_all(args):
    """``--all-users``: stream every user's top-n to Parquet with bounded memory."""
    if args.user or args.users:
        raise UsageError("--all-users takes no --user or --users")
    if not args.output or not str(args.output).endswith(".parquet"):
        raise UsageError("--all-users writes Parquet: give -o FILE.parquet")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.engine == "spark":
        if args.index:
            raise UsageError("--index is not available with --engine spark")
        if "://" not in str(args.output):
            _check_outputs(args.output)
        from ..spark import cli_recommend_all
        return cli_recommend_all(args)
    _check_outputs(saved=args.output)
    from ..bulk import recommend_all
    model = _load_model(args.model_path)
    index = None
    if args.index:
        from ..index import ItemIndex
        index = ItemIndex.load(args.index, model)
    count = recommend_all(model, args.output, n=args.n, exclude_seen=not args.include_seen,
                          chunk_size=args.chunk_size, index=index,
                          progress=_progress(args))
    print(f"Wrote top-{args.n} for {count} users to {args.output}")
    return EXIT_OK


def cmd_recommend(args):
    import numpy as np

    if args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    if args.engine != "local" and not args.all_users:
        raise UsageError(f"--engine {args.engine} needs --all-users")
    if args.all_users:
        return _recommend_all(args)
    if not args.user and not args.users:
        raise UsageError("give --user ID (repeatable), --users FILE or --all-users")
    if args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    _check_outputs(args.output)
    model = _load_model(args.model_path)
    texts = list(args.user or []) + (_read_user_file(args.users) if args.users else [])
    users = _coerce_ids(texts, model.user_vocab_)
    idx = model.user_vocab_.lookup(np.array(users, dtype=object) if users and isinstance(
        users[0], str) else users, unknown="mask")
    unknown = [t for t, i in zip(texts, idx) if i < 0]
    if unknown:
        msg = (f"{len(unknown)} unknown user id(s) (not in the model's training data): "
               f"{unknown[:5]}")
        if len(unknown) == len(users) or not args.users:
            raise KeyError(msg)
        _note(args, f"note: skipping {msg}")
    known = [u for u, i in zip(users, idx) if i >= 0]
    labels = _read_labels(args.labels, model.item_vocab_) if args.labels else None
    ids, scores = model.recommend(known, n=args.n, exclude_seen=not args.include_seen)
    rows = _ranked_rows(known, ids, scores, "user", "score", labels)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if args.users or args.output:
        import pandas as pd
        frame = pd.DataFrame(rows, columns=["user", "rank", "item", "score"]
                             + (["name"] if labels is not None else []))
        if args.output:
            frame.to_csv(args.output, index=False, float_format="%.6g")
            print(f"Wrote {len(frame)} recommendations for {len(known)} users to {args.output}")
        else:
            frame.to_csv(sys.stdout, index=False, float_format="%.6g")
        return EXIT_OK
    for u in known:
        mine = [r for r in rows if r["user"] == u]
        print(f"Top {len(mine)} for user {u}:")
        print(_ranked_table(mine, "score", labels))
    return EXIT_OK


def cmd_similar(args):
    if args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    model = _load_model(args.model_path)
    items = _coerce_ids(args.item, model.item_vocab_)
    labels = _read_labels(args.labels, model.item_vocab_) if args.labels else None
    ids, scores = model.similar_items(items, n=args.n)
    out = _ranked_rows(items, ids, scores, "query", "similarity", labels)
    if args.json:
        _print_json(out)
        return EXIT_OK
    for q in items:
        mine = [r for r in out if r["query"] == q]
        title = f" ({labels.get(q, '')})" if labels is not None else ""
        print(f"Items most similar to {q}{title}:")
        print(_ranked_table(mine, "similarity", labels))
    return EXIT_OK

