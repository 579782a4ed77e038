"""Top-N for every user, streamed to Parquet in chunks (``mfrec recommend --all-users``)."""
from __future__ import annotations

import numpy as np

__all__ = ["recommend_all"]

#: users scored per chunk when ``chunk_size`` is not given; with n=10 a chunk's output is
#: 65,536 x 10 rows (a few MB), the exact kernel tiles the catalogue internally and the index
#: holds (users x candidates) ids and scores for at most 32,768 users at a time (tens of MB), so
#: memory is bounded by the chunk, never by the number of users.
DEFAULT_CHUNK = 65_536


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is part of the test extra
        raise ImportError("writing recommendations to Parquet needs pyarrow: "
                          "pip install 'mfrec[parquet]'") from e
    return pa, pq


def _schema(pa, model):
    """user, rank, item, score with the id columns typed as the model's vocabularies."""
    def id_type(vocab):
        kind = vocab.ids.dtype.kind
        return (pa.from_numpy_dtype(vocab.ids.dtype) if kind in "iuf" else pa.string())
    return pa.schema([("user", id_type(model.user_vocab_)), ("rank", pa.int32()),
                      ("item", id_type(model.item_vocab_)), ("score", pa.float32())])


def _id_array(pa, ids):
    """A pyarrow array of raw ids, keeping their type (ints stay ints, strings strings)."""
    if ids.dtype.kind == "O":
        return pa.array(ids.tolist())
    return pa.array(ids)


def recommend_all(model, output, *, n=10, users=None, exclude_seen=True, chunk_size=None,
                  index=None, progress=False):
    """Write the top-``n`` items of every user to a Parquet file, chunk by chunk.

    Parameters
    ----------
    model : fitted mfrec model
    output : str or os.PathLike
        Parquet file to write: columns ``user``, ``rank`` (1 = best), ``item``, ``score``
        (float32), ``n`` rows per user, users in vocabulary order. Padding (a user with fewer
        than ``n`` candidates) is not written. Written atomically: a temporary file in the same
        folder is renamed over ``output`` once complete.
    n : int, default=10
        Items per user.
    users : array-like of raw user ids, optional
        Only these users (default: every user of the model).
    exclude_seen : bool, default=True
        Leave out the items each user interacted with in training.
    chunk_size : int, optional
        Users scored and written at a time (default :data:`DEFAULT_CHUNK`). Memory is bounded by
        the chunk, not by the number of users.
    index : mfrec.index.ItemIndex, optional
        An approximate index built from this very model object (``ItemIndex().fit(model)`` or
        ``ItemIndex.load(path, model)``): much faster on large catalogues, with the index's
        recall. Default: exact scoring.
    progress : bool, default=False
        A progress bar over users.

    Returns
    -------
    int
        Number of users written.

    Raises
    ------
    ValueError
        If ``index`` was built from another model object.
    """
    from ._validation import check_bool, check_int

    model._check_fitted()
    n = check_int("n", n, low=1)
    exclude_seen = check_bool("exclude_seen", exclude_seen)
    chunk = check_int("chunk_size", DEFAULT_CHUNK if chunk_size is None else chunk_size, low=1)
    if users is None:
        uidx = np.arange(model.n_users_, dtype=np.int64)
    else:
        uidx = np.asarray(model.user_vocab_.lookup(users), dtype=np.int64)
    pa, pq = _arrow()
    from .persist import save_target, write_atomically
    target, mode = save_target(output)  # only a regular file is ever replaced
    if index is not None:
        from .models.base import _ids_with_padding
        index._check_built()
        if index._model is not model:
            raise ValueError("index was built from another model object; build it with "
                             "ItemIndex().fit(model) or ItemIndex.load(path, model)")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=uidx.size, unit="user", desc="recommend")

    def write(fh):
        writer = pq.ParquetWriter(fh, _schema(pa, model))
        try:
            for start in range(0, uidx.size, chunk):
                part = uidx[start:start + chunk]
                raw = model.user_vocab_.to_ids(part)
                if index is None:
                    ids, scores = model.recommend(raw, n=n, exclude_seen=exclude_seen)
                else:  # by index: no round trip through the raw ids
                    idx, scores = index._recommend_indices(part, n, exclude_seen)
                    ids = _ids_with_padding(model.item_vocab_, idx)
                keep = np.isfinite(scores)
                ranks = np.broadcast_to(np.arange(1, scores.shape[1] + 1, dtype=np.int32),
                                        scores.shape)
                writer.write_table(pa.table({
                    "user": _id_array(pa, np.repeat(raw, keep.sum(axis=1))),
                    "rank": pa.array(ranks[keep]),
                    "item": _id_array(pa, ids[keep]),
                    "score": pa.array(scores[keep].astype(np.float32)),
                }, schema=writer.schema))
                if bar is not None:
                    bar.update(part.size)
        finally:
            writer.close()

    try:
        write_atomically(target, mode, write)
    finally:
        if bar is not None:
            bar.close()
    return int(uidx.size)
