"""Every split: train and test disjoint and complete, sizes right, temporal order held,
reproducible with random_state, and the unseen-user/item policy applied and reported."""
import numpy as np
import pytest

from mfrec import Ratings
from mfrec.evaluation import (KFold, ShuffleSplit, leave_one_out_split, split_report,
                              temporal_split, train_test_split, user_split, user_temporal_split)


@pytest.fixture
def rated():
    # 40 users with 1..30 ratings each over 60 items, timestamps with deliberate ties
    rng = np.random.default_rng(7)
    users, items = [], []
    for u in range(40):
        k = 1 + (u * 7) % 30
        users += [f"u{u}"] * k
        items += rng.choice(60, size=k, replace=False).tolist()
    n = len(users)
    ts = rng.integers(0, n // 3, size=n)  # about three ratings per timestamp
    vals = rng.integers(1, 6, size=n).astype(float)
    return Ratings.from_ids(users, items, vals, timestamps=ts)


def pairs(r):
    f = r.to_frame()
    return set(zip(f["user"].tolist(), f["item"].tolist()))


def check_partition(data, train, test, *, complete=True):
    a, b = pairs(train), pairs(test)
    assert not a & b, "a rating is in both parts"
    assert len(a) == train.nnz and len(b) == test.nnz
    if complete:
        assert a | b == pairs(data)
    else:
        assert a | b <= pairs(data)
    assert train.user_vocab is data.user_vocab and test.item_vocab is data.item_vocab


def per_user(r):
    return np.bincount(r.user_index, minlength=r.n_users)


def test_train_test_split_sizes_disjoint_reproducible(rated):
    train, test = train_test_split(rated, test_size=0.25, random_state=3)
    check_partition(rated, train, test)
    assert test.nnz == round(0.25 * rated.nnz)
    again = train_test_split(rated, test_size=0.25, random_state=3)[1]
    other = train_test_split(rated, test_size=0.25, random_state=4)[1]
    assert pairs(again) == pairs(test) and pairs(other) != pairs(test)
    # the values travel with their pairs
    g = rated.to_frame()
    full = dict(zip(zip(g["user"], g["item"]), g["rating"]))
    f = test.to_frame()
    for u, i, v in zip(f["user"], f["item"], f["rating"]):
        assert full[(u, i)] == v


def test_kfold_every_rating_tested_once(rated):
    folds = list(KFold(4, random_state=0).split(rated))
    assert len(folds) == 4
    seen = []
    for train, test in folds:
        check_partition(rated, train, test)
        seen += list(pairs(test))
    assert sorted(seen) == sorted(pairs(rated))
    sizes = [t.nnz for _, t in folds]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == rated.nnz
    assert [pairs(t) for _, t in KFold(4, random_state=0).split(rated)] == \
        [pairs(t) for _, t in folds]


def test_kfold_unshuffled_is_contiguous(rated):
    train, test = next(KFold(2, shuffle=False).split(rated))
    assert test.nnz == (rated.nnz + 1) // 2
    # CSR order is by user first, so the first fold is the first users' ratings
    assert test.user_index.max() <= train.user_index.min()


def test_shuffle_split_repeats(rated):
    parts = list(ShuffleSplit(3, test_size=0.1, random_state=1).split(rated))
    assert len(parts) == 3
    for train, test in parts:
        check_partition(rated, train, test)
        assert test.nnz == round(0.1 * rated.nnz)
    assert pairs(parts[0][1]) != pairs(parts[1][1])


def test_user_split_ratio(rated):
    train, test = user_split(rated, test_size=0.3, random_state=0)
    check_partition(rated, train, test)
    n = per_user(rated)
    expect = np.clip(np.minimum(np.maximum(np.rint(0.3 * n), 1), n - 1), 0, None)
    assert np.array_equal(per_user(test), expect)
    assert per_user(train).min() >= 1  # every user keeps a training rating


def test_user_split_count_and_min_train(rated):
    train, test = user_split(rated, test_size=2, min_train=3, random_state=0)
    check_partition(rated, train, test)
    n = per_user(rated)
    assert np.array_equal(per_user(test), np.clip(np.minimum(2, n - 3), 0, None))
    assert np.all(per_user(train) >= np.minimum(n, 3))
    assert pairs(user_split(rated, test_size=2, min_train=3, random_state=0)[1]) == pairs(test)


def test_leave_one_out_random(rated):
    train, test = leave_one_out_split(rated, random_state=5)
    check_partition(rated, train, test)
    n = per_user(rated)
    assert np.array_equal(per_user(test), (n >= 2).astype(int))
    other = leave_one_out_split(rated, random_state=6)[1]
    assert pairs(other) != pairs(test)


def test_leave_one_out_latest_takes_the_newest(rated):
    train, test = leave_one_out_split(rated, strategy="latest", random_state=0)
    check_partition(rated, train, test)
    f = rated.to_frame()
    newest = f.groupby("user")["timestamp"].max()
    t = test.to_frame()
    assert np.array_equal(t["timestamp"].to_numpy(), newest[t["user"]].to_numpy())
    # ties at the newest timestamp are broken by random_state, reproducibly
    assert pairs(leave_one_out_split(rated, strategy="latest", random_state=0)[1]) == pairs(test)


def test_temporal_split_order(rated):
    train, test = temporal_split(rated, test_size=0.2)
    check_partition(rated, train, test)
    assert train.timestamps.max() < test.timestamps.min()
    assert test.nnz >= round(0.2 * rated.nnz)
    # boundary ties all go to the test part, so it may be a little larger, never smaller
    assert test.nnz - round(0.2 * rated.nnz) < np.bincount(rated.timestamps).max()
    cut = int(np.median(rated.timestamps))
    tr2, te2 = temporal_split(rated, cutoff=cut)
    assert te2.timestamps.min() >= cut > tr2.timestamps.max()


def test_user_temporal_split_order(rated):
    train, test = user_temporal_split(rated, test_size=0.25)
    check_partition(rated, train, test)
    tr, te = train.to_frame(), test.to_frame()
    last_train = tr.groupby("user")["timestamp"].max()
    first_test = te.groupby("user")["timestamp"].min()
    assert (last_train[first_test.index] <= first_test).all()
    n = per_user(rated)
    assert np.array_equal(per_user(test), np.clip(np.minimum(np.maximum(np.rint(0.25 * n), 1),
                                                             n - 1), 0, None))
    tr3, te3 = user_temporal_split(rated, test_size=1)
    assert np.array_equal(per_user(te3), (n >= 2).astype(int))


def test_unseen_policy_drop_and_report():
    # hand-made: user "c" and item "z" only ever appear in the test part
    r = Ratings.from_ids(["a", "a", "b", "b", "c", "a"], ["x", "y", "x", "y", "x", "z"],
                         [5, 4, 3, 2, 1, 3])
    mask_test = r.to_frame().eval("user == 'c' or item == 'z' or (user == 'b' and item == 'y')")
    from mfrec.evaluation.splits import _make_parts
    train, test = _make_parts(r, mask_test.to_numpy(), "keep")
    assert split_report(train, test) == {"n_train": 3, "n_test": 3, "unseen_users": 1,
                                         "unseen_items": 1, "unseen_ratings": 2}
    train_d, test_d = _make_parts(r, mask_test.to_numpy(), "drop")
    assert pairs(test_d) == {("b", "y")} and train_d.nnz == 3
    assert split_report(train_d, test_d)["unseen_ratings"] == 0


def test_unseen_drop_on_random_split(rated):
    train, test = train_test_split(rated, test_size=0.5, random_state=0)
    rep = split_report(train, test)
    assert rep["unseen_ratings"] > 0  # small users lose all their ratings to the test part
    train_d, test_d = train_test_split(rated, test_size=0.5, random_state=0, unseen="drop")
    assert pairs(train_d) == pairs(train)
    assert test_d.nnz == test.nnz - rep["unseen_ratings"]
    assert split_report(train_d, test_d)["unseen_ratings"] == 0


def test_report_matches_raw_ids_across_vocabularies():
    train = Ratings.from_ids([1, 2], [10, 20], [3.0, 4.0])
    test = Ratings.from_ids([1, 3], [20, 30], [5.0, 1.0])
    assert split_report(train, test) == {"n_train": 2, "n_test": 2, "unseen_users": 1,
                                         "unseen_items": 1, "unseen_ratings": 1}


@pytest.mark.parametrize("call, match", [
    (lambda r: train_test_split(r, test_size=1.5), "test_size"),
    (lambda r: train_test_split(r, unseen="ignore"), "unseen must be one of"),
    (lambda r: list(KFold(1).split(r)), "n_splits must be an int >= 2"),
    (lambda r: user_split(r, test_size=0), "test_size"),
    (lambda r: user_split(r, min_train=0), "min_train"),
    (lambda r: leave_one_out_split(r, strategy="oldest"), "strategy"),
    (lambda r: leave_one_out_split(r, min_ratings=1), "min_ratings"),
])
def test_bad_arguments_are_named(rated, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(rated)


def test_time_splits_need_timestamps(seed_matrix):
    for split in (temporal_split, user_temporal_split,
                  lambda r: leave_one_out_split(r, strategy="latest")):
        with pytest.raises(ValueError, match="needs timestamps"):
            split(seed_matrix)


def test_splits_on_movielens(ml100k_dir):
    r = Ratings.from_file(ml100k_dir / "u.data")
    train, test = user_temporal_split(r, test_size=0.2)
    assert train.nnz + test.nnz == 100_000
    assert not (set(zip(train.user_index, train.item_index))
                & set(zip(test.user_index, test.item_index)))
    # ML-100K users have >= 20 ratings, so each gives exactly round(20%) of them
    n = per_user(r)
    assert np.array_equal(per_user(test), np.rint(0.2 * n))
    tr, te = leave_one_out_split(r, strategy="latest", random_state=0)
    assert te.nnz == 943


def test_repeated_split_as_cv(rated):
    from mfrec.evaluation import RepeatedSplit
    cv = RepeatedSplit(user_split, 3, test_size=2, random_state=0)
    parts = list(cv.split(rated))
    assert len(parts) == 3 == cv.get_n_splits()
    for train, test in parts:
        check_partition(rated, train, test)
    assert pairs(parts[0][1]) != pairs(parts[1][1])  # a new seed per repetition
    again = [pairs(t) for _, t in RepeatedSplit(user_split, 3, test_size=2,
                                                random_state=0).split(rated)]
    assert again == [pairs(t) for _, t in parts]
    # deterministic splits take no random_state and repeat identically
    temporal = list(RepeatedSplit(temporal_split, 2, test_size=0.3).split(rated))
    assert pairs(temporal[0][1]) == pairs(temporal[1][1])
