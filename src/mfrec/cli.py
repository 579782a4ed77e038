"""The shell face of mfrec: parses arguments, calls the library, prints."""
from __future__ import annotations

import argparse
import sys

from ._version import __version__


def build_parser():
    parser = argparse.ArgumentParser(prog="mfrec", description="Matrix-factorization recommenders")
    parser.add_argument("--version", action="version", version=f"mfrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="factorize the notebook's 4x5 matrix three ways and recommend")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        from .demo import run_demo
        run_demo(sys.stdout)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
