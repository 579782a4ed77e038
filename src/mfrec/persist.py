"""Model files: one zip archive of ``.npy`` arrays plus a JSON header, never a pickle.

Layout (an ``.npz``-style zip, readable by ``numpy.load(path, allow_pickle=False)``):

- ``mfrec.json``: the header — format name and version, mfrec version, model class,
  hyperparameters, and for each fitted attribute how to rebuild it.
- ``<key>.npy``: one entry per array (factors, biases, vocabulary ids, sparse matrix parts).

Files are written atomically (a temporary file in the same folder, then a rename), so a crash
never leaves a half-written model under the final name. Loading checks the archive's checksums,
the format name and version and the class name against the mfrec models, and builds the model
from arrays and JSON only: it never executes code from the file.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._version import __version__
from .data import Vocabulary

__all__ = ["save_model", "load", "read_header", "ModelFileError", "FORMAT_NAME",
           "FORMAT_VERSION"]

FORMAT_NAME = "mfrec-model"
FORMAT_VERSION = 1
HEADER = "mfrec.json"
_ZIP_MAGIC = b"PK\x03\x04"


class ModelFileError(ValueError):
    """A file that is not a readable mfrec model: foreign, truncated, corrupted or too new."""


# ---------------------------------------------------------------------- JSON values
def _to_json(value, where):
    """Encode a value for the header; tuples and dicts are tagged so they come back as such."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, f"{where}[{k}]") for k, v in enumerate(value)]}
    if isinstance(value, list):
        return [_to_json(v, f"{where}[{k}]") for k, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where} is a dict with non-string keys; it cannot be saved")
        return {"__dict__": {k: _to_json(v, f"{where}[{k!r}]") for k, v in value.items()}}
    raise TypeError(f"{where} is a {type(value).__name__} ({value!r:.60}); model files hold only "
                    f"numbers, strings, booleans, None, lists, tuples and dicts of them")


def _from_json(value):
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        if set(value) == {"__dict__"}:
            return {k: _from_json(v) for k, v in value["__dict__"].items()}
        raise ModelFileError(f"unexpected object in the model header: {value!r:.80}")
    return value


# ---------------------------------------------------------------------- ids
def _encode_ids(ids, where):
    """Vocabulary ids as a pickle-free array and a tag saying how to restore them."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "biufUSM":
        return ids, "native"
    if ids.dtype.kind == "O":
        if all(isinstance(x, str) for x in ids):
            out = ids.astype(str)
            # numpy unicode arrays drop trailing NULs: only safe if nothing changes
            if not all(a == b for a, b in zip(out.tolist(), ids.tolist())):
                raise TypeError(f"{where}: some string ids end in NUL characters and cannot be "
                                f"saved exactly")
            return out, "object-str"
        if all(isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))
               for x in ids):
            return ids.astype(np.int64), "object-int"
        if all(isinstance(x, (float, np.floating)) for x in ids):
            return ids.astype(np.float64), "object-float"
        kinds = sorted({type(x).__name__ for x in ids})
        raise TypeError(f"{where} mixes id types {kinds}; a model file stores ids of one type "
                        f"(all int, all float or all str) so that they load back unchanged. "
                        f"Convert the ids to str before fitting.")
    raise TypeError(f"{where} has ids of dtype {ids.dtype}, which cannot be saved")


def _decode_ids(arr, tag):
    if tag == "native":
        return arr
    if tag == "object-str":
        return arr.astype(object)
    if tag in ("object-int", "object-float"):
        return np.array(arr.tolist(), dtype=object)
    raise ModelFileError(f"unknown id encoding {tag!r} in the model file")


# ---------------------------------------------------------------------- save
def _fitted_attributes(model):
    return {k: v for k, v in vars(model).items() if k.endswith("_") and not k.startswith("_")}


def save_model(model, path):
    """Write a fitted model to one file, atomically.

    Parameters
    ----------
    model : FactorModel
        A fitted model. Every public attribute ending in ``_`` is saved; hyperparameters must be
        numbers, strings, booleans, None or lists/tuples/dicts of them (a ``random_state`` that
        is a Generator is saved as None, noted in the header).
    path : str or Path
        Where to write; the name is used as given (``.mfrec`` is a good suffix).

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    TypeError
        An attribute or hyperparameter that cannot be stored without pickling, named.
    """
    from .models.base import NotFittedError

    if not hasattr(model, "user_factors_"):
        raise NotFittedError(f"this {type(model).__name__} is not fitted yet; fit it before "
                             f"saving")
    path = Path(path)
    notes = []
    params = {}
    for name, value in model.get_params().items():
        if name == "random_state" and isinstance(value, (np.random.Generator,
                                                         np.random.RandomState)):
            notes.append("random_state was a numpy random generator; saved as None")
            value = None
        try:
            params[name] = _to_json(value, f"hyperparameter {name}")
        except TypeError as exc:
            raise TypeError(f"cannot save {type(model).__name__}: {exc}") from None

    arrays = {}
    attrs = {}
    for name, value in _fitted_attributes(model).items():
        where = f"attribute {name}"
        key = f"attr.{name}"
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "O":
                raise TypeError(f"cannot save {type(model).__name__}: {where} is an object "
                                f"array; only numeric, bool and string arrays can be saved")
            arrays[key] = value
            attrs[name] = {"kind": "array", "key": key}
        elif isinstance(value, np.generic):
            arrays[key] = np.asarray(value)
            attrs[name] = {"kind": "scalar", "key": key}
        elif isinstance(value, Vocabulary):
            ids, tag = _encode_ids(value.ids, f"{where} (a Vocabulary)")
            arrays[key] = ids
            attrs[name] = {"kind": "vocabulary", "key": key, "name": value.name, "ids": tag}
        elif sp.issparse(value):
            fmt = value.format
            if fmt not in ("csr", "csc"):
                raise TypeError(f"cannot save {type(model).__name__}: {where} is a sparse "
                                f"{fmt} matrix; only csr and csc are saved")
            for part in ("data", "indices", "indptr"):
                arrays[f"{key}.{part}"] = getattr(value, part)
            attrs[name] = {"kind": "sparse", "key": key, "format": fmt,
                           "shape": list(value.shape),
                           "array_api": not isinstance(value, sp.spmatrix)}
        else:
            try:
                attrs[name] = {"kind": "json", "value": _to_json(value, where)}
            except TypeError as exc:
                raise TypeError(f"cannot save {type(model).__name__}: {exc}") from None

    private = {}
    if "_clip_predictions" in vars(model):  # set by fit on some models; part of predict
        private["_clip_predictions"] = bool(model._clip_predictions)
    header = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "mfrec_version": __version__,
        "class": type(model).__name__, "module": type(model).__module__,
        "params": params, "attributes": attrs, "private": private, "notes": notes,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(header, indent=1, allow_nan=True)

    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: folder {str(folder)!r} does "
                                f"not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(HEADER, text)
                for key, arr in arrays.items():
                    with zf.open(f"{key}.npy", "w", force_zip64=arr.nbytes > (1 << 30)) as f:
                        np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# ---------------------------------------------------------------------- load
def _open_archive(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model file: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder, not a model file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != _ZIP_MAGIC:
        raise ModelFileError(f"{str(path)!r} is not an mfrec model file (it is not a zip "
                             f"archive{'; it is empty' if not magic else ''})")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"{str(path)!r} is truncated or corrupted ({exc}); save the model "
                             f"again") from None
    return zf


def _read_header(zf, path):
    try:
        raw = zf.read(HEADER)
    except KeyError:
        raise ModelFileError(f"{str(path)!r} is a zip archive but not an mfrec model file (no "
                             f"{HEADER} header)") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ModelFileError(f"{str(path)!r} is truncated or corrupted ({exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{str(path)!r} has an unreadable header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{str(path)!r} is not an mfrec model file (format "
                             f"{header.get('format') if isinstance(header, dict) else None!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{str(path)!r} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by mfrec {header.get('mfrec_version', '?')} in model "
            f"format {version}; this mfrec {__version__} reads format {FORMAT_VERSION} and "
            f"older. Upgrade mfrec to load it.")
    return header


def read_header(path):
    """The JSON header of a model file (class, hyperparameters, versions, attributes), without
    loading the arrays. Raises :class:`ModelFileError` for a file that is not a model."""
    with _open_archive(path) as zf:
        return _read_header(zf, path)


def _resolve_class(name, path, classes):
    from .models import MODELS, get_model_class
    from .models.base import FactorModel

    extra = {}
    for cls in (classes or ()):
        if not (isinstance(cls, type) and issubclass(cls, FactorModel)):
            raise TypeError(f"classes must hold FactorModel subclasses, got {cls!r}")
        extra[cls.__name__] = cls
    if name in extra:
        return extra[name]
    allowed = [c for c, _, _ in MODELS.values()]
    if name not in allowed:
        raise ModelFileError(f"{str(path)!r} holds a model of class {name!r}, which is not an "
                             f"mfrec model (known: {', '.join(allowed)}); pass classes=[...] "
                             f"to load your own FactorModel subclasses")
    try:
        cls = get_model_class(name)
    except ImportError as exc:
        raise ModelFileError(f"{str(path)!r} holds a {name} model, but {exc}") from None
    if not issubclass(cls, FactorModel):
        raise ModelFileError(f"{name} is not a FactorModel")
    return cls


def load(path, *, classes=None):
    """Load a model written by ``model.save(path)``.

    Parameters
    ----------
    path : str or Path
    classes : list of type, optional
        Your own :class:`~mfrec.FactorModel` subclasses that may be loaded too (by class name);
        the built-in mfrec models are always allowed.

    Returns
    -------
    FactorModel
        Predicts and recommends exactly as the saved model.

    Raises
    ------
    FileNotFoundError
    ModelFileError (a ValueError)
        The file is not an mfrec model, is truncated or corrupted, holds an unknown class, or
        was written in a newer format than this mfrec reads.

    Examples
    --------
    >>> import mfrec  # doctest: +SKIP
    >>> model.save("movies.mfrec")  # doctest: +SKIP
    >>> same = mfrec.load("movies.mfrec")  # doctest: +SKIP
    """
    with _open_archive(path) as zf:
        header = _read_header(zf, path)
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ModelFileError(f"{str(path)!r} is truncated or corrupted ({exc})") from None
        if bad is not None:
            raise ModelFileError(f"{str(path)!r} is corrupted: entry {bad!r} fails its checksum")
        cls = _resolve_class(header.get("class"), path, classes)
        try:
            params = {k: _from_json(v) for k, v in header.get("params", {}).items()}
            model = cls(**params)
        except TypeError as exc:
            raise ModelFileError(f"{str(path)!r}: its {cls.__name__} hyperparameters do not fit "
                                 f"this mfrec's {cls.__name__} ({exc})") from None
        names = set(zf.namelist())

        def array(key):
            if f"{key}.npy" not in names:
                raise ModelFileError(f"{str(path)!r} is incomplete: array {key!r} is missing")
            try:
                with zf.open(f"{key}.npy") as f:
                    return np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise ModelFileError(f"{str(path)!r}: array {key!r} is unreadable ({exc})") \
                    from None

        for name, spec in header.get("attributes", {}).items():
            # only plain fitted-state names; never a method, property or dunder of the class
            if not (isinstance(name, str) and name.endswith("_") and not name.startswith("_")
                    and name.isidentifier() and not hasattr(type(model), name)
                    and isinstance(spec, dict)):
                raise ModelFileError(f"{str(path)!r}: invalid attribute entry {name!r}")
            kind = spec.get("kind")
            if kind == "array":
                value = array(spec["key"])
            elif kind == "scalar":
                value = array(spec["key"])[()]
            elif kind == "vocabulary":
                value = Vocabulary(_decode_ids(array(spec["key"]), spec.get("ids")),
                                   name=spec.get("name", "id"))
            elif kind == "sparse":
                key = spec["key"]
                maker = {("csr", False): sp.csr_matrix, ("csc", False): sp.csc_matrix,
                         ("csr", True): sp.csr_array, ("csc", True): sp.csc_array}
                try:
                    make = maker[(spec["format"], bool(spec.get("array_api")))]
                    value = make((array(f"{key}.data"), array(f"{key}.indices"),
                                  array(f"{key}.indptr")), shape=tuple(spec["shape"]))
                except (KeyError, ValueError, TypeError) as exc:
                    raise ModelFileError(f"{str(path)!r}: sparse attribute {name!r} is invalid "
                                         f"({exc})") from None
            elif kind == "json":
                value = _from_json(spec.get("value"))
            else:
                raise ModelFileError(f"{str(path)!r}: attribute {name!r} has unknown kind "
                                     f"{kind!r}")
            # a plain attribute set: the class's own code is what runs, never the file's
            object.__setattr__(model, name, value)
        for name, value in header.get("private", {}).items():
            if name == "_clip_predictions":
                model._clip_predictions = bool(value)
    _check_consistent(model, path)
    return model


def _check_consistent(model, path):
    if not hasattr(model, "user_factors_") or not hasattr(model, "item_factors_"):
        raise ModelFileError(f"{str(path)!r} holds no fitted factors")
    n_users, n_items = model.user_factors_.shape[0], model.item_factors_.shape[0]
    checks = [("user_vocab_", n_users), ("item_vocab_", n_items), ("user_bias_", n_users),
              ("item_bias_", n_items)]
    for name, n in checks:
        v = getattr(model, name, None)
        if v is not None and len(v) != n:
            raise ModelFileError(f"{str(path)!r} is inconsistent: {name} has {len(v)} entries "
                                 f"for {n} factor rows")
    ui = getattr(model, "user_items_", None)
    if ui is not None and tuple(ui.shape) != (n_users, n_items):
        raise ModelFileError(f"{str(path)!r} is inconsistent: user_items_ has shape {ui.shape}, "
                             f"factors give ({n_users}, {n_items})")
