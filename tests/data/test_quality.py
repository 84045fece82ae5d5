"""The table rules of the quality gate (pure logic over normalized frames)."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops.quality import QualityError, QualityReport, check_tables


def tables(n_users: int = 4, n_movies: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        (u, m, 0.5 + (u + m) % 10 / 2, 1_000_000 + u * 10 + m)
        for u in range(1, n_users + 1)
        for m in range(1, n_movies + 1)
    ]
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    movies = pd.DataFrame(
        {
            "movie_id": range(1, n_movies + 1),
            "title": [f"M{i} (1999)" for i in range(1, n_movies + 1)],
            "year": pd.array([1999] * (n_movies - 1) + [None], dtype="Int64"),  # a missing year is allowed
            "genres": ["Drama"] * n_movies,
        }
    )
    movies["title"] = movies["title"].astype("str")
    movies["genres"] = movies["genres"].astype("str")
    return ratings, movies


def rejects(ratings, movies, previous=None) -> QualityError:
    with pytest.raises(QualityError) as info:
        check_tables(ratings, movies, QualityReport("validate", "test"), previous)
    return info.value


def test_clean_tables_pass_with_stats():
    ratings, movies = tables()
    report = QualityReport("validate", "test")
    counts = check_tables(ratings, movies, report, {"ratings": 25, "run_id": "before"})
    assert counts == {"ratings": 20, "movies": 5, "users": 4}
    assert report.passed and {c["rule"] for c in report.checks} >= {
        "schema",
        "null rates",
        "rating range",
        "duplicate (user, movie)",
        "row-count change",
    }


def test_rating_out_of_range():
    ratings, movies = tables()
    ratings.loc[3, "rating"] = 5.5
    err = rejects(ratings, movies)
    assert (err.rule, err.column) == ("rating range", "rating") and "5.5" in str(err)


def test_dtype():
    ratings, movies = tables()
    ratings["user_id"] = ratings["user_id"].astype(str)
    err = rejects(ratings, movies)
    assert (err.rule, err.column) == ("dtype", "user_id")


def test_nulls():
    ratings, movies = tables()
    ratings["timestamp"] = ratings["timestamp"].astype("Int64")
    ratings.loc[7, "timestamp"] = None
    err = rejects(ratings, movies)
    assert (err.rule, err.column) == ("null values", "timestamp") and "first at row 7" in str(err)


def test_duplicates():
    ratings, movies = tables()
    ratings = pd.concat([ratings, ratings.iloc[[2]]], ignore_index=True)
    err = rejects(ratings, movies)
    assert err.rule == "duplicate (user, movie)" and "user 1 rated movie 3 more than once" in str(err)


def test_unknown_movie():
    ratings, movies = tables()
    movies = movies.iloc[:-1]
    assert rejects(ratings, movies).rule == "unknown movie id"


def test_empty():
    ratings, movies = tables()
    assert rejects(ratings.iloc[:0], movies).rule == "empty table"


def test_big_count_drop_against_last_good_run():
    ratings, movies = tables()
    err = rejects(ratings, movies, {"ratings": 41, "run_id": "run-7"})
    assert err.rule == "row-count drop" and "run-7" in str(err) and "51% fewer" in str(err)
