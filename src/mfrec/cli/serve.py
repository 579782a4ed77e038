"""``mfrec serve``: a saved model over HTTP, with a page to explore it (the ``serve`` extra)."""
from __future__ import annotations

import os

from ._common import EXIT_OK, UsageError


def register(sub):
    p = sub.add_parser(
        "serve", help="serve a saved model over HTTP, with a page to explore it",
        allow_abbrev=False,
        description="Serve a saved model: a JSON API (schema at /openapi.json) and the explorer "
                    "page at /. SIGHUP reloads the model file; SIGINT or SIGTERM stop. One JSON "
                    "line per request on stderr. Needs pip install 'mfrec[serve]'.")
    p.set_defaults(run=cmd_serve)
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                                                       "127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--labels", metavar="FILE", help="item names: MovieLens u.item or any CSV of "
                                                    "item id, name")
    p.add_argument("--token", help="bearer token every endpoint but /api/health requires "
                                   "(default: $MFREC_TOKEN; the variable keeps it out of the "
                                   "process list)")
    p.add_argument("--no-access-log", action="store_true", help="no line per request")


def cmd_serve(args):
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.token is not None and not args.token.strip():
        raise UsageError("--token must not be empty (leave it out to serve without a token)")
    token = args.token if args.token is not None else os.environ.get("MFREC_TOKEN") or None
    from ..serve import run
    run(args.model_path, host=args.host, port=args.port, labels=args.labels, token=token,
        access_log=not args.no_access_log)
    return EXIT_OK
