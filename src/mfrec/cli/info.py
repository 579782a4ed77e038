"""``mfrec info`` (describe a saved model), ``mfrec models`` and ``mfrec demo``."""
from __future__ import annotations

import os
import sys

from ._common import EXIT_OK, _fmt, _load_model, _output_options, _print_json, _table


def register(sub):
    p = sub.add_parser("info", help="describe a saved model", allow_abbrev=False)
    p.set_defaults(run=cmd_info)
    p.add_argument("model_path", metavar="MODEL")
    _output_options(p)

    p = sub.add_parser("models", help="list the models", allow_abbrev=False)
    p.set_defaults(run=cmd_models)
    _output_options(p)
    p = sub.add_parser("demo", help="factorize the notebook's 4x5 matrix three ways and recommend")
    p.set_defaults(run=cmd_demo)


def cmd_info(args):
    from ..persist import read_header
    header = read_header(args.model_path)
    model = _load_model(args.model_path)
    loss = getattr(model, "loss_history_", None)
    info = {"class": header["class"], "path": str(args.model_path),
            "file_size": os.path.getsize(args.model_path),
            "mfrec_version": header.get("mfrec_version"),
            "format_version": header.get("format_version"), "created": header.get("created"),
            "n_users": int(model.user_factors_.shape[0]),
            "n_items": int(model.item_factors_.shape[0]),
            "n_factors": int(model.item_factors_.shape[1]),
            "n_ratings": int(model.user_items_.nnz) if getattr(model, "user_items_", None)
            is not None else None,
            "rating_range": list(model.rating_range_) if hasattr(model, "rating_range_")
            else None,
            "global_mean": float(model.global_mean_),
            "epochs": len(loss) if loss else None,
            "final_loss": float(loss[-1]) if loss else None,
            "params": model.get_params(), "notes": header.get("notes", [])}
    if args.json:
        _print_json(info)
        return EXIT_OK
    print(f"{info['class']} model  ({info['path']}, {info['file_size'] / 1e6:.2f} MB)")
    lines = [("users", info["n_users"]), ("items", info["n_items"]),
             ("factors", info["n_factors"]), ("training ratings", info["n_ratings"]),
             ("rating range", info["rating_range"]), ("global mean", _fmt(info["global_mean"])),
             ("epochs run", info["epochs"]),
             ("final loss", _fmt(info["final_loss"]) if loss else None),
             ("saved by", f"mfrec {info['mfrec_version']} (format {info['format_version']}) "
                          f"at {info['created']}")]
    for k, v in lines:
        if v is not None:
            print(f"  {k + ':':<18}{v}")
    print("  hyperparameters:")
    for k, v in info["params"].items():
        print(f"    {k} = {v!r}")
    for note in info["notes"]:
        print(f"  note: {note}")
    return EXIT_OK


def cmd_models(args):
    from ..models import MODELS, available_models
    have = set(available_models())
    rows = [(name, cls, kind, "yes" if name in have else "no", desc)
            for name, (cls, kind, desc) in MODELS.items()]
    if args.json:
        _print_json([dict(zip(["name", "class", "feedback", "available", "description"], r))
                     for r in rows])
        return EXIT_OK
    print(_table(rows, ["name", "class", "feedback", "available", "description"]))
    return EXIT_OK



def cmd_demo(args):
    from ..demo import run_demo
    run_demo(sys.stdout)
    return EXIT_OK
