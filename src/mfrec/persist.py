"""Model files: one zip archive of ``.npy`` arrays plus a JSON header, never a pickle.

Layout (an ``.npz``-style zip of uncompressed members, readable by
``numpy.load(path, allow_pickle=False)``):

- ``mfrec.json``: the header — format name and version, mfrec version, model class,
  hyperparameters, and for each fitted attribute how to rebuild it.
- ``<key>.npy``: one entry per array (factors, biases, vocabulary ids, sparse matrix parts).

Files are written atomically (a temporary file ``.NAME.XXXXXXXX.tmp`` in the same folder, then a
rename), so a crash never leaves a half-written model under the final name.

A model file is untrusted input (people download and serve them). Loading builds the model
from arrays and JSON only — it never executes code from the file — and validates the file once,
at the boundary, before anything it could inflate is allocated: the zip directory and the header
are size-capped, members must be stored uncompressed inside the file without overlapping (so no
member can decompress to more than the file holds), each ``.npy`` header's dtype and shape must
match the member's size exactly, and the model's shapes, dtypes and values must make sense
together (factor widths, vocabulary sizes, finite factors and biases, in-range ``user_items_``
indices with a monotone indptr, a finite rating range). Anything else is a
:class:`ModelFileError` naming what is wrong.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ._version import __version__
from .data import Vocabulary, _is_sparse

__all__ = ["save_model", "load", "read_header", "ModelFileError", "FORMAT_NAME",
           "FORMAT_VERSION", "save_target", "write_atomically"]

FORMAT_NAME = "mfrec-model"
FORMAT_VERSION = 1
HEADER = "mfrec.json"
_ZIP_MAGIC = b"PK\x03\x04"

# Caps on the parts of a file that are parsed before anything is checked. A model file has about
# a dozen members and a header of a few KB (longer with long loss histories).
_MAX_MEMBERS = 1024
_MAX_CENTRAL_DIR = 1 << 20
_MAX_HEADER_BYTES = 16 << 20
_MAX_JSON_DEPTH = 32
_MAX_NPY_HEADER = 10_000  # numpy's own default
_READ_CHUNK = 1 << 24


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
    # recursion is bounded: the header's nesting depth was checked before parsing
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
            return tuple(_from_json(v) for v in value["__tuple__"])
        if set(value) == {"__dict__"} and isinstance(value["__dict__"], dict):
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


#: id encodings and the dtype kinds each may be stored as
_ID_KINDS = {"native": "biufUSM", "object-str": "U", "object-int": "iu", "object-float": "f"}


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
    attrs = {k: v for k, v in vars(model).items() if k.endswith("_") and not k.startswith("_")}
    if "_seen_parts" in vars(model):  # a loaded model's user_items_, not built yet
        attrs["user_items_"] = model.user_items_
    return attrs


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
        The path written (``path`` as given, also when it is a symbolic link).

    Raises
    ------
    TypeError
        An attribute or hyperparameter that cannot be stored without pickling, named.
    FileNotFoundError
        The folder does not exist.
    IsADirectoryError
        ``path`` is a folder.
    ValueError
        ``path`` is a device, FIFO or socket (for example ``/dev/null``): model files are
        written only to regular files, and such a path is left untouched.

    Notes
    -----
    The model is written to ``.NAME.XXXXXXXX.tmp`` beside the final file, flushed to disk
    (``fsync``), then renamed over ``NAME`` and the folder is synced: readers see the old file
    or the new one, never a part. On any error the temporary file is removed; temporary files
    of this naming left by a killed process (``kill -9``) are removed by the next save of the
    same ``NAME``, unless a live saver still holds them (each saver keeps an exclusive
    ``flock`` on its temporary file until it is renamed).

    A symbolic link is followed: its target is replaced atomically and the link stays a link.
    A new file gets the mode ``open()`` would give it (``0o666`` less the umask, so 0644 under
    the usual umask 022); a replaced file keeps its mode.
    """
    from .models.base import NotFittedError

    if not hasattr(model, "user_factors_"):
        raise NotFittedError(f"this {type(model).__name__} is not fitted yet; fit it before "
                             f"saving")
    path = Path(path)
    target, mode = save_target(path)  # checked before the (possibly long) encoding
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
        elif _is_sparse(value):
            import scipy.sparse as sp

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

    def write(fh):
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(HEADER, text)
            for key, arr in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=arr.nbytes > (1 << 30)) as f:
                    np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)

    write_atomically(target, mode, write)
    return path


# ---------------------------------------------------------------------- atomic writes
try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - not POSIX: stale temporary files are left alone
    _fcntl = None

_TMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_FILE_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def _file_kind(mode):
    for test, what in _FILE_KINDS:
        if test(mode):
            return what
    return "not a regular file"


def save_target(path):
    """Resolve where a save to ``path`` will write, refusing anything but a regular file.

    The first half of every mfrec save (models, ``ItemIndex`` files, ``recommend_all``
    output); call it before a long computation so that a bad path fails at once, then hand its
    result to :func:`write_atomically`.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. A symbolic link (or chain of them) is followed to its target, which
        is what gets replaced.

    Returns
    -------
    target : pathlib.Path
        The real file to create or replace.
    mode : int or None
        Its permission bits when it exists (the new file keeps them), None when it is new.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    ValueError
        If ``path`` is a symbolic link loop, a FIFO, a device, a socket or anything else that
        is not a regular file (it is left untouched).
    """
    target = Path(os.path.realpath(path))  # a symbolic link (chain) is followed to its target
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: folder {str(folder)!r} does "
                                f"not exist")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return target, None
    if stat.S_ISLNK(st.st_mode):  # realpath stops at a loop
        raise ValueError(f"cannot save to {str(path)!r}: it is a symbolic link loop")
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"cannot save to {str(path)!r}: it is a folder; give a file "
                                f"name inside it, such as {str(Path(path) / 'model.mfrec')!r}")
    if not stat.S_ISREG(st.st_mode):
        shown = f"{str(path)!r}" + (f" (a link to {str(target)!r})" if target != Path(path)
                                    else "")
        raise ValueError(f"cannot save to {shown}: it is {_file_kind(st.st_mode)}; mfrec's files "
                         f"are written only to regular files, so it was left untouched")
    return target, stat.S_IMODE(st.st_mode)


def _create_temp(folder, name):
    """A new, locked ``.NAME.XXXXXXXX.tmp`` file: (fd, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{''.join(secrets.choice(_TMP_CHARS) for _ in range(8))}.tmp"
        try:
            # mode 0o666: the kernel applies the umask, as for a file made by open()
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        if _fcntl is None:
            return fd, tmp
        _fcntl.flock(fd, _fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        # a concurrent save removed it as stale between our create and our lock: start again
        os.close(fd)
    raise FileExistsError(f"could not create a temporary file in {str(folder)!r}")


def _remove_stale_temps(folder, name, own):
    """Remove ``.NAME.XXXXXXXX.tmp`` files whose saver is gone (no one holds their lock)."""
    if _fcntl is None:
        return
    pattern = re.compile(rf"\.{re.escape(name)}\.[{_TMP_CHARS}]{{8}}\.tmp")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOFOLLOW", 0)
    try:
        entries = [e.name for e in os.scandir(folder)]
    except OSError:
        return
    for entry in entries:
        if entry == own or not pattern.fullmatch(entry):
            continue
        stale = folder / entry
        try:
            fd = os.open(stale, flags)
        except OSError:  # gone already, a symbolic link, or not ours to read
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except OSError:  # a live saver is writing it
                continue
            now = os.lstat(stale)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(stale)
        except OSError:
            continue
        finally:
            os.close(fd)


def write_atomically(target, mode, write):
    """Write a file all at once or not at all: into a temporary file, then renamed over it.

    Readers of ``target`` see the old file or the complete new one, never a partial write; a
    failure (or interrupt) inside ``write`` removes the temporary file and leaves ``target`` as
    it was. Temporary files left by savers that died are cleaned up on the way.

    Parameters
    ----------
    target : pathlib.Path
        The file to create or replace, as returned by :func:`save_target`.
    mode : int or None
        Permission bits to give the new file (those of the file it replaces); None leaves the
        umask's.
    write : callable
        ``write(fileobj)`` writes the whole content to a binary file object (seekable, opened
        for writing); it is flushed and synced to disk before the rename.
    """
    folder = target.parent
    fd, tmp = _create_temp(folder, target.name)
    try:
        _remove_stale_temps(folder, target.name, tmp.name)
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # a replaced file keeps its permissions
        with os.fdopen(fd, "wb", closefd=False) as fh:
            write(fh)
            fh.flush()
            os.fsync(fd)
        # renamed while still locked, so no concurrent save can take it for a stale one
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    try:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dfd)  # the rename itself reaches the disk
    except OSError:
        pass
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------- load: the archive
# What zipfile and numpy's .npy reader raise on malformed input (struct.error, ValueError, ...)
_PARSE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
                 TypeError, KeyError, IndexError, OverflowError, NotImplementedError,
                 SyntaxError, struct.error)


def _open_archive(path):
    """The file's ZipFile, after its directory's size, members and layout were checked."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC",
                                                                                0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such model file: {str(path)!r}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{str(path)!r} is a folder, not a model file") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{str(path)!r} is a folder, not a model file")
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{str(path)!r} is {_file_kind(st.st_mode)}, not a model file")
    except BaseException:
        os.close(fd)
        raise
    fh = os.fdopen(fd, "rb")
    try:
        magic = fh.read(4)
        if magic != _ZIP_MAGIC:
            raise ModelFileError(f"{str(path)!r} is not an mfrec model file (it is not a zip "
                                 f"archive{'; it is empty' if not magic else ''})")
        size = st.st_size
        try:
            end = zipfile._EndRecData(fh)  # the end record: where the directory is, how big
        except _PARSE_ERRORS as exc:
            raise ModelFileError(f"{str(path)!r} is truncated or corrupted ({exc})") from None
        if not end:
            raise ModelFileError(f"{str(path)!r} is truncated or corrupted (no zip directory "
                                 f"at its end); save the model again")
        if end[zipfile._ECD_SIZE] > _MAX_CENTRAL_DIR or \
                end[zipfile._ECD_ENTRIES_TOTAL] > _MAX_MEMBERS:
            raise ModelFileError(
                f"{str(path)!r} is not an mfrec model file: its zip directory declares "
                f"{end[zipfile._ECD_ENTRIES_TOTAL]} members in {end[zipfile._ECD_SIZE]} bytes "
                f"(a model has at most {_MAX_MEMBERS} members in {_MAX_CENTRAL_DIR} bytes)")
        try:
            zf = zipfile.ZipFile(fh)
        except _PARSE_ERRORS as exc:
            raise ModelFileError(f"{str(path)!r} is truncated or corrupted ({exc}); save the "
                                 f"model again") from None
    except BaseException:
        fh.close()
        raise
    try:
        limit = _check_members(zf, size, path)
    except BaseException:
        zf.close()
        fh.close()
        raise
    return _Archive(zf, fh, limit)


class _Archive:
    """A checked ZipFile, its file and where its members' data ends; closed together."""

    def __init__(self, zf, fh, limit):
        self.zf, self.fh, self.limit = zf, fh, limit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zf.close()
        self.fh.close()


def _check_members(zf, size, path):
    """Every member stored uncompressed, unencrypted, inside the file and not overlapping
    another: then no member can yield more bytes than the file holds."""
    infos = zf.infolist()
    if len(infos) > _MAX_MEMBERS:
        raise ModelFileError(f"{str(path)!r} has {len(infos)} zip members; a model file has "
                             f"at most {_MAX_MEMBERS}")
    names = set()
    for info in infos:
        where = f"{str(path)!r}: zip member {info.filename!r}"
        if info.filename in names:
            raise ModelFileError(f"{where} appears twice")
        names.add(info.filename)
        if info.compress_type != zipfile.ZIP_STORED:
            raise ModelFileError(f"{where} is compressed (method {info.compress_type}); mfrec "
                                 f"model files hold uncompressed members only")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{where} is encrypted")
        if info.file_size != info.compress_size:
            raise ModelFileError(f"{where} declares {info.file_size} bytes but stores "
                                 f"{info.compress_size}")
    # local header (30 bytes + name) then the data, all before the directory, one after another
    spans = sorted((i.header_offset, i.header_offset + 30 + len(i.orig_filename.encode(
        "utf-8", "surrogateescape")) + i.compress_size, i.filename) for i in infos)
    limit = min(size, zf.start_dir)
    prev_end = 0
    for start, stop, name in spans:
        if start < prev_end or stop > limit:
            raise ModelFileError(
                f"{str(path)!r}: zip member {name!r} declares data at bytes {start}..{stop}, "
                f"{'overlapping another member' if start < prev_end else 'beyond the file'} "
                f"(the members end at byte {limit}); the file is corrupted or crafted")
        prev_end = stop
    return limit


def _json_depth(raw):
    """Deepest bracket nesting of JSON text; brackets inside strings do not count.

    Vectorised (a regular expression over a 16 MB header of short strings takes seconds): a quote
    opens or closes a string unless an odd run of backslashes precedes it, and a bracket counts
    when an even number of such quotes precedes it. Exact for valid JSON; for invalid JSON the
    parser fails anyway (and its own recursion limit is caught too).
    """
    a = np.frombuffer(raw, np.uint8)
    opening = (a == 0x5B) | (a == 0x7B)
    if not opening.any():
        return 0
    quote = a == 0x22
    backslash = a == 0x5C
    if backslash.any():
        pos = np.arange(a.size, dtype=np.int32)  # (a header has at most 16 MiB)
        last_other = np.maximum.accumulate(np.where(backslash, -1, pos))
        run_before = np.zeros(a.size, np.int32)  # backslashes right before each position
        run_before[1:] = pos[:-1] - last_other[:-1]
        quote &= run_before % 2 == 0
    outside = np.cumsum(quote, dtype=np.int32) % 2 == 0  # (a quote itself is never a bracket)
    step = (opening & outside).astype(np.int32)
    step -= ((a == 0x5D) | (a == 0x7D)) & outside
    return int(np.cumsum(step).max())


def _read_header(zf, path):
    try:
        info = zf.getinfo(HEADER)
    except KeyError:
        raise ModelFileError(f"{str(path)!r} is a zip archive but not an mfrec model file (no "
                             f"{HEADER} header)") from None
    if info.file_size > _MAX_HEADER_BYTES:
        raise ModelFileError(f"{str(path)!r} has a {info.file_size}-byte header; a model header "
                             f"has at most {_MAX_HEADER_BYTES} bytes")
    try:
        raw = zf.read(HEADER)
    except _PARSE_ERRORS as exc:
        raise ModelFileError(f"{str(path)!r} is truncated or corrupted ({exc})") from None
    depth = _json_depth(raw)
    if depth > _MAX_JSON_DEPTH:
        raise ModelFileError(f"{str(path)!r} has a header nested {depth} levels deep; a model "
                             f"header nests at most {_MAX_JSON_DEPTH}")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, digits
        raise ModelFileError(f"{str(path)!r} has an unreadable header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{str(path)!r} is not an mfrec model file (format "
                             f"{header.get('format') if isinstance(header, dict) else None!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{str(path)!r} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by mfrec {header.get('mfrec_version', '?')!s:.40} in "
            f"model format {version}; this mfrec {__version__} reads format {FORMAT_VERSION} "
            f"and older. Upgrade mfrec to load it.")
    for part, kind in (("class", str), ("params", dict), ("attributes", dict),
                       ("private", dict)):
        value = header.get(part, {} if kind is dict else None)
        if not isinstance(value, kind):
            raise ModelFileError(f"{str(path)!r}: header field {part!r} must be a JSON "
                                 f"{'object' if kind is dict else 'string'}, got "
                                 f"{type(value).__name__}")
    return header


def read_header(path):
    """The JSON header of a model file (class, hyperparameters, versions, attributes), without
    loading the arrays. Raises :class:`ModelFileError` for a file that is not a model."""
    with _open_archive(path) as ar:
        return _read_header(ar.zf, path)


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
        raise ModelFileError(f"{str(path)!r} holds a model of class {name!r:.80}, which is not "
                             f"an mfrec model (known: {', '.join(allowed)}); pass "
                             f"classes=[...] to load your own FactorModel subclasses")
    try:
        cls = get_model_class(name)
    except ImportError as exc:
        raise ModelFileError(f"{str(path)!r} holds a {name} model, but {exc}") from None
    if not issubclass(cls, FactorModel):
        raise ModelFileError(f"{name} is not a FactorModel")
    return cls


# ---------------------------------------------------------------------- load: arrays
class _ArrayRef:
    """A ``.npy`` member whose header was read and checked: dtype, shape, where its data is."""

    def __init__(self, zf, key, path):
        self.key, self.path = key, path
        self.name = f"{key}.npy"
        try:
            self.info = zf.getinfo(self.name)
        except KeyError:
            raise ModelFileError(f"{str(path)!r} is incomplete: array {key!r} is missing") \
                from None
        try:
            with zf.open(self.info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                        f, max_header_size=_MAX_NPY_HEADER)
                elif version in ((2, 0), (3, 0)):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                        f, max_header_size=_MAX_NPY_HEADER)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                self.offset = f.tell()
        except zipfile.BadZipFile as exc:  # a small member's CRC is checked as it is opened
            raise ModelFileError(f"{str(path)!r} is corrupted: entry {self.name!r}: {exc}") \
                from None
        except _PARSE_ERRORS as exc:
            raise self.error(f"has an unreadable .npy header ({exc})") from None
        dtype = np.dtype(dtype)
        if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None \
                or dtype.kind not in "biufcUSMm" or dtype.itemsize == 0:
            raise self.error(f"has dtype {dtype}, which a model file never holds (no objects, "
                             f"records or empty types)")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise self.error(f"has an invalid shape {shape!r:.80}")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        stored = self.info.file_size - self.offset
        if nbytes != stored:
            raise self.error(f"declares {count} elements of {dtype} ({nbytes} bytes) but the "
                             f"file stores {stored} bytes for it")
        self.shape, self.dtype, self.fortran, self.count = tuple(shape), dtype, fortran, count

    def error(self, what):
        return ModelFileError(f"{str(self.path)!r}: array {self.key!r} {what}")

    def expect(self, *, ndim=None, kinds=None, length=None, rows=None):
        """Check dtype kind and shape against what the model needs; returns self."""
        if kinds is not None and self.dtype.kind not in kinds:
            raise self.error(f"has dtype {self.dtype}; expected {_KIND_NAMES[kinds]}")
        if ndim is not None and len(self.shape) != ndim:
            raise self.error(f"has shape {self.shape}; expected {ndim} dimension(s)")
        if length is not None and self.shape[0] != length:
            raise self.error(f"has {self.shape[0]} entries; expected {length}")
        if rows is not None and self.shape != rows:
            raise self.error(f"has shape {self.shape}; expected {rows}")
        return self

    def read(self, archive):
        """The array: allocated once at its checked size, read straight into place in chunks
        while its CRC is computed."""
        info, fh = self.info, archive.fh
        arr = np.empty(self.count, dtype=self.dtype)
        buf = memoryview(arr.view(np.uint8).reshape(-1)) if self.count else memoryview(b"")
        try:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) != 30 or local[:4] != _ZIP_MAGIC:
                raise ValueError("its local zip header is missing")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if start + info.compress_size > archive.limit:
                raise ValueError(f"its data would end at byte {start + info.compress_size}, "
                                 f"beyond the members' end at {archive.limit}")
            fh.seek(start)
            crc = zlib.crc32(fh.read(self.offset))
            pos = 0
            while pos < len(buf):
                got = fh.readinto(buf[pos:pos + _READ_CHUNK])
                if not got:
                    raise EOFError(f"it ends after {pos} of {len(buf)} bytes")
                crc = zlib.crc32(buf[pos:pos + got], crc)
                pos += got
        except _PARSE_ERRORS as exc:
            raise self.error(f"is unreadable ({exc})") from None
        if crc != info.CRC:
            raise ModelFileError(f"{str(self.path)!r} is corrupted: entry {self.name!r} fails "
                                 f"its checksum")
        if self.fortran:
            arr = arr.reshape(self.shape[::-1]).T
        else:
            arr = arr.reshape(self.shape)
        if not self.dtype.isnative:
            arr = arr.byteswap().view(self.dtype.newbyteorder("="))
        return arr


_KIND_NAMES = {"f": "a float dtype (float32 or float64)", "i": "a signed integer dtype",
               "biuf": "a real number dtype", "biufUSMm": "a number, string or date dtype"}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_SPARSE_PARTS = ("data", "indices", "indptr")


def _all_finite(arr):
    # in chunks: a whole-array isfinite would allocate a mask as large as the array
    flat = arr.reshape(-1)
    for s in range(0, flat.size, _READ_CHUNK):
        if not np.isfinite(flat[s:s + _READ_CHUNK]).all():
            return False
    return True


#: the largest score magnitude a model may reach (float32 overflows at 3.4e38)
_MAX_SCORE = 1e37


def _max_abs(arr):
    if arr.size == 0:
        return 0.0
    return float(max(-float(arr.min()), float(arr.max())))  # no temporary the array's size


def _real_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(
        np.isfinite(value))


# ---------------------------------------------------------------------- load
#: fitted arrays every model has, and those with a known shape, as (rows, columns) where a
#: name stands for n_users, n_items or the factor width k
_REQUIRED = ("user_factors_", "item_factors_", "user_bias_", "item_bias_", "global_mean_",
             "user_vocab_", "item_vocab_", "rating_range_", "user_items_")
_KNOWN_SHAPES = {"user_bias_": ("users",), "item_bias_": ("items",),
                 "explicit_user_factors_": ("users", "k"), "implicit_factors_": ("items", "k"),
                 "user_noise_scale_": ("users",), "item_noise_scale_": ("items",)}


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
    IsADirectoryError
    ModelFileError (a ValueError)
        The file is not an mfrec model, is truncated, corrupted or inconsistent, holds an unknown
        class, or was written in a newer format than this mfrec reads. The message names the
        member, attribute or field that is wrong.

    Notes
    -----
    The file is treated as untrusted: its zip directory, header and every array's declared
    dtype and shape are checked against the file's size and against each other before any
    array is allocated, and the arrays' values (finite factors and biases, ``user_items_``
    bounds) before the model is returned; memory use is bounded by the file's size.

    Examples
    --------
    >>> import mfrec  # doctest: +SKIP
    >>> model.save("movies.mfrec")  # doctest: +SKIP
    >>> same = mfrec.load("movies.mfrec")  # doctest: +SKIP
    """
    with _open_archive(path) as ar:
        zf = ar.zf
        header = _read_header(zf, path)
        cls = _resolve_class(header["class"], path, classes)
        params = {k: _from_json(v) for k, v in header.get("params", {}).items()}
        try:
            model = cls(**params)
        except TypeError as exc:
            raise ModelFileError(f"{str(path)!r}: its {cls.__name__} hyperparameters do not fit "
                                 f"this mfrec's {cls.__name__} ({exc})") from None
        try:
            model._validate_params()
        except (ValueError, TypeError) as exc:
            raise ModelFileError(f"{str(path)!r}: invalid {cls.__name__} hyperparameters "
                                 f"({exc})") from None
        specs = _attribute_specs(header.get("attributes", {}), model, path)
        refs = {name: _array_refs(zf, name, spec, path) for name, spec in specs.items()}
        _check_shapes(specs, refs, path)
        state = {name: _build(ar, name, specs[name], refs[name], path) for name in specs}
        private = header.get("private", {})
    _check_values(state, path)
    from .models.base import SeenParts

    for name, value in state.items():
        if isinstance(value, SeenParts):
            name = "_seen_parts"  # FactorModel.user_items_ builds the matrix from it when asked
        # a plain attribute set: the class's own code is what runs, never the file's
        object.__setattr__(model, name, value)
    if "_clip_predictions" in private:
        value = private["_clip_predictions"]
        if not isinstance(value, bool) or isinstance(getattr(type(model), "_clip_predictions",
                                                             None), property):
            raise ModelFileError(f"{str(path)!r}: private field '_clip_predictions' must be "
                                 f"true or false, for a model that stores it; got {value!r:.40} "
                                 f"for a {type(model).__name__}")
        model._clip_predictions = value
    return model


def _is_seen_slot(cls, name):
    """Whether ``cls.name`` is FactorModel's ``user_items_`` slot (filled by a loaded file)
    rather than a method or property of the class."""
    import inspect

    from .models.base import _SeenMatrix
    return name == "user_items_" and isinstance(inspect.getattr_static(cls, name), _SeenMatrix)


def _attribute_specs(attributes, model, path):
    """The header's attribute entries, each checked for form (names, kinds, keys)."""
    specs = {}
    for name, spec in attributes.items():
        # only plain fitted-state names; never a method, property or dunder of the class
        if not (name.endswith("_") and not name.startswith("_") and name.isidentifier()
                and (not hasattr(type(model), name) or _is_seen_slot(type(model), name))
                and isinstance(spec, dict)):
            raise ModelFileError(f"{str(path)!r}: invalid attribute entry {name!r:.80}")
        kind = spec.get("kind")
        where = f"{str(path)!r}: attribute {name!r}"
        if kind not in ("array", "scalar", "vocabulary", "sparse", "json"):
            raise ModelFileError(f"{where} has unknown kind {kind!r:.40}")
        if kind != "json" and spec.get("key") != f"attr.{name}":
            raise ModelFileError(f"{where} has key {spec.get('key')!r:.80}; expected "
                                 f"'attr.{name}'")
        if kind == "vocabulary" and not (isinstance(spec.get("ids"), str)
                                         and spec["ids"] in _ID_KINDS
                                         and isinstance(spec.get("name", "id"), str)):
            raise ModelFileError(f"{where} has an invalid id encoding {spec.get('ids')!r:.40} "
                                 f"or name {spec.get('name')!r:.40}")
        if kind == "sparse":
            shape = spec.get("shape")
            if not (spec.get("format") in ("csr", "csc") and isinstance(spec.get("array_api",
                                                                                 False), bool)
                    and isinstance(shape, list) and len(shape) == 2
                    and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**62
                            for d in shape)):
                raise ModelFileError(f"{where} is not a valid sparse matrix entry (format "
                                     f"{spec.get('format')!r:.20}, shape {shape!r:.40})")
        specs[name] = spec
    missing = [n for n in _REQUIRED if n not in specs]
    if missing:
        raise ModelFileError(f"{str(path)!r} is incomplete: it has no {', '.join(missing)}")
    if specs["user_items_"]["kind"] != "sparse" or specs["user_items_"]["format"] != "csr":
        raise ModelFileError(f"{str(path)!r}: user_items_ must be a CSR sparse matrix")
    for name in ("user_vocab_", "item_vocab_"):
        if specs[name]["kind"] != "vocabulary":
            raise ModelFileError(f"{str(path)!r}: {name} must be a vocabulary")
    for name in ("user_factors_", "item_factors_", *_KNOWN_SHAPES):
        if name in specs and specs[name]["kind"] != "array":
            raise ModelFileError(f"{str(path)!r}: {name} must be an array")
    return specs


def _array_refs(zf, name, spec, path):
    kind = spec["kind"]
    if kind in ("array", "scalar", "vocabulary"):
        return {"": _ArrayRef(zf, spec["key"], path)}
    if kind == "sparse":
        return {p: _ArrayRef(zf, f"{spec['key']}.{p}", path) for p in _SPARSE_PARTS}
    return {}


def _check_shapes(specs, refs, path):
    """Dtypes and shapes of every array against each other, before any is read."""
    P = refs["user_factors_"][""].expect(ndim=2, kinds="f")
    Q = refs["item_factors_"][""].expect(ndim=2, kinds="f")
    n_users, k = P.shape
    n_items = Q.shape[0]
    if Q.shape[1] != k:
        raise ModelFileError(f"{str(path)!r} is inconsistent: user factors have {k} columns, "
                             f"item factors {Q.shape[1]}")
    for ref in (P, Q):
        if ref.dtype not in _FLOATS:
            raise ref.error(f"has dtype {ref.dtype}; expected float32 or float64")
    dims = {"users": n_users, "items": n_items, "k": k}
    for name, spec in specs.items():
        if name in ("user_factors_", "item_factors_"):
            continue
        kind = spec["kind"]
        if name in _KNOWN_SHAPES and kind == "array":
            want = tuple(dims[d] for d in _KNOWN_SHAPES[name])
            ref = refs[name][""].expect(kinds="f")
            if ref.shape != want:
                what = " x ".join(f"{dims[d]} ({d})" if d != "k" else f"{k} (factors)"
                                  for d in _KNOWN_SHAPES[name])
                raise ModelFileError(f"{str(path)!r} is inconsistent: {name} has shape "
                                     f"{ref.shape}; the factors give {what}")
        elif kind == "array":
            refs[name][""].expect(kinds="biuf")
        elif kind == "scalar":
            refs[name][""].expect(kinds="biuf", ndim=0)
        elif kind == "vocabulary":
            ref = refs[name][""].expect(kinds=None, ndim=1)
            allowed = _ID_KINDS[spec["ids"]]
            if ref.dtype.kind not in allowed or ref.dtype.kind == "c":
                raise ref.error(f"holds ids of dtype {ref.dtype}, which the {spec['ids']!r} id "
                                f"encoding does not use")
            n = {"user_vocab_": n_users, "item_vocab_": n_items}.get(name)
            if n is not None and ref.shape[0] != n:
                raise ModelFileError(f"{str(path)!r} is inconsistent: {name} has "
                                     f"{ref.shape[0]} ids for {n} factor rows")
        elif kind == "sparse":
            shape = tuple(spec["shape"])
            if name == "user_items_" and shape != (n_users, n_items):
                raise ModelFileError(f"{str(path)!r} is inconsistent: user_items_ has shape "
                                     f"{shape}, factors give ({n_users}, {n_items})")
            r = refs[name]
            major = shape[0] if spec["format"] == "csr" else shape[1]
            data = r["data"].expect(ndim=1, kinds="biuf")
            r["indices"].expect(ndim=1, kinds="i", length=data.shape[0])
            r["indptr"].expect(ndim=1, kinds="i", length=major + 1)
            for part in ("indices", "indptr"):
                if r[part].dtype.itemsize not in (4, 8):
                    raise r[part].error(f"has dtype {r[part].dtype}; expected int32 or int64")


def _build(archive, name, spec, refs, path):
    """The attribute's value from its checked members (values are checked by _check_values)."""
    kind = spec["kind"]
    if kind == "json":
        return _from_json(spec.get("value"))
    if kind == "array":
        arr = refs[""].read(archive)
        return np.ascontiguousarray(arr) if name in _REQUIRED or name in _KNOWN_SHAPES else arr
    if kind == "scalar":
        return refs[""].read(archive)[()]
    if kind == "vocabulary":
        ids = refs[""].read(archive)
        if ids.dtype.kind == "f" and not _all_finite(ids):
            raise ModelFileError(f"{str(path)!r}: {name} holds NaN or infinite ids")
        try:
            return Vocabulary(_decode_ids(ids, spec["ids"]), name=spec.get("name", "id"))
        except ValueError as exc:
            raise ModelFileError(f"{str(path)!r}: {name} is invalid ({exc})") from None
    # sparse: structure checked here, where the parts are at hand
    data, indices, indptr = (refs[p].read(archive) for p in _SPARSE_PARTS)
    shape = tuple(spec["shape"])
    major, minor = shape if spec["format"] == "csr" else shape[::-1]
    nnz = data.shape[0]
    where = f"{str(path)!r}: {name} ({spec['format']}, shape {shape})"
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ModelFileError(f"{where} has indptr from {indptr[0]} to {indptr[-1]}; expected "
                             f"0 to {nnz} (its number of entries)")
    if indptr.size > 1 and (np.diff(indptr) < 0).any():
        raise ModelFileError(f"{where} has a decreasing indptr")
    if nnz and (indices.min() < 0 or indices.max() >= minor):
        raise ModelFileError(f"{where} has indices from {indices.min()} to {indices.max()}; "
                             f"expected 0 to {minor - 1}")
    if data.dtype.kind == "f" and not _all_finite(data):
        raise ModelFileError(f"{where} holds NaN or infinite values")
    if name == "user_items_" and spec["format"] == "csr":
        # every check SciPy's constructor makes was made above; the matrix is built on first
        # use (most loads serve top-N, which reads the parts and never needs SciPy)
        from .models.base import SeenParts
        return SeenParts(data, indices, indptr, shape, bool(spec.get("array_api", False)))
    import scipy.sparse as sp

    maker = {("csr", False): sp.csr_matrix, ("csc", False): sp.csc_matrix,
             ("csr", True): sp.csr_array, ("csc", True): sp.csc_array}
    try:
        return maker[(spec["format"], spec.get("array_api", False))](
            (data, indices, indptr), shape=shape)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where} is invalid ({exc})") from None


def _check_values(state, path):
    """Values the model computes with: finite factors and biases, a usable rating range."""
    for name, value in state.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc" and not _all_finite(value):
            raise ModelFileError(f"{str(path)!r}: {name} holds NaN or infinite values")
        if isinstance(value, np.generic) and value.dtype.kind in "fc" and not np.isfinite(value):
            raise ModelFileError(f"{str(path)!r}: {name} is {value}")
    mean = state["global_mean_"]
    if not _real_number(mean):
        raise ModelFileError(f"{str(path)!r}: global_mean_ must be a finite number, got "
                             f"{mean!r:.40}")
    # Scores are computed in float32 (recommend, similar_items): finite factors can still
    # overflow to inf, and inf - inf to NaN. Bound what a score or a squared norm can reach.
    big = {name: _max_abs(state[name]) for name in ("user_factors_", "item_factors_",
                                                    "user_bias_", "item_bias_")}
    k = state["user_factors_"].shape[1]
    p, q = big["user_factors_"], big["item_factors_"]
    bound = max(k * p * q + big["user_bias_"] + big["item_bias_"] + abs(mean), k * q * q,
                *big.values())
    if not bound <= _MAX_SCORE:
        raise ModelFileError(
            f"{str(path)!r}: factors and biases this large (largest magnitudes: "
            + ", ".join(f"{n} {v:.3g}" for n, v in big.items())
            + f") make scores overflow float32 (they reach {bound:.3g}; at most "
            f"{_MAX_SCORE:.0e} is allowed)")
    rr = state["rating_range_"]
    if not (isinstance(rr, (tuple, list)) and len(rr) == 2 and all(map(_real_number, rr))
            and rr[0] <= rr[1]):
        raise ModelFileError(f"{str(path)!r}: rating_range_ must be two finite numbers (low, "
                             f"high) with low <= high, got {rr!r:.60}")
    state["rating_range_"] = tuple(rr)
    reg = state.get("regularization_")
    if reg is not None and not (_real_number(reg) and reg >= 0):
        raise ModelFileError(f"{str(path)!r}: regularization_ must be a finite number >= 0, "
                             f"got {reg!r:.40}")
