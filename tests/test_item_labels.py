"""Item labels from MovieLens's item files and any CSV, and the one data-folder variable
($MFREC_DATA_DIR): where releases are found unpacked and downloads kept."""
import warnings
import zipfile

import pytest

from mfrec.datasets import (cache_dir, load_movielens, load_movielens_labels,
                            read_item_labels)


def test_u_item_latin1_pipe_format(tmp_path):
    # ML-100K's u.item: '|'-separated, latin-1, unquoted (a '"' or ',' is part of the title)
    f = tmp_path / "u.item"
    f.write_bytes(b"1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n"
                  b"2|Caf\xe9 \"Noir\", Le (1996)|01-Jan-1996||http://y|0|0\n\n")
    assert read_item_labels(f) == {1: "Toy Story (1995)", 2: 'Caf\xe9 "Noir", Le (1996)'}


def test_movies_dat_and_movies_csv(tmp_path):
    # ML-1M's movies.dat ('::') and ML-20M's movies.csv (header, quoted titles with commas)
    dat = tmp_path / "movies.dat"
    dat.write_bytes(b"1::Toy Story (1995)::Animation|Children's\n7::Sabrina (1995)::Comedy\n")
    assert read_item_labels(dat) == {1: "Toy Story (1995)", 7: "Sabrina (1995)"}
    csv = tmp_path / "movies.csv"
    csv.write_text('movieId,title,genres\n11,"American President, The (1995)",Comedy\n'
                   "12,Dracula (1995),Horror\n", encoding="utf-8")
    assert read_item_labels(csv) == {11: "American President, The (1995)",
                                     12: "Dracula (1995)"}


def test_any_csv_or_tsv_of_item_and_name(tmp_path):
    # string ids stay strings; a header is recognised by its names, and the label column by name
    a = tmp_path / "a.csv"
    a.write_text("tea,Green tea\njam,Plum jam\n")
    assert read_item_labels(a) == {"tea": "Green tea", "jam": "Plum jam"}
    b = tmp_path / "b.tsv"
    b.write_text("item_id\tprice\tname\n5\t1.5\tBun\n6\t2\tScone\n")
    assert read_item_labels(b) == {5: "Bun", 6: "Scone"}
    c = tmp_path / "c.csv"
    c.write_text("id,label\n3,Three\n")
    assert read_item_labels(c) == {3: "Three"}


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("1\n2\n", "the first line has one field"),
    ("1,One\n2\n", "line 2: expected an item id and a label, got 1 field"),
    ("1,One\n2,Two\n1,Uno\n", "line 3: item id 1 is given twice"),
    ("item,name\n", "has a header but no labels"),
])
def test_bad_label_files_are_named(tmp_path, text, match):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_item_labels(f)


def test_real_u_item(ml100k_dir):
    labels = read_item_labels(ml100k_dir / "u.item")
    assert len(labels) == 1682 and labels[1] == "Toy Story (1995)"
    assert labels[50] == "Star Wars (1977)"


def test_data_folder_variable(monkeypatch, tmp_path):
    # MFREC_DATA_DIR wins; the old MFREC_DATA still works with a DeprecationWarning; else the
    # user cache folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MFREC_DATA_DIR", raising=False)
    monkeypatch.delenv("MFREC_DATA", raising=False)
    assert cache_dir() == tmp_path / "xdg" / "mfrec"
    assert cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.setenv("MFREC_DATA", str(tmp_path / "old"))
    with pytest.warns(DeprecationWarning, match="MFREC_DATA_DIR"):
        assert cache_dir() == tmp_path / "old"
    monkeypatch.setenv("MFREC_DATA_DIR", str(tmp_path / "new"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache_dir() == tmp_path / "new"


def test_unpacked_release_in_the_data_folder_is_used(monkeypatch, tmp_path):
    # a release unpacked in $MFREC_DATA_DIR is read without any download (the URL is unusable)
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t3\t881250950\n1\t20\t5\t1\n")
    (folder / "u.item").write_bytes(b"10|Ten (1990)|x\n20|Twenty (1991)|y\n")
    monkeypatch.setenv("MFREC_DATA_DIR", str(tmp_path))
    r = load_movielens("100k", url="file:///nonexistent")
    assert (r.n_users, r.n_items, r.nnz) == (2, 2, 3)
    assert load_movielens_labels("100k", url="file:///nonexistent") == {
        10: "Ten (1990)", 20: "Twenty (1991)"}
    # and the titles inside a zip given as path=
    z = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(folder / "u.data", "ml-100k/u.data")
        zf.write(folder / "u.item", "ml-100k/u.item")
    assert load_movielens_labels("100k", path=z)[20] == "Twenty (1991)"
