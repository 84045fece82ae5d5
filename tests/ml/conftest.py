"""Fixtures of the ML tests: a Spark session, tiny synthetic MovieLens-like data, and its features."""

from __future__ import annotations

import pytest
from ml_helpers import random_split, run_features, tiny_movielens

from mlops.spark_io import spark_session
from mlops.training.offline_data import OfflineData, check


@pytest.fixture(scope="session")
def spark(base_settings):
    session = spark_session("tests-ml", base_settings.replace(spark_master="local[2]"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_data():
    ratings, movies = tiny_movielens()
    train, test = random_split(ratings)
    return train, test, movies


@pytest.fixture(scope="session")
def tiny_features(spark, tiny_data):
    train, test, movies = tiny_data
    return run_features(spark, train, test, movies)


@pytest.fixture(scope="session")
def offline(tiny_features, tiny_data) -> OfflineData:
    train, test, _ = tiny_data
    f = tiny_features
    return check(
        OfflineData(
            f["train_examples"], f["eval_examples"], f["online_users"], f["online_items"],
            f["online_meta"].iloc[0].to_dict(), test.reset_index(drop=True), train.reset_index(drop=True),
        )
    )  # fmt: skip
