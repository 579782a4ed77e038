"""Model hyperparameters as command-line options: ``--n-factors 50`` for ``n_factors=50``.

The commands that fit a model (``fit``, ``cv``, ``tune``) accept, besides their own options, any
``--name value`` pair; those are pulled out of the command line before argparse sees it, then
checked against the model's parameters. ``-m NAME --help`` lists them, read from the model's
numpydoc docstring.
"""
from __future__ import annotations

import argparse
import re

from ._common import UsageError, _parse_value


def _subparser(parser, command):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices.get(command)


def takes_hyperparameters(parser, command):
    """Whether ``command`` accepts model hyperparameters as options."""
    p = _subparser(parser, command)
    return p is not None and bool(p.get_default("takes_hyperparameters"))


def _option_table(parser, command):
    """{option string: number of values} for a subcommand."""
    out = {}
    for action in _subparser(parser, command)._actions:
        for s in action.option_strings:
            out[s] = (action.nargs if action.nargs is not None else 1, action.metavar)
    return out


def _split_hyperparameters(parser, argv):
    """Pull ``--name value`` options that the command does not know out of ``argv``."""
    cmd_at = next((k for k, a in enumerate(argv) if not a.startswith("-")), None)
    if cmd_at is None or not takes_hyperparameters(parser, argv[cmd_at]):
        return argv, {}
    known = _option_table(parser, argv[cmd_at])
    keep, hyper = list(argv[:cmd_at + 1]), {}
    k = cmd_at + 1
    while k < len(argv):
        tok = argv[k]
        name = tok.split("=", 1)[0]
        if tok == "--":
            keep.extend(argv[k:])
            break
        if name in known:
            keep.append(tok)
            n, metavar = known[name]
            k += 1
            if "=" in tok or n == 0:
                continue
            if n in ("+", "*"):
                # each value is passed as --opt=VALUE so that argparse cannot also swallow a
                # positional argument that follows (mfrec tune --grid a=1,2 b=3 DATA); values of
                # a NAME=VALUES option end at the first token without "="
                keep.pop()
                pairs = "=" in str(metavar)
                start = k
                while k < len(argv) and not argv[k].startswith("-") and (
                        not pairs or "=" in argv[k]):
                    keep.append(f"{tok}={argv[k]}")
                    k += 1
                if k == start and pairs:
                    got = f", got {argv[k]!r}" if k < len(argv) else ""
                    raise UsageError(f"{tok} takes {metavar} entries{got}")
                if k == start:
                    keep.append(tok)  # no values: argparse reports it
            else:
                for _ in range(n if isinstance(n, int) else 1):
                    if k < len(argv):
                        keep.append(argv[k])
                        k += 1
            continue
        if tok.startswith("--") and len(tok) > 2:
            key = name[2:].replace("-", "_")
            if "=" in tok:
                value = tok.split("=", 1)[1]
                k += 1
            elif k + 1 < len(argv) and not argv[k + 1].startswith("--"):
                value = argv[k + 1]
                k += 2
            else:
                value, k = "true", k + 1
            if key in hyper:
                raise UsageError(f"hyperparameter --{key.replace('_', '-')} given twice")
            hyper[key] = value
            continue
        keep.append(tok)
        k += 1
    return keep, hyper


def _make_model(args, hyper, verbose, *, check=True):
    import inspect

    from ..models import get_model_class, model_name
    try:
        name = model_name(args.model)
        cls = get_model_class(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    valid = cls._param_names()
    params = {}
    for key, text in hyper.items():
        if key not in valid:
            opts = ", ".join(f"--{v.replace('_', '-')}" for v in valid)
            raise UsageError(f"--{key.replace('_', '-')} is not an option of this command nor a "
                             f"hyperparameter of {cls.__name__} (its hyperparameters: {opts})")
        params[key] = _parse_value(text)
    if args.seed is not None and "random_state" in valid:
        params.setdefault("random_state", args.seed)
    if args.threads is not None and "num_threads" in valid:
        params.setdefault("num_threads", args.threads)
    if verbose and "verbose" in valid and "verbose" not in params:
        default = inspect.signature(cls.__init__).parameters["verbose"].default
        if isinstance(default, bool):  # a progress bar on stderr
            params["verbose"] = True
        elif isinstance(default, int) and not getattr(args, "json", False):
            # models that print a loss line every `verbose` epochs: about ten lines
            epochs = params.get("n_epochs", inspect.signature(cls.__init__).parameters.get(
                "n_epochs", inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY)).default)
            if epochs == "auto" and isinstance(getattr(cls, "_epochs", None), property):
                epochs = cls(**params)._epochs  # e.g. NMF: its count for the chosen `missing`
            if isinstance(epochs, int) and not isinstance(epochs, bool):
                params["verbose"] = max(1, epochs // 10)
    model = cls(**params)
    if check:
        try:
            model._validate_params()
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
    return name, model



# ---------------------------------------------------------------------- -m NAME --help
def _docstring_parameters(cls):
    """{name: (type text, first sentence of the description)} from a numpydoc docstring."""
    import inspect

    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Parameters\n-+\n(.*?)(?:^\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    out = {}
    if not m:
        return out
    name, kind, lines = None, "", []
    for line in m.group(1).splitlines() + [""]:
        head = re.match(r"^(\w+(?:\s*,\s*\w+)*)\s*(?::\s*(.*))?$", line)
        if head and not line.startswith(" "):
            if name:
                for n in name:
                    out[n] = (kind, _first_sentence(" ".join(lines)))
            name = [n.strip() for n in head.group(1).split(",")]
            kind, lines = head.group(2) or "", []
        elif line.strip() and name:
            lines.append(line.strip())
    if name:
        for n in name:
            out[n] = (kind, _first_sentence(" ".join(lines)))
    return out


#: descriptions for parameters that a model's docstring lists without one
_COMMON_PARAMETERS = {
    "n_factors": "Length of the user and item factor vectors.",
    "n_epochs": "Passes over the training data.",
    "learning_rate": "Step size of the gradient updates.",
    "regularization": "L2 penalty on the factors.",
    "bias_regularization": "L2 penalty on the biases.",
    "random_state": "Seed of the random initialisation and sampling.",
    "num_threads": "Threads for training; 0 uses every core.",
    "verbose": "Show progress while fitting.",
}


def _first_sentence(text):
    m = re.match(r"(.+?\.)(\s|$)", text)
    return (m.group(1) if m else text).replace("``", "")


def add_model_help(parser, command, argv):
    """For ``COMMAND -m NAME --help``: list NAME's hyperparameters in COMMAND's help.

    Each one becomes a documented option (``--n-factors N``) with its default and the first
    sentence of its description; an unknown NAME is a usage error listing the models.
    """
    p = _subparser(parser, command)
    name = None
    for k, tok in enumerate(argv):
        if tok in ("-m", "--model") and k + 1 < len(argv):
            name = argv[k + 1]
        elif tok.startswith("--model="):
            name = tok.split("=", 1)[1]
        elif tok.startswith("-m") and len(tok) > 2 and not tok.startswith("--"):
            name = tok[2:]
    if name is None:
        p.epilog = ("Give -m NAME with --help to list that model's hyperparameters; "
                    "'mfrec models' lists the models.")
        return
    import inspect

    from ..models import get_model_class, model_name
    try:
        cls = get_model_class(model_name(name))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    docs = _docstring_parameters(cls)
    own = {s for a in p._actions for s in a.option_strings}
    g = p.add_argument_group(f"hyperparameters of {cls.__name__} (--name value)")
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        opt = "--" + param.name.replace("_", "-")
        if opt in own:
            continue
        kind, text = docs.get(param.name, ("", ""))
        text = text or _COMMON_PARAMETERS.get(param.name, "")
        kind = re.sub(r",?\s*default\s*=.*$", "", kind).strip()
        default = param.default if param.default is not param.empty else None
        text = f"{text} " if text else ""
        g.add_argument(opt, metavar=_metavar(kind), dest=f"_help_{param.name}",
                       help=f"{text}({kind + ', ' if kind else ''}default: {default!r})"
                       .replace("%", "%%"))


def _metavar(kind):
    first = kind.split(",")[0].split(" or ")[0].strip().lower()
    return {"int": "N", "float": "X", "bool": "BOOL", "str": "TEXT"}.get(first, "VALUE")
