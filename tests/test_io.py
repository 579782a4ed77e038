"""File formats: detection of separators, headers and the MovieLens layouts."""
import pandas as pd
import pytest

from mfrec.io import read_frame, read_ratings

ROWS = [(1, 10, 4.0, 100), (1, 20, 3.0, 200), (2, 10, 5.0, 300)]


def _write(path, text):
    path.write_text(text)
    return path


def test_headerless_tsv_four_columns(tmp_path):
    p = _write(tmp_path / "u.data", "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS))
    f = read_frame(p)
    assert list(f.columns) == ["user", "item", "rating", "timestamp"]
    assert f.shape == (3, 4)


def test_headerless_csv_three_columns(tmp_path):
    p = _write(tmp_path / "r.csv", "".join(f"{u},{i},{r}\n" for u, i, r, _ in ROWS))
    assert list(read_frame(p).columns) == ["user", "item", "rating"]


def test_movielens_dat(tmp_path):
    p = _write(tmp_path / "ratings.dat", "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS))
    f = read_frame(p)
    assert list(f.columns) == ["user", "item", "rating", "timestamp"]
    assert f["item"].tolist() == [10, 20, 10] and f["timestamp"].tolist() == [100, 200, 300]


def test_movielens_csv_header(tmp_path):
    p = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" +
               "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS))
    r = read_ratings(p)
    assert (r.n_users, r.n_items, r.nnz) == (2, 2, 3)
    assert r.timestamps is not None


def test_string_ids_without_header(tmp_path):
    p = _write(tmp_path / "s.tsv", "alice\tbook\t5\nbob\tpen\t3\n")
    f = read_frame(p)
    assert f["user"].tolist() == ["alice", "bob"]


def test_two_columns_are_interactions(tmp_path):
    p = _write(tmp_path / "clicks.csv", "1,10\n1,20\n2,10\n")
    r = read_ratings(p)
    assert r.nnz == 3 and set(r.values.tolist()) == {1.0}


def test_explicit_names_and_sep(tmp_path):
    p = _write(tmp_path / "x.txt", "10;1;4\n20;1;3\n")
    f = read_frame(p, sep=";", names=["item", "user", "rating"])
    assert f["user"].tolist() == [1, 1] and f["item"].tolist() == [10, 20]


def test_parquet(tmp_path):
    pd.DataFrame(ROWS, columns=["user", "item", "rating", "timestamp"]).to_parquet(tmp_path / "r.parquet")
    assert read_ratings(tmp_path / "r.parquet").nnz == 3


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
    with pytest.raises(ValueError, match="ratings must be finite"):
        read_ratings(_write(tmp_path / "n.csv", "1,2,nan\n"))
