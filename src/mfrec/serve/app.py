"""The HTTP service: routes, request validation, bearer token, hot reload, logs and metrics.

A model file is untrusted input: it is read through :func:`mfrec.load` (the checked path), then
checked again here for what serving relies on (finite factors, a well-formed interaction matrix)
and warmed up, before it serves. Every request is validated at the boundary — pydantic models
with bounds, ids of the model's own type, a capped body — and what a client sends never gets a
5xx: unknown ids are 404, ill-formed values 422, oversized bodies 413, a missing or wrong token
401.

Ids keep their type. JSON ids are matched to the model's ids as they are: a model trained on
integer ids takes JSON integers, a model trained on string ids takes JSON strings, and the
other type is a 422 naming the field (``"1"`` is not the integer id 1: for a string-id model
the two would be different users). Responses give ids back in the model's type.

Endpoints (all JSON; OpenAPI schema at ``/openapi.json``):

========================  =====================================================================
``GET /api/health``       liveness; never needs the token
``GET /api/info``         the model: class, feedback kind, sizes, training data, hyperparameters
``GET /api/items/search`` items whose label (or id) contains ``q``, most used first
``POST /api/user``        a known user's training items (what they rated or used)
``POST /api/item``        one item: label, number of ratings, mean rating
``POST /api/recommend``   top-``n`` for a known user (exclude seen, candidates, exclusions)
``POST /api/recommend/batch``  the same for up to ``max_batch_users`` users
``POST /api/recommend/new``    top-``n`` for an unknown user from posted ratings (fold-in)
``POST /api/predict``     predicted ratings for (user, item) pairs
``POST /api/similar/items``    nearest items by cosine of the item factors
``POST /api/similar/users``    nearest users
``POST /api/admin/reload``     load the model file again (as SIGHUP does)
``GET /metrics``          Prometheus text: request counts by route and status, latency histogram
``GET /``                 the explorer page (static HTML, CSS, JS shipped in the package)
========================  =====================================================================

The two busiest requests, ``GET /api/health`` and a plain single-user ``POST /api/recommend``
(fields ``user``, ``n``, ``exclude_seen``), take a fast path in the service's middleware: the
same validation (the route's own pydantic model) and the same answers, without FastAPI's
routing and dependency machinery; anything else they meet (other fields, odd bodies, errors of
validation) goes to the routes. Concurrent single-user recommends are answered together by
:class:`RecommendBatcher` (one model call for the group). Everything runs on the event loop; a
reload loads and checks the new file in a thread beside it.
"""
import asyncio
import datetime as _dt
import hmac
import importlib.util
import json
import logging
import math
import os
import signal
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Literal, Optional, Union

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat,
                      StrictInt, StrictStr)

from .._version import __version__
from ..data import MAX_ABS_RATING

__all__ = ["create_app", "run", "Limits"]

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("mfrec.serve")
access_log = logging.getLogger("mfrec.serve.access")


# ---------------------------------------------------------------------- limits
@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for (they size the schema's ``maxItems`` too).

    Attributes
    ----------
    max_body : int, default=1_048_576
        Request bodies above this many bytes get 413 before they are read.
    max_n : int, default=1000
        Largest ``n`` (recommendations or neighbours per query).
    max_batch_users : int, default=1000
        Users in one batch request.
    max_batch_results : int, default=100_000
        ``len(users) * n`` in one batch request.
    max_pairs : int, default=10_000
        (user, item) pairs in one predict request.
    max_ratings : int, default=10_000
        Ratings posted for one new user.
    max_item_list : int, default=100_000
        Candidate or excluded items in one request.
    max_id_length : int, default=256
        Characters in a string id.
    """

    max_body: int = 1 << 20
    max_n: int = 1000
    max_batch_users: int = 1000
    max_batch_results: int = 100_000
    max_pairs: int = 10_000
    max_ratings: int = 10_000
    max_item_list: int = 100_000
    max_id_length: int = 256


LIMITS = Limits()
_INT64 = 2**63 - 1


def _json_int(v):
    # JSON Schema's "integer" is a number with no fraction (2.0 included), never a string or a
    # boolean: "1" stays a string, so it cannot pass for the integer id 1
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"Input should be a valid integer, got {type(v).__name__}")
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError("Input should be a valid integer, got a number with a fraction")
        return int(v)
    return v


def _json_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"Input should be a number, got {type(v).__name__}")
    return v


def _json_ints(**bounds):
    """An int field with bounds (in the schema as minimum/maximum) that takes what
    :func:`_json_int` takes."""
    return Annotated[int, Field(**bounds), BeforeValidator(_json_int)]


# no bounds: an integer beyond int64 is unknown (404), not malformed (see Snapshot.ids)
IntId = Annotated[int, BeforeValidator(_json_int)]
StrId = Annotated[StrictStr, Field(max_length=LIMITS.max_id_length)]
NumId = Annotated[Union[StrictInt, StrictFloat], Field(allow_inf_nan=False)]
Id = Union[IntId, StrId]
#: the JSON type of an id field, by the kind of the model's ids (see :func:`_id_kind`)
ID_TYPES = {"integer": IntId, "string": StrId, "number": NumId, "mixed": Id}
N = Annotated[_json_ints(ge=1, le=LIMITS.max_n), Field(description="how many to return")]


# ---------------------------------------------------------------------- request and response bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def request_models(user_kind, item_kind, user_example=None, item_example=None):
    """The request bodies, their id fields typed as the served model's ids (so the OpenAPI
    schema says exactly what is accepted).

    Parameters
    ----------
    user_kind, item_kind : {"integer", "string", "number", "mixed"}
    user_example, item_example : id, optional
        Ids of the model, shown as examples in the schema (clients and fuzzers start there).

    Returns
    -------
    types.SimpleNamespace of pydantic model classes
    """
    U, I = ID_TYPES[user_kind], ID_TYPES[item_kind]
    if user_example is not None:
        U = Annotated[U, Field(examples=[user_example])]
    if item_example is not None:
        I = Annotated[I, Field(examples=[item_example])]  # noqa: E741
    ItemList = Annotated[Optional[list[I]], Field(max_length=LIMITS.max_item_list)]

    class RankOptions(_Body):
        n: N = 10
        exclude_seen: StrictBool = Field(True, description="leave out the items the user has "
                                         "rated or used (for a new user: the posted ones)")
        items: Optional[Annotated[list[I], Field(min_length=1,
                                                 max_length=LIMITS.max_item_list)]] = Field(
            None, description="rank only these candidate items (default: all)")
        exclude: ItemList = Field(None, description="never recommend these items")

    class RecommendRequest(RankOptions):
        user: U = Field(description="a user id known to the model")

    class BatchRequest(RankOptions):
        users: list[U] = Field(min_length=1, max_length=LIMITS.max_batch_users)

    class Rating(_Body):
        item: I
        rating: Annotated[float, Field(ge=-MAX_ABS_RATING, le=MAX_ABS_RATING,
                                       allow_inf_nan=False),
                          BeforeValidator(_json_number)] = Field(
            1.0, description="the rating; leave out for implicit feedback (counts as 1)")

    class NewUserRequest(RankOptions):
        ratings: list[Rating] = Field(
            default_factory=list, max_length=LIMITS.max_ratings,
            description="the new user's ratings or interactions")
        duplicates: Literal["last", "mean", "sum", "error"] = Field(
            "last", description="an item listed more than once: 'last' keeps its last rating "
                                "(a rating changed in a session), 'mean' or 'sum' combine them "
                                "(as Ratings' duplicates), 'error' is a 422")
        unknown_items: Literal["error", "ignore"] = Field(
            "error", description="'error': an item the model does not know is a 404; 'ignore': "
                                 "leave it out")

    class Pair(_Body):
        user: U
        item: I

    class PredictRequest(_Body):
        pairs: list[Pair] = Field(min_length=1, max_length=LIMITS.max_pairs)
        unknown: Literal["error", "fallback"] = Field(
            "error", description="'error': an unknown id is a 404; 'fallback': score it with "
                                 "what is known (global mean plus the known side's bias)")
        clip: Optional[StrictBool] = Field(None, description="clip to the training rating "
                                                             "range (default: the model's choice)")

    class UserRequest(_Body):
        user: U
        limit: _json_ints(ge=1, le=LIMITS.max_n) = 100

    class ItemRequest(_Body):
        item: I

    class SimilarItemsRequest(_Body):
        item: I
        n: N = 10

    class SimilarUsersRequest(_Body):
        user: U
        n: N = 10

    return SimpleNamespace(**{k: v for k, v in locals().items() if isinstance(v, type)})


class ScoredItem(BaseModel):
    item: Id
    score: float
    name: Optional[str] = None


class Recommendations(BaseModel):
    user: Optional[Id] = None
    items: list[ScoredItem]


class BatchRecommendations(BaseModel):
    results: list[Recommendations]


class NewUserRecommendations(BaseModel):
    items: list[ScoredItem]
    n_ratings_used: int


class Prediction(BaseModel):
    user: Id
    item: Id
    rating: float


class Predictions(BaseModel):
    predictions: list[Prediction]


class RatedItem(BaseModel):
    item: Id
    rating: float
    name: Optional[str] = None


class UserHistory(BaseModel):
    user: Id
    n_items: int
    items: list[RatedItem]


class ItemDetails(BaseModel):
    item: Id
    name: Optional[str] = None
    n_ratings: int
    mean_rating: Optional[float] = None


class SimilarItems(BaseModel):
    item: Id
    items: list[ScoredItem]


class ScoredUser(BaseModel):
    user: Id
    score: float


class SimilarUsers(BaseModel):
    user: Id
    users: list[ScoredUser]


class FoundItem(BaseModel):
    item: Id
    name: Optional[str] = None
    n_ratings: int


class SearchResults(BaseModel):
    query: str
    items: list[FoundItem]


class Health(BaseModel):
    status: str
    generation: int


class Reloaded(BaseModel):
    reloaded: bool
    generation: int
    n_users: int
    n_items: int


class Message(BaseModel):
    detail: Union[str, list[dict]]


# ---------------------------------------------------------------------- errors
class ClientError(Exception):
    """A request the model cannot answer: becomes a 4xx with ``detail``."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _invalid(loc, msg, value=None, kind="value_error"):
    """A 422 in FastAPI's own validation-error shape, so clients parse one format."""
    item = {"type": kind, "loc": ["body", *loc], "msg": msg}
    if value is not None:
        item["input"] = value
    return ClientError(422, [item])


# ---------------------------------------------------------------------- the served model
def _id_kind(vocab):
    """'integer', 'string', 'number' or 'mixed': what JSON ids of this vocabulary look like."""
    ids = vocab.ids
    k = ids.dtype.kind
    if k in "iu":
        return "integer"
    if k in "US":
        return "string"
    if k == "f":
        return "number"
    types = {type(v) for v in ids[:100_000].tolist()}
    if types <= {str}:
        return "string"
    if types <= {int}:
        return "integer"
    return "mixed"


def _absent_id(vocab):
    """An integer id the vocabulary does not hold (stands in for ids beyond int64)."""
    ids = vocab.ids
    if ids.dtype.kind not in "iuf" or ids.size == 0:
        return -1 if ids.dtype.kind in "iuf" else float("nan")
    low = ids.min()
    return int(low) - 1 if low > -_INT64 - 1 else int(ids.max()) + 1


def _check_servable(model, path):
    """What serving relies on, checked again after :func:`mfrec.load`: finite float factors,
    at least one user and item, a well-formed interaction matrix (its indices are used to index).
    """
    from ..persist import ModelFileError
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        arr = getattr(model, name)
        if arr.dtype.kind != "f" or arr.ndim != (1 if name.endswith("bias_") else 2):
            raise ModelFileError(f"{path!r}: {name} must be a float array, got {arr.dtype} of "
                                 f"shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ModelFileError(f"{path!r}: {name} holds NaN or infinite values")
    if 0 in model.user_factors_.shape[:1] + model.item_factors_.shape[:1]:
        raise ModelFileError(f"{path!r} has no users or no items")
    if not math.isfinite(float(model.global_mean_)):
        raise ModelFileError(f"{path!r}: global_mean_ is not finite")
    ui = getattr(model, "user_items_", None)
    if ui is None:
        raise ModelFileError(f"{path!r} holds no training interactions (user_items_)")
    try:
        ui.check_format(full_check=True)  # indices in range: the kernels index with them
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path!r}: user_items_ is malformed ({exc})") from None
    if not np.isfinite(ui.data).all():
        raise ModelFileError(f"{path!r}: user_items_ holds NaN or infinite values")


class Snapshot:
    """One loaded, checked model and what the service derives from it. Never changed after it
    is built: a request holds one snapshot from start to end, so a reload never changes the
    model under it."""

    def __init__(self, path, labels, generation):
        from .. import load
        from ..models import is_implicit
        from ..persist import read_header

        spath = str(path)
        self.path = spath
        self.generation = generation
        self.header = read_header(path)
        model = load(path)
        _check_servable(model, spath)
        self.params = model.get_params()
        if "num_threads" in self.params:
            # one request is small: starting a parallel region costs more than it saves, and
            # requests already share the cores
            model.set_params(num_threads=1)
        self.model = model
        self.implicit = bool(is_implicit(model))
        self.user_kind = _id_kind(model.user_vocab_)
        self.item_kind = _id_kind(model.item_vocab_)
        ui = model.user_items_.tocsr()
        self.user_items = ui
        n_items = model.item_factors_.shape[0]
        self.item_counts = np.bincount(ui.indices, minlength=n_items)[:n_items]
        sums = np.bincount(ui.indices, weights=ui.data, minlength=n_items)[:n_items]
        self.item_means = np.divide(sums, self.item_counts, out=np.full(n_items, np.nan),
                                    where=self.item_counts > 0)
        self.item_ids = model.item_vocab_.ids.tolist()
        self.names = [None] * n_items
        self.name_of = {}
        if labels:
            keys = _coerce(list(labels), self.item_kind)
            keys = np.asarray(keys, dtype=np.int64 if self.item_kind == "integer" else object)
            idx = model.item_vocab_.lookup(keys, unknown="mask")
            for i, name in zip(idx.tolist(), labels.values()):
                if i >= 0:
                    self.names[i] = name
                    self.name_of[self.item_ids[i]] = name
        self.names_lower = [(s or "").lower() for s in self.names]
        self.absent = {"user": _absent_id(model.user_vocab_), "item": _absent_id(model.item_vocab_)}
        # most used first: the order of an empty search and of ties
        self.by_popularity = np.argsort(-self.item_counts, kind="stable")
        self.loaded_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.capabilities = {"fold_in": True, "similar": True}
        self.info = self._info(labels is not None)

    def warm(self):
        """Run each operation once: compiles or loads the kernels for this model's dtypes
        before the first request, and rejects a model that cannot answer."""
        m = self.model
        u0, i0 = m.user_vocab_.ids[:1], m.item_vocab_.ids[:1]
        m.recommend(u0, n=1)
        m._recommend_rows(np.zeros(1, np.int64), 1, True, compiled=True)  # the batcher's path
        m.predict(u0, i0)
        try:
            m.similar_items(i0, n=1)
            m.similar_users(u0, n=1)
        except Exception as exc:  # a model may not define similarity; it still serves the rest
            self.capabilities["similar"] = False
            log.warning(_event("capability_missing", what="similar", reason=str(exc)))
        try:
            m.recommend(m.fold_in((i0, np.ones(1))), n=1)
        except Exception as exc:
            self.capabilities["fold_in"] = False
            log.warning(_event("capability_missing", what="fold_in", reason=str(exc)))
        self.info["capabilities"] = dict(self.capabilities)

    def _info(self, has_labels):
        m, h = self.model, self.header
        loss = getattr(m, "loss_history_", None)
        ui = self.user_items
        n_users, n_items = m.user_factors_.shape[0], m.item_factors_.shape[0]
        return {
            "class": h.get("class"), "feedback": "implicit" if self.implicit else "explicit",
            "file": os.path.basename(self.path), "file_size": os.path.getsize(self.path),
            "generation": self.generation, "loaded_at": self.loaded_at,
            "created": h.get("created"), "mfrec_version": h.get("mfrec_version"),
            "format_version": h.get("format_version"),
            "n_users": n_users, "n_items": n_items, "n_factors": int(m.item_factors_.shape[1]),
            "user_id_type": self.user_kind, "item_id_type": self.item_kind,
            "training": {"n_ratings": int(ui.nnz),
                         "density": float(ui.nnz / max(1, n_users * n_items)),
                         "rating_range": [float(v) for v in m.rating_range_]
                         if hasattr(m, "rating_range_") else None,
                         "global_mean": float(m.global_mean_),
                         "epochs": len(loss) if loss else None,
                         "final_loss": float(loss[-1]) if loss and math.isfinite(loss[-1])
                         else None},
            "params": _plain(self.params), "notes": _plain(list(h.get("notes", []))),
            "labels": has_labels, "limits": dict(vars(LIMITS)),
            # ids to start exploring from: the most active user and the most used item
            "examples": {"user": m.user_vocab_.ids[[int(np.argmax(np.diff(ui.indptr)))]]
                         .tolist()[0],
                         "item": self.item_ids[int(self.by_popularity[0])]},
        }

    # ------------------------------------------------------------------ id checks
    def ids(self, values, side, loc):
        """Request ids -> (array for the vocabulary, positions of ids no model can hold).

        An id of the wrong type is a 422. An integer beyond int64 is a valid JSON integer but
        cannot be one of the model's ids: it is replaced by an id the model does not have, so
        it reads as unknown (404, or the fallback of predict).
        """
        kind = self.user_kind if side == "user" else self.item_kind
        ok = {"integer": (int,), "string": (str,), "number": (int, float),
              "mixed": (int, str)}[kind]
        for v in values:
            if not isinstance(v, ok):
                raise _invalid(loc, f"{side} ids of this model are {kind}s; got "
                                    f"{type(v).__name__} {v!r}", v, "id_type")
        big = [j for j, v in enumerate(values)
               if isinstance(v, int) and not -_INT64 - 1 <= v <= _INT64]
        if big:
            values = list(values)
            for j in big:
                values[j] = self.absent[side]
        if kind == "integer":
            return np.asarray(values, dtype=np.int64), big
        if kind == "number":
            return np.asarray(values, dtype=np.float64), big
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr, big

    def index(self, values, side, loc, *, missing="error"):
        """(ids array, model indices) of request ids; unknown ids are a 404, or index -1 with
        ``missing="mask"``."""
        m = self.model
        vocab = m.user_vocab_ if side == "user" else m.item_vocab_
        arr, big = self.ids(values, side, loc)
        idx = vocab.lookup(arr, unknown="mask")
        idx[big] = -1
        if missing == "error":
            bad = np.flatnonzero(idx < 0)
            if bad.size:
                raise self.unknown(side, [values[j] for j in bad.tolist()])
        return arr, idx

    def unknown(self, side, values):
        """The 404 for request ids (``values``, as sent) the model does not know."""
        vocab = self.model.user_vocab_ if side == "user" else self.model.item_vocab_
        shown = ", ".join(repr(v) for v in values[:5])
        return ClientError(404, f"unknown {side} id{'s' if len(values) > 1 else ''} {shown}"
                                f"{' and more' if len(values) > 5 else ''}: this model knows "
                                f"{len(vocab)} {side}s")

    def scored_items(self, ids, scores):
        out = []
        for i, s in zip(ids.tolist(), scores.tolist()):
            if math.isfinite(s):  # padding (fewer candidates than n) is left out
                out.append({"item": i, "score": s, "name": self.name_of.get(i)})
        return out


def _plain(obj):
    """JSON-safe copy of hyperparameters (non-finite floats become None, others strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    return str(obj)


def _finite(x):
    return x if math.isfinite(x) else None


def _coerce(texts, kind):
    """Label-file id strings -> ids of the model's type (non-numbers stay strings: unknown)."""
    if kind not in ("integer", "number"):
        return [str(t) for t in texts]
    out = []
    for t in texts:
        t = str(t).strip()
        try:
            out.append(int(t) if kind == "integer" else float(t))
        except ValueError:
            out.append(t)
    if kind == "integer" and any(not isinstance(v, int) or abs(v) > _INT64 for v in out):
        return [v if isinstance(v, int) and abs(v) <= _INT64 else -1 for v in out]
    return out


def read_labels(path):
    """Item id text -> name, read by :func:`mfrec.datasets.read_item_labels` (MovieLens
    ``u.item``, ``movies.dat``, ``movies.csv`` or any CSV of item id, name); the ids are matched
    to the model's id type per snapshot."""
    from ..datasets import read_item_labels
    return {str(k): str(v) for k, v in read_item_labels(path).items()}


# ---------------------------------------------------------------------- logs and metrics
def _event(event, **fields):
    """One JSON line for the service's own log."""
    return json.dumps({"time": _now(), "event": event, **fields}, default=str)


_second = [None, ""]  # the last whole second formatted by _now, and its text


def _now():
    """UTC time as ISO 8601 with milliseconds (``2026-12-01T03:39:47.123+00:00``).

    One line per request calls this: the date and time of day are formatted once per second.
    """
    t = time.time()
    sec = int(t)
    if sec != _second[0]:
        _second[1] = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = sec
    return f"{_second[1]}.{int((t - sec) * 1000):03d}+00:00"


class Metrics:
    """Prometheus metrics of one app (own registry: several apps in one process never mix)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mfrec_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "mfrec_http_request_duration_seconds", "Time to answer a request, by route",
            ["route"], registry=self.registry,
            buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.reloads = Counter("mfrec_model_reloads", "Model reloads by result", ["result"],
                               registry=self.registry)
        self.generation = Gauge("mfrec_model_generation", "Reloads since start, plus one",
                                registry=self.registry)
        self.size = Gauge("mfrec_model_size", "Users and items of the served model", ["what"],
                          registry=self.registry)
        self.batch = Histogram(
            "mfrec_recommend_batch_users", "Single-user recommend requests scored together "
            "(concurrent requests share one matrix product)", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64))
        self._children = {}  # (route, method, status) -> (counter, histogram): labels() is slow

    def request(self, route, method, status, seconds):
        """Count one answered request and its latency."""
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(route, method, str(status)),
                                           self.latency.labels(route))
        child[0].inc()
        child[1].observe(seconds)

    def model(self, snap):
        self.generation.set(snap.generation)
        self.size.labels("users").set(snap.info["n_users"])
        self.size.labels("items").set(snap.info["n_items"])

    def text(self):
        from prometheus_client import generate_latest
        return generate_latest(self.registry)


_quote = json.encoder.encode_basestring_ascii  # a str as a JSON string, as json.dumps writes it


def _access_line(client, method, path, route, status, ms, size):
    """One access-log line: the JSON object ``json.dumps`` would write for these fields, made
    by formatting (this runs once per request; the strings are quoted as JSON does)."""
    return (f'{{"time": "{_now()}", "client": {"null" if client is None else _quote(client)}, '
            f'"method": {_quote(method)}, "path": {_quote(path)}, "route": {_quote(route)}, '
            f'"status": {int(status)}, "ms": {float(ms)!r}, "bytes": {int(size)}}}')


_record_templates = {}  # thread id -> the fields of an access record made in that thread


def _access_record(line):
    """A :class:`logging.LogRecord` (level INFO, logger ``mfrec.serve.access``) for one access
    line, as ``Logger.makeRecord`` makes it, with less work per line.

    ``LogRecord.__init__`` finds the thread, process and file names again for every record, and
    ``Logger.info`` walks the stack to find the caller: most of the time of a log line when the
    line itself is cheap. Those fields are the same for every line written from one thread, so
    they are copied from a record made once per thread; the message and times are this
    line's. Handlers, levels and filters apply as to any record.
    """
    tid = threading.get_ident()
    template = _record_templates.get(tid)
    if template is None:
        first = access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, "", None,
                                      None)
        template = _record_templates[tid] = dict(vars(first))
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__.update(template)
    now = time.time()
    record.msg = line
    record.created = now
    record.msecs = (now - int(now)) * 1000
    record.relativeCreated = template["relativeCreated"] + (now - template["created"]) * 1000
    return record


def _merge_repeats(ids, idx, values, how):
    """Each item once: ``ids`` (raw), ``idx`` (model indices) and ``values`` of posted ratings,
    with an item listed more than once combined by ``how`` (``NewUserRequest.duplicates``).

    Returns ``(ids, values)``, items in order of first appearance.
    """
    uniq, first, inverse = np.unique(idx, return_index=True, return_inverse=True)
    if uniq.size == idx.size:
        return ids, values
    if how == "error":
        repeated = ids[first[np.bincount(inverse) > 1][0]]
        raise _invalid(["ratings"], f"item {_plain(repeated)!r} is listed more than once; each "
                                    f"item may be rated once with duplicates='error' (or pass "
                                    f"'last', 'mean' or 'sum')")
    if how == "last":
        last = np.zeros(uniq.size, np.int64)
        np.maximum.at(last, inverse, np.arange(idx.size))
        merged = values[last]
    else:
        merged = np.bincount(inverse, weights=values, minlength=uniq.size)
        if how == "mean":
            merged = merged / np.bincount(inverse, minlength=uniq.size)
    order = np.argsort(first, kind="stable")  # the client's order: the fold-in is the same
    return ids[first[order]], merged[order]


# ---------------------------------------------------------------------- the service state
class Service:
    """The model being served and how it is replaced."""

    def __init__(self, path, *, labels=None, token=None):
        self.path = Path(path)
        self.labels_path = labels
        self.labels = read_labels(labels) if labels else None
        self.token = token.strip().encode() if token and token.strip() else None
        self.metrics = Metrics()
        self.batcher = RecommendBatcher(self.metrics)
        self._lock = asyncio.Lock()
        snap = self._build(1)
        self.current = snap
        self.metrics.model(snap)

    def _build(self, generation):
        snap = Snapshot(self.path, self.labels, generation)
        snap.warm()
        return snap

    async def reload(self, reason):
        """Load, check and warm the file again; swap only if all of that worked.

        Returns ``(True, snapshot)`` or ``(False, message)``; on failure the old model keeps
        serving and the reason is logged.
        """
        async with self._lock:
            old = self.current
            try:
                # loading, checking and warming run beside the event loop, which goes on
                # answering from the old snapshot (small requests use NumPy, not Numba threads)
                snap = await asyncio.to_thread(self._build, old.generation + 1)
                for side in ("user", "item"):
                    was, now = getattr(old, f"{side}_kind"), getattr(snap, f"{side}_kind")
                    if was != now:  # the request schema (and every client) depends on it
                        raise ValueError(f"the new file's {side} ids are {now}s, the served "
                                         f"model's are {was}s; restart the service to change "
                                         f"id types")
            except Exception as exc:  # any failure of a new file leaves the old model serving
                msg = f"{type(exc).__name__}: {exc}"
                self.metrics.reloads.labels("failed").inc()
                log.error(_event("reload_failed", reason=reason, path=str(self.path), error=msg,
                                 serving_generation=old.generation))
                return False, msg
            self.current = snap  # requests in flight hold the old snapshot and finish on it
            self.metrics.reloads.labels("ok").inc()
            self.metrics.model(snap)
            log.info(_event("reloaded", reason=reason, path=str(self.path),
                            generation=snap.generation, n_users=snap.info["n_users"],
                            n_items=snap.info["n_items"]))
            return True, snap


class RecommendBatcher:
    """Concurrent single-user recommend requests, answered together.

    A request adds its user and waits for a flush, which answers each group of requests for
    the same snapshot and options with one call of the model (one id lookup, and for a catalogue
    too large for the CPU caches one matrix product, which reads the item factors once for the
    group instead of once per request). It runs on the event loop: nothing waits on a thread.

    When to flush: a connection answered by the last flush is expected back soon (a client
    keeping a connection open sends its next request when it has the answer). A flush runs
    as soon as every connection of the last flush has a request pending, or when the first
    pending request has waited ``linger`` seconds (a small share of what the last flush took,
    so a few milliseconds at most). Without that wait, requests that arrive while a flush
    computes form the next group by themselves, and groups stay as small as the gaps between
    clients (cohorts that never merge); with it, one client alone is answered at once, and
    clients under load are answered together.

    A small catalogue is scored one user at a time inside the call, so each answer is exactly
    what ``model.recommend([user])`` gives; in a large catalogue's shared product a score can
    differ from the lone call's in the last float32 bit (the ranking only where two items are
    that close). The best items are chosen by the compiled selection (the same answers as
    NumPy's in less than half the time: 5-16% more requests/s measured on the synthetic 5M
    model). Scoring on a worker thread instead, beside the event loop, was measured slower:
    groups half as large, and the products' fixed cost paid twice as often.

    Each request keeps the snapshot it started on, so requests in flight during a reload finish
    on the old model.

    Parameters
    ----------
    metrics : Metrics
        Batch sizes go to ``mfrec_recommend_batch_users``.
    """

    #: the longest a request waits for others (seconds) ...
    max_linger = 0.003
    #: ... and the share of the last flush's time it may wait
    linger_share = 0.5

    def __init__(self, metrics):
        self.metrics = metrics
        self._reset(None)

    def _reset(self, loop):
        """Empty state, on ``loop`` (what is pending on another loop can never be flushed)."""
        self.loop = loop
        self.pending = []
        self.expected = set()  # connections of the last flush with no request pending yet
        self.flush_handle = None
        self.timed = False      # whether the scheduled flush is the linger timer
        self.last_cost = 0.0    # seconds the last flush took

    def submit(self, snap, user_id, raw, n, exclude_seen, connection=None):
        """A future of ``(ids, scores)``, one row of :meth:`FactorModel.recommend`, for the
        user ``user_id`` (an array of one id, as :meth:`Snapshot.ids` gives it; ``raw`` is the id
        as sent, for the 404 message). ``connection`` (the ASGI ``client``) tells the flush whom
        to wait for."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # served from another loop (a restarted server): start over
            self._reset(loop)
        future = loop.create_future()
        if connection is not None:
            connection = tuple(connection)  # (ASGI allows any iterable)
        self.pending.append((snap, n, exclude_seen, user_id, raw, future, connection))
        self.expected.discard(connection)
        if self.flush_handle is None:
            linger = min(self.max_linger, self.linger_share * self.last_cost)
            if self.expected and linger > 0:
                self.flush_handle, self.timed = loop.call_later(linger, self.flush), True
            else:
                # the next turn of the loop: requests read in this turn join
                self.flush_handle, self.timed = loop.call_soon(self.flush), False
        elif self.timed and not self.expected:  # everyone is back: no need to wait
            self.flush_handle.cancel()
            self.flush_handle, self.timed = loop.call_soon(self.flush), False
        return future

    def flush(self):
        """Answer everything pending, one model call per (snapshot, n, exclude_seen) group."""
        start = time.perf_counter()
        pending, self.pending, self.flush_handle = self.pending, [], None
        groups = {}
        for entry in pending:
            groups.setdefault((id(entry[0]), entry[1], entry[2]), []).append(entry)
        for group in groups.values():
            self._answer(group)
        self.expected = {e[6] for e in pending if e[6] is not None}
        self.last_cost = time.perf_counter() - start

    def _answer(self, group):
        """Set the result (or error) of every request of one group."""
        snap, n, exclude_seen = group[0][:3]
        try:
            idx = snap.model.user_vocab_.lookup(np.concatenate([e[3] for e in group]),
                                                unknown="mask")
            known = idx >= 0
            ids, scores = snap.model._recommend_rows(idx[known], n, exclude_seen,
                                                     compiled=True)
            self.metrics.batch.observe(len(group))
        except Exception as exc:  # every request of the group gets the error
            if isinstance(exc, ValueError):  # as _ask: a client's values, not a server fault
                exc = ClientError(422, [{"type": "value_error", "loc": ["body"],
                                         "msg": str(exc)}])
            for e in group:
                if not e[5].done():
                    e[5].set_exception(exc)
            return
        row = 0
        for e, ok in zip(group, known.tolist()):
            future = e[5]
            if not future.done():  # (a cancelled request)
                if ok:
                    future.set_result((ids[row], scores[row]))
                else:
                    future.set_exception(snap.unknown("user", [e[4]]))
            row += ok


# ---------------------------------------------------------------------- middleware
_PUBLIC = ("/api/health", "/", "/index.html")
_PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
                                 b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class ServiceMiddleware:
    """Pure ASGI: token check, body cap, security headers, metrics and the access log; and the
    fast paths of the busiest routes.

    ``fast`` maps ``(method, path)`` to a handler ``(scope, receive, send) -> None | receive``
    that answers the request itself (None), or gives it to the application with a ``receive``
    that replays what the handler read (anything it does not answer exactly as the
    application would: odd bodies, validation errors, options it does not handle).
    """

    def __init__(self, app, service, routes, fast=None):
        self.app = app
        self.service = service
        self.routes = routes
        self.fast = fast or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"]
        status = [500]
        sent = [0]
        recorded = [False]

        def record():
            # before the last byte goes out: a client's next request on the connection may be
            # served before this task resumes, and must already see this one counted
            recorded[0] = True
            elapsed = time.perf_counter() - start
            route = path if path in self.routes else (
                "/static" if path.startswith("/static/") else "unmatched")
            self.service.metrics.request(route, scope["method"], status[0], elapsed)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.handle(_access_record(_access_line(
                    client[0] if client else None, scope["method"], path, route, status[0],
                    round(elapsed * 1e3, 3), sent[0])))

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + _PAGE_HEADERS
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    record()
            await send(message)

        try:
            error = self._reject(scope, path)
            if error is not None:
                await _send_json(send_wrapped, *error)
                return
            fast = self.fast.get((scope["method"], path))
            if fast is not None:
                receive = await fast(scope, receive, send_wrapped)
                if receive is None:
                    return
            await self.app(scope, self._capped(receive), send_wrapped)
        finally:
            if not recorded[0]:  # failed before the response ended (a 500 sent outside)
                record()

    def _reject(self, scope, path):
        token = self.service.token
        if token is not None and path not in _PUBLIC and not path.startswith("/static/"):
            given = b""
            for k, v in scope["headers"]:
                if k == b"authorization":
                    given = v
                    break
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), token):
                return 401, {"detail": "missing or wrong bearer token (send 'Authorization: "
                                       "Bearer <token>')"}, [(b"www-authenticate", b"Bearer")]
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    return 400, {"detail": "invalid Content-Length header"}, []
                if length > LIMITS.max_body:
                    return 413, {"detail": f"request body of {length} bytes is over the limit of "
                                           f"{LIMITS.max_body} bytes"}, []
        return None

    @staticmethod
    def _capped(receive):
        # a body sent without Content-Length (chunked) is counted as it arrives
        seen = [0]

        async def wrapped():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > LIMITS.max_body:
                    raise HTTPException(413, f"request body is over the limit of "
                                             f"{LIMITS.max_body} bytes")
            return message
        return wrapped


async def _send_json(send, status, body, headers=()):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})


async def _read_json_body(scope, receive):
    """The body of a request with a Content-Length and a JSON content type, for a fast path.

    Returns ``(body, messages)``: ``body`` is None when the request is not of that kind or the
    client went away; ``messages`` are the ASGI messages read (see :func:`_replay`).
    """
    length = ctype = None
    for k, v in scope["headers"]:
        if k == b"content-length":
            length = v
        elif k == b"content-type":
            ctype = v
    # anything else (chunked bodies, other or missing content types) is the application's:
    # it has the rules for them, and the fast path must answer exactly as it would
    if length is None or ctype is None or ctype.partition(b";")[0].strip().lower() != \
            b"application/json":
        return None, []
    messages, chunks = [], []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def _replay(messages, receive):
    """A ``receive`` that gives ``messages`` again, then reads on."""
    pending = list(messages)

    async def replayed():
        if pending:
            return pending.pop(0)
        return await receive()
    return replayed


def _ask(method, *args, **kwargs):
    """Call a model method on already-validated input; a ``ValueError`` it still raises is
    about the values a client sent (the library's own checks), so it is a 422, not a 500."""
    try:
        return method(*args, **kwargs)
    except ValueError as exc:
        raise ClientError(422, [{"type": "value_error", "loc": ["body"], "msg": str(exc)}]) \
            from None


def _json(obj):
    return Response(json.dumps(obj, allow_nan=False).encode(), media_type="application/json")


# ---------------------------------------------------------------------- the app
_ERRORS = {
    400: {"model": Message, "description": "Malformed request"},
    401: {"model": Message, "description": "Missing or wrong bearer token (when one is set)"},
    404: {"model": Message, "description": "Unknown user or item id"},
    413: {"model": Message, "description": "Request body over the size limit"},
}


def create_app(model_path, *, labels=None, token=None):
    """The ASGI application serving one model file.

    Parameters
    ----------
    model_path : str or Path
        A file written by ``model.save``; loaded with :func:`mfrec.load`, checked and warmed up
        here (a bad file raises before the app exists). Reloads read the same path.
    labels : str or Path, optional
        Item names: MovieLens ``u.item`` or any CSV of item id, name.
    token : str, optional
        When given, every endpoint but ``/api/health`` and the page's static files needs
        ``Authorization: Bearer <token>``.

    Returns
    -------
    fastapi.FastAPI
        ``app.state.service`` holds the :class:`Service` (the current model, reload, metrics).
    """
    service = Service(model_path, labels=labels, token=token)
    snap = service.current
    R = request_models(snap.user_kind, snap.item_kind, **{
        f"{side}_example": snap.info["examples"][side] for side in ("user", "item")})

    @asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        tasks = set()  # the loop keeps only weak references to tasks

        def on_hup():
            task = loop.create_task(service.reload("SIGHUP"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        try:  # only the main thread may handle signals (not so when a test runs the server)
            loop.add_signal_handler(signal.SIGHUP, on_hup)
        except (ValueError, RuntimeError, NotImplementedError, AttributeError):
            pass
        yield

    app = FastAPI(title="mfrec", version=__version__, docs_url=None, redoc_url=None,
                  lifespan=lifespan, responses=_ERRORS,
                  description="Recommendations from a fitted mfrec model. Ids are JSON values of "
                              "the model's id type (see /api/info: user_id_type, item_id_type).")
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        # FastAPI's own handler echoes the input, which may hold NaN (Python's JSON reads it):
        # that would fail to encode and turn a client's mistake into a 500
        detail = _plain(jsonable_encoder(exc.errors(), custom_encoder={float: _finite}))
        return Response(json.dumps({"detail": detail}, allow_nan=False).encode(),
                        status_code=422, media_type="application/json")

    @app.exception_handler(ClientError)
    async def client_error(request, exc):
        return Response(json.dumps({"detail": exc.detail}).encode(), status_code=exc.status,
                        media_type="application/json")

    def rank_args(snap, req, loc=()):
        items = exclude = None
        if req.items is not None:
            items, _ = snap.index(req.items, "item", [*loc, "items"])
        if req.exclude:
            exclude, _ = snap.index(req.exclude, "item", [*loc, "exclude"])
        return {"n": req.n, "exclude_seen": req.exclude_seen, "items": items, "exclude": exclude}

    @app.get("/api/health", response_model=Health, tags=["service"])
    async def health():
        """Liveness; never needs the token."""
        return _json({"status": "ok", "generation": service.current.generation})

    @app.get("/api/info", tags=["service"])
    async def info() -> dict:
        """The served model: class, feedback kind, sizes, id types, training data,
        hyperparameters, file, reload generation, request limits."""
        return _json(service.current.info)

    @app.post("/api/recommend", response_model=Recommendations, tags=["recommend"])
    async def recommend(req: R.RecommendRequest):
        """Top-``n`` items for a user known to the model, best first."""
        snap = service.current
        users, _ = snap.index([req.user], "user", ["user"])
        ids, scores = _ask(snap.model.recommend, users, **rank_args(snap, req))
        return _json({"user": req.user, "items": snap.scored_items(ids[0], scores[0])})

    @app.post("/api/recommend/batch", response_model=BatchRecommendations, tags=["recommend"])
    async def recommend_batch(req: R.BatchRequest):
        """Top-``n`` items for each of a batch of known users."""
        snap = service.current
        if len(req.users) * req.n > LIMITS.max_batch_results:
            raise _invalid(["n"], f"len(users) * n = {len(req.users) * req.n} is over the limit "
                                  f"of {LIMITS.max_batch_results}", req.n)
        users, _ = snap.index(req.users, "user", ["users"])
        ids, scores = _ask(snap.model.recommend, users, **rank_args(snap, req))
        return _json({"results": [{"user": u, "items": snap.scored_items(i, s)}
                                  for u, i, s in zip(req.users, ids, scores)]})

    @app.post("/api/recommend/new", response_model=NewUserRecommendations, tags=["recommend"])
    async def recommend_new(req: R.NewUserRequest):
        """Top-``n`` items for a user the model has not seen, from their ratings or interactions
        (folded in against the fixed item factors, no refit)."""
        snap = service.current
        if not snap.capabilities["fold_in"]:
            raise ClientError(422, f"the served {snap.info['class']} model cannot fold in new "
                                   f"users")
        items = [r.item for r in req.ratings]
        arr, idx = snap.index(items, "item", ["ratings"],
                              missing="mask" if req.unknown_items == "ignore" else "error")
        keep = idx >= 0
        values = np.asarray([float(r.rating) for r in req.ratings], dtype=np.float64)[keep]
        arr = arr[keep]
        arr, values = _merge_repeats(arr, idx[keep], values, req.duplicates)
        folded = _ask(snap.model.fold_in, (arr, values))
        ids, scores = _ask(snap.model.recommend, folded, **rank_args(snap, req))
        if not (np.isfinite(folded.factors).all() and np.isfinite(folded.bias).all()
                and not np.isnan(scores).any() and not np.isposinf(scores).any()):
            lo, hi = snap.info["training"]["rating_range"] or (None, None)
            raise _invalid(["ratings"], f"these ratings make the new user's scores overflow; "
                                        f"give ratings on the model's scale (training ratings "
                                        f"span {lo} to {hi})")
        return _json({"items": snap.scored_items(ids[0], scores[0]),
                      "n_ratings_used": int(arr.size)})

    @app.post("/api/predict", response_model=Predictions, tags=["recommend"])
    async def predict(req: R.PredictRequest):
        """Predicted ratings (scores, for implicit models) of (user, item) pairs."""
        snap = service.current
        missing = "mask" if req.unknown == "fallback" else "error"
        users, _ = snap.index([p.user for p in req.pairs], "user", ["pairs", "user"],
                              missing=missing)
        items, _ = snap.index([p.item for p in req.pairs], "item", ["pairs", "item"],
                              missing=missing)
        values = _ask(snap.model.predict, users, items, clip=req.clip)
        return _json({"predictions": [{"user": p.user, "item": p.item, "rating": v}
                                      for p, v in zip(req.pairs, values.tolist())]})

    @app.post("/api/similar/items", response_model=SimilarItems, tags=["explore"])
    async def similar_items(req: R.SimilarItemsRequest):
        """The ``n`` items nearest to an item (cosine of the item factors), itself left out."""
        snap = service.current
        if not snap.capabilities["similar"]:
            raise ClientError(422, f"the served {snap.info['class']} model has no similarity")
        items, _ = snap.index([req.item], "item", ["item"])
        ids, scores = _ask(snap.model.similar_items, items, n=req.n)
        return _json({"item": req.item, "items": snap.scored_items(ids[0], scores[0])})

    @app.post("/api/similar/users", response_model=SimilarUsers, tags=["explore"])
    async def similar_users(req: R.SimilarUsersRequest):
        """The ``n`` users nearest to a user (cosine of the user factors), itself left out."""
        snap = service.current
        if not snap.capabilities["similar"]:
            raise ClientError(422, f"the served {snap.info['class']} model has no similarity")
        users, _ = snap.index([req.user], "user", ["user"])
        ids, scores = _ask(snap.model.similar_users, users, n=req.n)
        return _json({"user": req.user, "users": [
            {"user": u, "score": s} for u, s in zip(ids[0].tolist(), scores[0].tolist())
            if math.isfinite(s)]})

    @app.post("/api/user", response_model=UserHistory, tags=["explore"])
    async def user(req: R.UserRequest):
        """A known user's training items (what they rated or used), highest rating first."""
        snap = service.current
        _, idx = snap.index([req.user], "user", ["user"])
        u = int(idx[0])
        ui = snap.user_items
        s, e = ui.indptr[u], ui.indptr[u + 1]
        cols, vals = ui.indices[s:e], ui.data[s:e]
        order = np.lexsort((-snap.item_counts[cols], -vals))[:req.limit]
        return _json({"user": req.user, "n_items": int(e - s), "items": [
            {"item": snap.item_ids[c], "rating": v, "name": snap.names[c]}
            # float32 values by their shortest text: 3.2, not 3.2000000476837
            for c, v in zip(cols[order].tolist(), map(float, vals[order].astype(str)))]})

    @app.post("/api/item", response_model=ItemDetails, tags=["explore"])
    async def item(req: R.ItemRequest):
        """One item: its label, how often it was rated or used, its mean rating."""
        snap = service.current
        _, idx = snap.index([req.item], "item", ["item"])
        i = int(idx[0])
        mean = float(snap.item_means[i])
        return _json({"item": req.item, "name": snap.names[i],
                      "n_ratings": int(snap.item_counts[i]),
                      "mean_rating": mean if math.isfinite(mean) and not snap.implicit else None})

    @app.get("/api/items/search", response_model=SearchResults, tags=["explore"])
    async def search(q: Annotated[str, Query(max_length=200)] = "",
                     limit: Annotated[int, Query(ge=1, le=100)] = 20):
        """Items whose label contains ``q`` (case-insensitive) or whose id is ``q``; names that
        start with ``q`` first, then by how often the item was used. An empty ``q`` lists the
        most used items."""
        snap = service.current
        needle = q.strip().lower()
        found = []
        if needle:
            exact = _coerce([q.strip()], snap.item_kind)[0]
            if isinstance(exact, (int, str)) and (snap.item_kind != "integer" or
                                                  isinstance(exact, int)):
                i = int(snap.index([exact], "item", ["q"], missing="mask")[1][0])
                if i >= 0:
                    found.append(i)
            lower = snap.names_lower
            hits = [i for i, s in enumerate(lower) if needle in s]
            counts = snap.item_counts
            hits.sort(key=lambda i: (not lower[i].startswith(needle), -counts[i], i))
            found += [i for i in hits if i not in found[:1]]
        else:
            found = snap.by_popularity[:limit].tolist()
        return _json({"query": q, "items": [
            {"item": snap.item_ids[i], "name": snap.names[i], "n_ratings": int(snap.item_counts[i])}
            for i in found[:limit]]})

    @app.post("/api/admin/reload", response_model=Reloaded, tags=["service"],
              responses={409: {"model": Message,
                               "description": "The file failed to load or check; the old model "
                                              "still serves"}})
    async def reload():
        """Load the model file again (as SIGHUP does). The new model is loaded and checked
        before it replaces the old one; requests in flight finish on the old one."""
        ok, result = await service.reload("admin endpoint")
        if not ok:
            raise ClientError(409, f"reload failed, still serving generation "
                                   f"{service.current.generation}: {result}")
        return _json({"reloaded": True, "generation": result.generation,
                      "n_users": result.info["n_users"], "n_items": result.info["n_items"]})

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST
        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    if token:
        original = app.openapi

        def openapi():
            schema = original()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            for path, ops in schema["paths"].items():
                if path not in _PUBLIC:
                    for op in ops.values():
                        op["security"] = [{"bearer": []}]
            return schema
        app.openapi = openapi

    # The fast paths of the busiest routes: the same answers without FastAPI's per-request
    # machinery (routing, dependency solving, content-type parsing), which costs more than
    # the whole answer for a small model. The routes above stay: they define the schema and
    # answer everything the fast paths hand back.
    async def fast_health(scope, receive, send):
        await _send_json(send, 200, {"status": "ok", "generation": service.current.generation})

    # the options the fast recommend handles: anything else (items, exclude, unknown fields)
    # goes to the route
    simple = frozenset(("user", "n", "exclude_seen"))

    async def fast_recommend(scope, receive, send):
        body, messages = await _read_json_body(scope, receive)
        try:
            obj = json.loads(body) if body else None
            if type(obj) is not dict or not obj.keys() <= simple:
                return _replay(messages, receive)
            req = R.RecommendRequest.model_validate(obj)  # as FastAPI validates the body
        except (ValueError, RecursionError):  # bad JSON, failed validation: the route answers
            return _replay(messages, receive)
        snap = service.current
        try:
            arr, big = snap.ids([req.user], "user", ["user"])
            if big:  # beyond int64: no model holds it
                raise snap.unknown("user", [req.user])
            ids, scores = await service.batcher.submit(snap, arr, req.user, req.n,
                                                       req.exclude_seen, scope.get("client"))
        except ClientError as exc:
            await _send_json(send, exc.status, {"detail": exc.detail})
            return None
        data = json.dumps({"user": req.user, "items": snap.scored_items(ids, scores)},
                          allow_nan=False).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
        return None

    fast = {("GET", "/api/health"): fast_health, ("POST", "/api/recommend"): fast_recommend}
    routes = {r.path for r in app.routes if hasattr(r, "methods")}
    app.add_middleware(ServiceMiddleware, service=service, routes=routes, fast=fast)
    return app


# ---------------------------------------------------------------------- running
class _JsonLines(logging.Formatter):
    def format(self, record):
        msg = record.getMessage()
        if msg.startswith("{"):
            return msg
        return json.dumps({"time": _now(), "level": record.levelname.lower(),
                           "logger": record.name, "message": msg})


def configure_logging(stream=None, *, access=True):
    """JSON lines on ``stream`` (stderr) for the service's log and, with ``access``, one line
    per request."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonLines())
    for name in ("mfrec.serve", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(logging.INFO)
        lg.propagate = False
    access_log.setLevel(logging.INFO if access else logging.WARNING)


def run(model_path, *, host="127.0.0.1", port=8000, labels=None, token=None, access_log=True):
    """Serve ``model_path`` on ``host:port`` until SIGINT or SIGTERM; SIGHUP reloads the file.

    Parameters
    ----------
    model_path : str or Path
    host : str, default="127.0.0.1"
    port : int, default=8000
    labels : str or Path, optional
        Item names (MovieLens ``u.item`` or a CSV of item id, name).
    token : str, optional
        Bearer token required by every endpoint but health.
    access_log : bool, default=True
        One JSON line per request on stderr.
    """
    import uvicorn

    from threadpoolctl import threadpool_limits

    configure_logging(access=access_log)
    # requests are small and run side by side: a multithreaded BLAS inside one only contends
    threadpool_limits(limits=1, user_api="blas")
    app = create_app(model_path, labels=labels, token=token)
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(_event("no_token", host=host,
                           message="serving beyond loopback without a token"))
    # uvicorn's faster HTTP parser and event loop when installed (the serve extra brings them)
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                            http=http, loop=loop, server_header=False, lifespan="on")
    log.info(_event("serving", model=str(model_path), url=f"http://{host}:{port}/",
                    pid=os.getpid(), token=bool(token), http=http, loop=loop))
    uvicorn.Server(config).run()
