"""Split properties on real Spark: temporal order per user, per-user fractions, reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.jobs.split_dataset import split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ratings(spark):
    rng = np.random.default_rng(3)
    rows = []
    for user in range(1, 61):
        n = int(rng.integers(1, 40))
        movies = rng.choice(500, n, replace=False) + 1
        times = rng.integers(1_000_000, 1_000_000 + 50, n)  # many ties in time
        rows += [(user, int(m), 3.0, int(t)) for m, t in zip(movies, times, strict=True)]
    pdf = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    return spark.createDataFrame(pdf), pdf


def _collect(df) -> pd.DataFrame:
    return pd.DataFrame([r.asDict() for r in df.collect()])


def _check_fractions(marked: pd.DataFrame, fraction: float) -> None:
    for _user, g in marked.groupby("user_id"):
        n, n_test = len(g), int(g["is_test"].sum())
        if n == 1:
            assert n_test == 0
        else:
            assert n_test == min(n - 1, max(1, int(np.floor(n * fraction + 0.5))))  # round half up, 1..n-1


def test_temporal_test_is_each_users_latest(ratings):
    df, _ = ratings
    marked = _collect(split(df, "temporal", 0.2, 42))
    _check_fractions(marked, 0.2)
    for _user, g in marked.groupby("user_id"):
        train, test = g[~g["is_test"]], g[g["is_test"]]
        if len(test):
            # later or equal in time; at equal times the larger movie id is the later one (deterministic)
            last_train = max(zip(train["timestamp"], train["movie_id"], strict=True))
            first_test = min(zip(test["timestamp"], test["movie_id"], strict=True))
            assert first_test > last_train
    again = _collect(split(df.repartition(7), "temporal", 0.2, 42))
    key = ["user_id", "movie_id"]
    assert marked.sort_values(key)["is_test"].tolist() == again.sort_values(key)["is_test"].tolist()


def test_random_is_per_user_and_reproducible(ratings):
    df, _ = ratings
    key = ["user_id", "movie_id"]
    a = _collect(split(df, "random", 0.3, 42)).sort_values(key)
    b = _collect(split(df.repartition(5), "random", 0.3, 42)).sort_values(key)
    c = _collect(split(df, "random", 0.3, 43)).sort_values(key)
    _check_fractions(a, 0.3)
    assert a["is_test"].tolist() == b["is_test"].tolist()  # same seed, any partitioning: same split
    assert a["is_test"].tolist() != c["is_test"].tolist()
    # not simply the latest ratings: random picks ignore time
    latest = _collect(split(df, "temporal", 0.3, 42)).sort_values(key)
    assert a["is_test"].tolist() != latest["is_test"].tolist()
