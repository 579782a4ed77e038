"""The shell face of mfrec: parses arguments, calls the library, prints.

Commands: ``fit``, ``evaluate``, ``cv``, ``tune``, ``recommend``, ``similar``, ``info``,
``models``, ``demo``, ``serve``. Exit codes: 0 success, 1 runtime error (bad data, unreadable
file, ...), 2 usage error (unknown option, model or hyperparameter, bad value). User errors print
one ``mfrec: error: ...`` line, not a traceback (``--debug`` or ``MFREC_DEBUG=1`` shows it).

One module per command group (``fit``, ``evaluate`` with ``cv``, ``tune``, ``query`` with
``recommend`` and ``similar``, ``info`` with ``models`` and ``demo``, ``serve``); each has
``register(sub)``, which adds its subparsers with ``set_defaults(run=handler)`` (and
``takes_hyperparameters=True`` for commands that fit a model: they get ``run(args, hyper)``). A
new command is a new module named in ``COMMAND_MODULES``. Module tops import only the standard
library: ``mfrec --help`` builds every parser and must stay fast; NumPy, pandas and Numba are
imported inside the handlers.

Hyperparameters are options named after the model's parameters, dashes or underscores alike:
``mfrec fit u.data --model biased-mf --n-factors 50 --regularization 0.05 -o movies.mfrec``.
"""
from __future__ import annotations

import importlib
import os
import sys

from .._version import __version__
from ._common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, UsageError, _Parser
from ._params import _split_hyperparameters, add_model_help, takes_hyperparameters

__all__ = ["main", "build_parser", "UsageError", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE"]

#: the command-group modules, in the order their commands are listed by ``mfrec --help``
COMMAND_MODULES = ("fit", "evaluate", "tune", "query", "info", "serve")


def build_parser():
    """The ``mfrec`` argument parser with every command's subparser."""
    parser = _Parser(prog="mfrec", description="Matrix-factorization recommenders.",
                     epilog="Hyperparameters are given as options named after the model's "
                            "parameters, e.g. --n-factors 50 --regularization 0.05. "
                            "Run 'mfrec models' for the models, 'mfrec COMMAND -h' for a "
                            "command's options and 'mfrec fit -m NAME -h' for a model's "
                            "hyperparameters.")
    parser.add_argument("--version", action="version", version=f"mfrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.set_defaults(takes_hyperparameters=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None):
    """Run the command line; returns the exit code (0, 1 or 2) instead of exiting."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MFREC_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    parser = build_parser()
    try:
        command = next((a for a in argv if not a.startswith("-")), None)
        if command is not None and takes_hyperparameters(parser, command) and (
                "-h" in argv or "--help" in argv):
            add_model_help(parser, command, argv)
        argv, hyper = _split_hyperparameters(parser, argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.takes_hyperparameters:
            return args.run(args, hyper)
        return args.run(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        print(f"mfrec: usage error: {exc}", file=sys.stderr)
        if debug:
            raise
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `mfrec recommend ... | head`: stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("mfrec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every other failure is reported, not dumped
        if debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"mfrec: error: {msg or type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR
