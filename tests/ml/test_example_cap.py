"""TRAINING_EXAMPLES_MAX: above it the feature step keeps a share of the users' examples, each unchanged."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from mlops.jobs.feature_engineering import sampled_users, user_share
from tests.ml.ml_helpers import PARAMS, run_features

KEY = ["user_id", "movie_id", "timestamp", "is_negative"]


def test_user_share_is_all_users_under_the_cap_or_without_one():
    assert user_share(1_000, 0) == 1.0
    assert user_share(1_000, 1_000) == 1.0
    assert user_share(4_000, 1_000) == 0.25


@pytest.mark.slow
def test_capped_examples_are_the_uncapped_rows_of_a_share_of_the_users(spark, tiny_data, tiny_features):
    train, test, movies = tiny_data
    full = tiny_features["train_examples"]
    cap = len(full) // 3
    capped = run_features(spark, train, test, movies, dataclasses.replace(PARAMS, max_train_examples=cap))
    kept = capped["train_examples"]
    users = set(kept["user_id"])
    assert 0 < len(users) < full["user_id"].nunique()
    assert len(kept) < len(full) and abs(len(kept) - cap) < cap  # about the cap: a share of users, not of rows
    # Each kept user's examples are all there and exactly the uncapped step's: the item side saw every rating.
    expected = full[full["user_id"].isin(users)].sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept.sort_values(KEY).reset_index(drop=True)[expected.columns], expected)
    # The kept users are the hash's choice at the share the step computes, among the users with examples.
    positives = int((full["is_negative"] == 0).sum())
    share = user_share(positives * (1 + PARAMS.negatives_per_positive), cap)
    candidates = spark.createDataFrame(full[["user_id"]].drop_duplicates().astype("int32"))
    assert users == {r.user_id for r in sampled_users(candidates, share, PARAMS.seed).collect()}
    # The online snapshot (what is served) is not sampled.
    online = capped["online_users"].sort_values("user_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(online, tiny_features["online_users"].sort_values("user_id").reset_index(drop=True))
