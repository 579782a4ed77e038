"""File formats: separators, headers, column names, pipes and stdin, chunked reading, and errors
that name the line."""
import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

import mfrec
from mfrec import io as mio
from mfrec.io import read_frame, read_ratings

ROWS = [(1, 10, 4.0, 100), (1, 20, 3.0, 200), (2, 10, 5.0, 300)]
ENGINES = ["arrow", "pandas"]


def _write(path, text):
    path.write_text(text)
    return path


def _triples(r):
    """Sorted (user, item, rating) triples of a Ratings, in raw ids."""
    f = r.to_frame()
    return sorted(zip(f.user.tolist(), f.item.tolist(), f.rating.tolist()))


def _big_text(n=1000, sep="\t"):
    # 1000 rows of about 16 bytes: far more than any sniffing buffer (4 KiB dropped 744 rows)
    return "".join(f"{u}{sep}{1000 + (u * 7) % 97}{sep}{1 + u % 5}{sep}{900000000 + u}\n"
                   for u in range(n))


# ---------------------------------------------------------------------- layouts
@pytest.mark.parametrize("engine", ENGINES)
def test_headerless_tsv_four_columns(tmp_path, engine):
    p = _write(tmp_path / "u.data", "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS))
    f = read_frame(p, engine=engine)
    assert list(f.columns) == ["user", "item", "rating", "timestamp"]
    assert f.values.tolist() == [list(r) for r in ROWS]
    r = read_ratings(p, engine=engine)
    assert r.source_columns == {"user": "column 1", "item": "column 2", "rating": "column 3",
                                "timestamp": "column 4"}
    assert r.user_vocab.ids.dtype.kind == "i" and r.timestamps.tolist() == [100, 200, 300]


def test_headerless_csv_three_columns(tmp_path):
    p = _write(tmp_path / "r.csv", "".join(f"{u},{i},{r}\n" for u, i, r, _ in ROWS))
    assert list(read_frame(p).columns) == ["user", "item", "rating"]
    assert _triples(read_ratings(p)) == [(u, i, r) for u, i, r, _ in ROWS]


def test_headerless_with_five_columns_is_refused(tmp_path):
    p = _write(tmp_path / "r.csv", "1,2,3,4,5\n")
    with pytest.raises(ValueError, match="no header and 5 column.*names="):
        read_ratings(p)
    assert read_ratings(p, names=["user", "item", "rating", "timestamp", "x"]).nnz == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_movielens_dat(tmp_path, engine):
    p = _write(tmp_path / "ratings.dat", "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS))
    f = read_frame(p, engine=engine)
    assert list(f.columns) == ["user", "item", "rating", "timestamp"]
    assert f["item"].tolist() == [10, 20, 10] and f["timestamp"].tolist() == [100, 200, 300]


def test_movielens_dat_bad_line_and_string_ids(tmp_path):
    p = _write(tmp_path / "ratings.dat", "1::2::3::4\n1::5::3\n")
    with pytest.raises(ValueError, match=r"line 2 has 3 fields, expected 4"):
        read_ratings(p)
    p = _write(tmp_path / "s.dat", "a::x::3::4\nb::y::5::6\n")
    assert _triples(read_ratings(p)) == [("a", "x", 3.0), ("b", "y", 5.0)]


def test_movielens_csv_header(tmp_path):
    p = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" +
               "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS))
    r = read_ratings(p)
    assert (r.n_users, r.n_items, r.nnz) == (2, 2, 3)
    assert r.source_columns == {"user": "userId", "item": "movieId", "rating": "rating",
                                "timestamp": "timestamp"}


@pytest.mark.parametrize("engine", ENGINES)
def test_string_ids_without_header(tmp_path, engine):
    p = _write(tmp_path / "s.tsv", "alice\tbook\t5\nbob\tpen\t3\n")
    assert read_frame(p, engine=engine)["user"].tolist() == ["alice", "bob"]
    r = read_ratings(p, engine=engine)
    assert list(r.user_vocab.ids) == ["alice", "bob"] and list(r.item_vocab.ids) == ["book", "pen"]


def test_two_columns_are_interactions(tmp_path):
    p = _write(tmp_path / "clicks.csv", "1,10\n1,20\n2,10\n")
    r = read_ratings(p)
    assert r.nnz == 3 and set(r.values.tolist()) == {1.0}
    assert r.source_columns["rating"] is None


def test_explicit_names_and_sep(tmp_path):
    p = _write(tmp_path / "x.txt", "10;1;4\n20;1;3\n")
    f = read_frame(p, sep=";", names=["item", "user", "rating"])
    assert f["user"].tolist() == [1, 1] and f["item"].tolist() == [10, 20]


def test_whitespace_separated(tmp_path):
    p = _write(tmp_path / "w.txt", "1  10   4\n2 20 3\n")
    assert _triples(read_ratings(p)) == [(1, 10, 4.0), (2, 20, 3.0)]


def test_parquet(tmp_path):
    df = pd.DataFrame(ROWS, columns=["userId", "item_id", "score", "ts"]).astype(
        {"userId": np.int32, "item_id": np.int32})
    df.to_parquet(tmp_path / "r.parquet")
    r = read_ratings(tmp_path / "r.parquet")
    assert r.nnz == 3 and r.user_vocab.ids.dtype == np.int32  # integer ids stay integer
    assert r.source_columns == {"user": "userId", "item": "item_id", "rating": "score",
                                "timestamp": "ts"}
    # Parquet is known by its first bytes too, whatever the name
    os.rename(tmp_path / "r.parquet", tmp_path / "r.bin")
    assert read_ratings(tmp_path / "r.bin") == r


def test_parquet_string_ids_and_nulls(tmp_path):
    df = pd.DataFrame({"user": ["b", "a", "b"], "item": ["x", "y", "y"], "rating": [1.0, 2, 3]})
    df.to_parquet(tmp_path / "s.parquet")
    r = read_ratings(tmp_path / "s.parquet")
    assert list(r.user_vocab.ids) == ["a", "b"] and _triples(r) == [
        ("a", "y", 2.0), ("b", "x", 1.0), ("b", "y", 3.0)]
    df.loc[2, "user"] = None
    df.to_parquet(tmp_path / "n.parquet")
    with pytest.raises(ValueError, match=r"column 'user' is empty \(null\) at row 3"):
        read_ratings(tmp_path / "n.parquet")


# ---------------------------------------------------------------------- column names (item 7)
@pytest.mark.parametrize("header, expected", [
    ("userId,movieId,rating,timestamp", ("userId", "movieId", "rating", "timestamp")),
    ("user_id,item_id,score", ("user_id", "item_id", "score", None)),
    ("UserID,ItemID,Stars,Time", ("UserID", "ItemID", "Stars", "Time")),
    ("customer_id,product_id,count", ("customer_id", "product_id", "count", None)),
    ("uid,iid,weight", ("uid", "iid", "weight", None)),
    ("when,film,viewer,score", ("viewer", "film", "score", "when")),
    ("timestamp,rating,item,user", ("user", "item", "rating", "timestamp")),
])
def test_common_column_spellings(tmp_path, header, expected):
    cols = header.split(",")
    values = {"user": 7, "item": 3, "rating": 4, "timestamp": 999}
    role_of = dict(zip(expected, ("user", "item", "rating", "timestamp")))
    row = [values[role_of[c]] if c in role_of else 0 for c in cols]
    p = _write(tmp_path / "h.csv", header + "\n" + ",".join(map(str, row)) + "\n")
    r = read_ratings(p)
    assert r.source_columns == dict(zip(("user", "item", "rating", "timestamp"), expected))
    assert _triples(r) == [(7, 3, 4.0)]
    # the same names in a DataFrame
    r2 = mfrec.as_ratings(pd.DataFrame([row], columns=cols))
    assert _triples(r2) == [(7, 3, 4.0)] and r2.source_columns == r.source_columns


def test_unrecognisable_header_is_refused(tmp_path):
    p = _write(tmp_path / "h.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match=r"cannot tell which columns.*\['a', 'b', 'c'\].*names="):
        read_ratings(p)
    r = read_ratings(p, user_col="b", item_col="a", rating_col="c")
    assert _triples(r) == [(2, 1, 3.0)]
    assert _triples(read_ratings(p, names=["user", "item", "rating"], header=True)) == [(1, 2, 3.0)]


def test_unrecognised_extra_column_without_rating_is_refused(tmp_path):
    p = _write(tmp_path / "h.csv", "user,item,stuff\n1,2,3\n")
    with pytest.raises(ValueError, match=r"no rating column recognised.*\['stuff'\]"):
        read_ratings(p)
    assert read_ratings(p, rating_col=None).values.tolist() == [1.0]
    assert read_ratings(p, rating_col="stuff").values.tolist() == [3.0]


def test_ambiguous_columns_are_refused(tmp_path):
    p = _write(tmp_path / "h.csv", "user_id,customer_id,item,rating\n1,2,3,4\n")
    with pytest.raises(ValueError, match=r"several columns .* users: \['user_id', 'customer_id'\]"):
        read_ratings(p)


# ---------------------------------------------------------------------- pipes and stdin (item 6)
def test_pipe_reads_every_byte(tmp_path):
    text = _big_text()
    r_fd, w_fd = os.pipe()

    def feed():
        with os.fdopen(w_fd, "w") as w:
            w.write(text)

    t = threading.Thread(target=feed)
    t.start()
    try:
        r = read_ratings(f"/dev/fd/{r_fd}")
    finally:
        t.join()
        os.close(r_fd)
    assert r.nnz == 1000 and r.n_users == 1000
    assert r == read_ratings(_write(tmp_path / "f.tsv", text))


def test_binary_file_object_and_stdin(tmp_path):
    p = _write(tmp_path / "f.tsv", _big_text())
    with open(p, "rb") as f:
        assert read_ratings(f).nnz == 1000
    code = "import mfrec.io as m; r = m.read_ratings('-'); print(r.nnz, r.n_users)"
    with open(p, "rb") as f:
        out = subprocess.run([sys.executable, "-c", code], stdin=f, capture_output=True,
                             text=True, check=True)
    assert out.stdout.split() == ["1000", "1000"]


def test_cli_fit_reads_stdin_and_process_substitution(tmp_path):
    p = _write(tmp_path / "f.tsv", _big_text())
    model = tmp_path / "m.mfrec"
    cmd = [sys.executable, "-m", "mfrec.cli", "fit", "-", "-m", "baseline", "-o", str(model)]
    with open(p, "rb") as f:
        subprocess.run(cmd, stdin=f, check=True, capture_output=True)
    assert mfrec.load(model).user_items_.nnz == 1000
    out = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m mfrec.cli fit <(cat "{p}") -m baseline '
                       f'-o "{model}"'], capture_output=True, text=True, check=True)
    assert mfrec.load(model).user_items_.nnz == 1000, out.stderr


def test_cli_says_which_columns_it_used(tmp_path):
    p = _write(tmp_path / "r.csv", "when,film,viewer,score\n5,10,1,4\n6,20,2,3\n")
    out = subprocess.run([sys.executable, "-m", "mfrec.cli", "fit", str(p), "-m", "baseline",
                          "-o", str(tmp_path / "m.mfrec")], capture_output=True, text=True,
                         check=True)
    lines = [ln for ln in out.stderr.splitlines() if "columns" in ln]
    assert len(lines) == 1, out.stderr
    assert "user <- 'viewer', item <- 'film', rating <- 'score', timestamp <- 'when'" in lines[0]
    bad = _write(tmp_path / "b.csv", "a,b,c\n1,2,3\n")
    out = subprocess.run([sys.executable, "-m", "mfrec.cli", "fit", str(bad), "-m", "baseline",
                          "-o", str(tmp_path / "m.mfrec")], capture_output=True, text=True)
    assert out.returncode != 0 and "cannot tell which columns" in out.stderr
    assert "--names" in out.stderr


# ---------------------------------------------------------------------- chunked reading
@pytest.mark.parametrize("engine", ENGINES)
def test_chunked_reading_matches_one_piece(tmp_path, monkeypatch, engine):
    rng = np.random.default_rng(1)
    n = 3000
    df = pd.DataFrame({"user": rng.integers(0, 300, n), "item": rng.integers(0, 80, n) * 1000,
                       "rating": rng.integers(1, 6, n).astype(float),
                       "timestamp": rng.integers(0, 10**9, n)})
    df = df.drop_duplicates(["user", "item"])
    p = tmp_path / "r.tsv"
    df.to_csv(p, sep="\t", header=False, index=False)
    expected = mfrec.Ratings.from_frame(df)
    # small byte ranges, pandas chunks and the kernel path for every size
    monkeypatch.setattr(mio, "_RANGE_BYTES", 2000)
    monkeypatch.setattr(mio, "_CHUNK_ROWS", 500)
    monkeypatch.setattr(mio, "_KERNEL_MIN_NNZ", 0)
    seen = []
    r = read_ratings(p, engine=engine, progress=lambda done, total: seen.append((done, total)))
    assert r == expected and np.array_equal(r.timestamps, expected.timestamps)
    assert r.csr.indices.dtype == np.int32 and r.csr.data.dtype == np.float32
    assert r.item_vocab.ids.dtype == np.int64
    assert len(seen) > 4 and seen[-1][0] == seen[-1][1]


def test_chunked_parquet(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    n = 5000
    key = rng.choice(400 * 90, n, replace=False)
    df = pd.DataFrame({"user": (key // 90).astype(np.int64) * 10**9, "item": key % 90,
                       "rating": rng.normal(size=n)})
    df.to_parquet(tmp_path / "r.parquet", row_group_size=700)
    monkeypatch.setattr(mio, "_CHUNK_ROWS", 300)
    monkeypatch.setattr(mio, "_KERNEL_MIN_NNZ", 0)
    r = read_ratings(tmp_path / "r.parquet")
    assert r == mfrec.Ratings.from_frame(df)
    assert r.user_vocab.ids.dtype == np.int64 and r.user_vocab.ids[1] == 10**9 * int(
        np.unique(key // 90)[1])


def test_ids_that_look_numeric_then_are_not(tmp_path, monkeypatch):
    # the first lines say "integers"; a later one is a string: read the column as strings
    text = "".join(f"{u}\t{u % 7}\t3\n" for u in range(3000)) + "u17\t1\t4\n"
    p = _write(tmp_path / "m.tsv", text)
    monkeypatch.setattr(mio, "_RANGE_BYTES", 4000)
    r = read_ratings(p)
    assert r.nnz == 3001 and "u17" in set(r.user_vocab.ids.tolist())
    assert r.user_vocab.lookup(["17"]).tolist() == [r.user_vocab.lookup(["17"])[0]]


def test_duplicates_in_a_file(tmp_path):
    p = _write(tmp_path / "d.csv", "1,1,2\n1,1,4\n2,1,5\n")
    with pytest.raises(ValueError, match=r"duplicate \(user, item\) pairs: 1 repeated"):
        read_ratings(p)
    assert read_ratings(p, duplicates="mean").to_dense()[0, 0] == 3.0


def test_fixed_vocabularies(tmp_path):
    p = _write(tmp_path / "a.csv", "1,10,4\n2,20,3\n")
    train = read_ratings(p)
    q = _write(tmp_path / "b.csv", "2,10,5\n")
    r = read_ratings(q, user_vocab=train.user_vocab, item_vocab=train.item_vocab)
    assert r.shape == (2, 2) and r.to_dense()[1, 0] == 5.0
    with pytest.raises(KeyError, match=r"unknown user id\(s\) \[9\]"):
        read_ratings(_write(tmp_path / "c.csv", "9,10,5\n"), user_vocab=train.user_vocab)


# ---------------------------------------------------------------------- bad values (item 8)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("value, shown", [("nan", "nan"), ("1e39", r"1e\+39 \(inf in float32\)"),
                                          ("-inf", "-inf"), ("2e6", r"2000000\.0")])
def test_bad_ratings_name_the_line(tmp_path, engine, value, shown):
    p = _write(tmp_path / "n.csv", "user,item,rating\n1,2,3\n\n2,2," + value + "\n3,1,1\n")
    with pytest.raises(ValueError, match=rf"must be finite and at most 1e\+06.*line 4 "
                                         rf"\('2,2,{value}'\): {shown}"):
        read_ratings(p, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("text, message", [
    ("1,2,3\n1,3\n", r"line 2 has 2 fields, expected 3"),
    ("1,2,3\n2,3,four\n", r"line 2: 'rating' must be a number, got 'four'"),
    ("1,2,3\n,3,4\n", r"line 2"),
])
def test_bad_rows_name_the_line(tmp_path, engine, text, message):
    if engine == "pandas":  # pandas pads a short line with NaN: still an error at that line
        message = r"line 2"
    with pytest.raises(ValueError, match=message):
        read_ratings(_write(tmp_path / "b.csv", text), engine=engine)


def test_without_pyarrow_text_falls_back_to_pandas(tmp_path, monkeypatch):
    pd.DataFrame(ROWS, columns=["user", "item", "rating", "timestamp"]).to_parquet(
        tmp_path / "r.parquet")
    p = _write(tmp_path / "r.tsv", "".join(f"{u}\t{i}\t{r}\n" for u, i, r, _ in ROWS))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # "import pyarrow" now fails
    assert _triples(read_ratings(p)) == [(u, i, r) for u, i, r, _ in ROWS]
    with pytest.raises(ImportError, match=r"pip install 'mfrec\[parquet\]'"):
        read_ratings(tmp_path / "r.parquet")


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_frame(tmp_path / "missing.csv")
    with pytest.raises(IsADirectoryError):
        read_frame(tmp_path)
    with pytest.raises(ValueError, match="format must be one of"):
        read_frame(_write(tmp_path / "a.csv", "1,2,3\n"), format="xml")
    with pytest.raises(ValueError, match="empty"):
        read_frame(_write(tmp_path / "e.csv", "\n"))
    with pytest.raises(ValueError, match="names has 2 entries"):
        read_frame(_write(tmp_path / "b.csv", "1,2,3\n"), names=["user", "item"])
    with pytest.raises(ValueError, match="ratings .* must be finite"):
        read_ratings(_write(tmp_path / "n.csv", "1,2,nan\n"))
    with pytest.raises(ValueError, match="holds no ratings"):
        read_ratings(_write(tmp_path / "h.csv", "user,item,rating\n"))
    with pytest.raises(ValueError, match="compressed"):
        read_ratings(tmp_path / "z.gz" if (tmp_path / "z.gz").write_bytes(b"\x1f\x8b\x08rest")
                     else None)
    with pytest.raises(ValueError, match="engine must be"):
        read_ratings(tmp_path / "a.csv", engine="spark")
