"""Point-in-time correctness of the features, on real Spark.

Two tests recompute the features from a rewritten history and compare every feature of every training
example at or before a time T (user and item columns: counts, shares, rating statistics, genre profiles
and the ALS vectors):
- values: every rating at or after T flipped (pairs and timestamps kept): an example whose features
  change used its own rating or a later one;
- presence: every rating after T removed and as many different ones added after T (new users, and new
  movies for existing users): an example whose features change saw that a later rating exists at all
  (counts, popularity shares, ALS factors). Replacing rather than only removing keeps the number of
  ratings, so the snapshot cutoffs (time quantiles of the history) at or before T are the same, which the
  test asserts first.
Each has a control showing the comparison would catch a leak: examples after T (values) and the online
snapshot, which uses every rating (presence), do change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ml_helpers import feature_columns, run_features

from mlops import features as fx

KEY = ["user_id", "movie_id", "timestamp", "is_negative"]


def _flip_from(ratings: pd.DataFrame, t: int) -> pd.DataFrame:
    out = ratings.copy()
    late = out["timestamp"] >= t
    out.loc[late, "rating"] = 6.0 - out.loc[late, "rating"]
    return out


@pytest.mark.slow
def test_no_training_feature_uses_its_own_or_a_later_rating(spark, tiny_data, tiny_features):
    train, test, movies = tiny_data
    t = int(np.quantile(train["timestamp"], 0.8, method="lower"))
    assert (train["timestamp"] == t).any()  # an example exactly at T: its own rating is among the flipped
    changed = run_features(spark, _flip_from(train, t), test, movies)

    cols = feature_columns()
    before = tiny_features["train_examples"].set_index(KEY).sort_index()
    after = changed["train_examples"].set_index(KEY).sort_index()
    assert before.index.equals(after.index)  # same examples (labels aside)
    early = before.index.get_level_values("timestamp") <= t
    assert early.sum() > 50
    np.testing.assert_allclose(
        after.loc[early, cols].to_numpy(dtype=float), before.loc[early, cols].to_numpy(dtype=float),
        rtol=1e-5, atol=1e-6, err_msg="a training example's features depend on its own or a later rating",
    )  # fmt: skip
    # Control: the rating-derived features of later examples do move, so the comparison above is sensitive.
    late = before.index.get_level_values("timestamp") > t + 1
    rating_cols = ["u_mean_rating", "i_mean_smoothed", "u_like_rate"]
    assert not np.allclose(
        after.loc[late, rating_cols].to_numpy(dtype=float), before.loc[late, rating_cols].to_numpy(dtype=float),
        equal_nan=True,
    )  # fmt: skip


def _replace_after(ratings: pd.DataFrame, t: int, seed: int = 5) -> pd.DataFrame:
    """Every rating after `t` removed; as many different ratings added after `t`: half by new users, half by
    existing users on movies they never rated."""
    rng = np.random.default_rng(seed)
    early = ratings[ratings["timestamp"] <= t]
    n_late = int((ratings["timestamp"] > t).sum())
    movies = np.sort(ratings["movie_id"].unique())
    rated = set(zip(ratings["user_id"], ratings["movie_id"], strict=True))
    rows: list[tuple[int, int, float, int]] = []
    new_user = int(ratings["user_id"].max()) + 1
    users = np.sort(ratings["user_id"].unique())
    while len(rows) < n_late:
        new = len(rows) < n_late // 2
        u = new_user + len(rows) // 10 if new else int(rng.choice(users))
        m = int(rng.choice(movies))
        if (u, m) not in rated:
            rated.add((u, m))
            rows.append((u, m, float(rng.integers(1, 6)), 0))
    added = pd.DataFrame(rows, columns=ratings.columns)
    added["timestamp"] = t + 1 + rng.integers(0, 3_000_000, len(added))
    assert len(added) == n_late  # the same number of ratings: the quantile cutoffs at or before t hold
    return pd.concat([early, added], ignore_index=True)


@pytest.mark.slow
def test_no_training_feature_sees_that_later_ratings_exist(spark, tiny_data, tiny_features):
    train, test, movies = tiny_data
    t = int(np.quantile(train["timestamp"], 0.8, method="lower"))
    rewritten = _replace_after(train, t)
    assert len(rewritten) == len(train) and (rewritten["timestamp"] > t).sum() > 50
    assert rewritten[rewritten["timestamp"] > t]["user_id"].max() > train["user_id"].max()  # new users too
    changed = run_features(spark, rewritten, test, movies)
    cutoffs = list(tiny_features["online_meta"].iloc[0]["training_cutoffs"])
    early_cutoffs = [c for c in cutoffs if c <= t]
    assert early_cutoffs and [c for c in changed["online_meta"].iloc[0]["training_cutoffs"] if c <= t] == early_cutoffs

    cols = feature_columns()
    before = tiny_features["train_examples"].set_index(KEY).sort_index()
    after = changed["train_examples"].set_index(KEY).sort_index()
    early_before = before[before.index.get_level_values("timestamp") <= t]
    early_after = after[after.index.get_level_values("timestamp") <= t]
    positives = lambda f: f[f.index.get_level_values("is_negative") == 0]  # noqa: E731
    assert positives(early_before).index.equals(positives(early_after).index)  # the same rated examples
    common = early_before.index.intersection(early_after.index)  # negatives avoid movies the user rates later
    assert len(common) > 0.8 * len(early_before) and len(positives(early_before)) > 50
    np.testing.assert_allclose(
        early_after.loc[common, cols].to_numpy(dtype=float), early_before.loc[common, cols].to_numpy(dtype=float),
        rtol=1e-5, atol=1e-6, err_msg="a training example's features depend on ratings after its time",
    )  # fmt: skip
    # Control: features that do see every rating (the online snapshot) change: counts and ALS vectors alike,
    # so a training feature computed that way would fail the comparison above.
    items_before = tiny_features["online_items"].set_index("movie_id").sort_index()
    items_after = changed["online_items"].set_index("movie_id").sort_index()
    for leaky in (["i_n_ratings"], ["i_pop_share"], list(fx.ITEM_CF)):
        assert not np.allclose(
            items_after.loc[items_before.index, leaky].to_numpy(dtype=float),
            items_before[leaky].to_numpy(dtype=float), rtol=1e-5, atol=1e-6,
        ), leaky  # fmt: skip


def test_evaluation_features_come_from_train_only(tiny_data, tiny_features):
    """Eval pairs carry the online snapshot's rows, and that snapshot is aggregated over train alone."""
    train, _, _ = tiny_data
    ev = tiny_features["eval_examples"]
    users = tiny_features["online_users"].set_index("user_id")
    items = tiny_features["online_items"].set_index("movie_id")
    np.testing.assert_array_equal(
        ev[list(fx.USER_COLUMNS)].to_numpy(float), users.loc[ev["user_id"], list(fx.USER_COLUMNS)].to_numpy(float)
    )
    np.testing.assert_array_equal(
        ev[list(fx.ITEM_COLUMNS)].to_numpy(float), items.loc[ev["movie_id"], list(fx.ITEM_COLUMNS)].to_numpy(float)
    )
    n_train = train.groupby("user_id").size()
    assert (users["u_n_ratings"] == n_train.loc[users.index].to_numpy()).all()  # test ratings not counted
    mean_train = train.groupby("user_id")["rating"].mean()
    np.testing.assert_allclose(users["u_mean_rating"], mean_train.loc[users.index].to_numpy(), rtol=1e-6)
    n_items = train.groupby("movie_id").size()
    assert (items.loc[n_items.index, "i_n_ratings"].to_numpy() == n_items.to_numpy()).all()
    assert set(map(int, users.loc[users.index[0], fx.RATED_COLUMN])) == set(
        train.loc[train["user_id"] == users.index[0], "movie_id"]
    )


def test_feature_outputs_have_the_declared_columns(tiny_features):
    ex = tiny_features["train_examples"]
    assert set(fx.USER_COLUMNS) <= set(ex.columns) and set(fx.ITEM_COLUMNS) <= set(ex.columns)
    assert set(ex["is_negative"]) == {0, 1}
    negatives = ex[ex["is_negative"] == 1]
    assert negatives["label"].eq(0).all() and negatives["rating"].isna().all()
    users = tiny_features["online_users"]
    assert users["user_id"].is_unique and fx.RATED_COLUMN in users.columns
    assert len(tiny_features["online_items"]) == 80  # every movie, rated in train or not
    assert fx.build_matrix(ex, ex).shape == (len(ex), len(fx.FEATURE_NAMES))


def test_negatives_are_never_movies_the_user_rated(tiny_features, tiny_data):
    train, _, _ = tiny_data
    ex = tiny_features["train_examples"]
    rated = set(zip(train["user_id"], train["movie_id"], strict=True))
    neg = ex[ex["is_negative"] == 1]
    assert not any((u, m) in rated for u, m in zip(neg["user_id"], neg["movie_id"], strict=True))


def test_unknown_genre_is_refused(spark, tiny_data):
    from mlops.errors import DataError

    train, test, movies = tiny_data
    bad = movies.copy()
    bad.loc[0, "genres"] = "Action|Space Opera"
    with pytest.raises(DataError, match="Space Opera"):
        run_features(spark, train, test, bad)
