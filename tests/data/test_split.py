"""Split properties on real Spark: three parts, temporal order per user or globally, per-user fractions,
users too small for three parts kept in train, reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.jobs.split_dataset import split, split_report

pytestmark = pytest.mark.slow

KEY = ["user_id", "movie_id"]


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
    assert (pdf.groupby("user_id").size() < 3).any()  # some users are too small for three parts
    return spark.createDataFrame(pdf), pdf


def _collect(df) -> pd.DataFrame:
    return pd.DataFrame([r.asDict() for r in df.collect()]).sort_values(KEY).reset_index(drop=True)


def _half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _check_fractions(marked: pd.DataFrame, test_fraction: float, validation_fraction: float) -> None:
    for _user, g in marked.groupby("user_id"):
        n = len(g)
        n_test, n_val = int((g["part"] == "test").sum()), int((g["part"] == "validation").sum())
        if n < 3:
            assert n_test == n_val == 0  # too few for three parts: all in train
        else:
            assert n_test == min(n - 2, max(1, _half_up(n * test_fraction)))
            assert n_val == min(n - n_test - 1, max(1, _half_up(n * validation_fraction)))
            assert (g["part"] == "train").sum() >= 1


def _order(g: pd.DataFrame) -> list[tuple[int, int]]:
    return list(zip(g["timestamp"], g["movie_id"], strict=True))


def test_temporal_is_train_then_validation_then_test_per_user(ratings):
    df, _ = ratings
    marked = _collect(split(df, "temporal", 0.2, 0.1, 42))
    _check_fractions(marked, 0.2, 0.1)
    for _user, g in marked.groupby("user_id"):
        parts = {p: _order(g[g["part"] == p]) for p in ("train", "validation", "test")}
        if parts["test"]:
            # later or equal in time; at equal times the larger movie id is the later one (deterministic)
            assert max(parts["train"]) < min(parts["validation"]) and max(parts["validation"]) < min(parts["test"])
    again = _collect(split(df.repartition(7), "temporal", 0.2, 0.1, 42))
    assert marked["part"].tolist() == again["part"].tolist()


def test_random_is_per_user_and_reproducible(ratings):
    df, _ = ratings
    a = _collect(split(df, "random", 0.25, 0.1, 42))
    b = _collect(split(df.repartition(5), "random", 0.25, 0.1, 42))
    c = _collect(split(df, "random", 0.25, 0.1, 43))
    _check_fractions(a, 0.25, 0.1)
    assert a["part"].tolist() == b["part"].tolist()  # same seed, any partitioning: same split
    assert a["part"].tolist() != c["part"].tolist()
    latest = _collect(split(df, "temporal", 0.25, 0.1, 42))
    assert a["part"].tolist() != latest["part"].tolist()  # random picks ignore time


def test_global_temporal_has_one_cutoff_for_everyone(ratings):
    df, pdf = ratings
    marked = _collect(split(df, "global_temporal", 0.2, 0.1, 42))
    train, val, test = (marked[marked["part"] == p] for p in ("train", "validation", "test"))
    assert train["timestamp"].max() < val["timestamp"].min() <= val["timestamp"].max() < test["timestamp"].min()
    assert len(train) + len(val) + len(test) == len(pdf)
    assert abs(len(test) / len(pdf) - 0.2) < 0.06 and abs(len(val) / len(pdf) - 0.1) < 0.06  # ties move a few


def test_report_counts_users_kept_in_train(spark, ratings):
    df, pdf = ratings
    report = split_report(split(df, "temporal", 0.2, 0.1, 42))
    sizes = pdf.groupby("user_id").size()
    assert report["users_train_only_too_few_ratings"] == int((sizes < 3).sum())
    assert sum(report["counts"].values()) == len(pdf)
    assert report["users"]["train"] == pdf["user_id"].nunique()
    assert report["cold_users"] == {"validation": 0, "test": 0}
    early = pdf["timestamp"] < pdf["timestamp"].quantile(0.5)
    late_only = spark.createDataFrame(pd.concat([pdf, pd.DataFrame(
        [(999, 1, 4.0, int(pdf["timestamp"].max()))], columns=pdf.columns)]))  # fmt: skip
    assert early.any()
    g = split_report(split(late_only, "global_temporal", 0.2, 0.1, 42))
    assert g["cold_users"]["test"] >= 1  # user 999 only rated after the cutoff
