"""The synthetic generator: exact size, MovieLens structure, learnable signal, reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.datasets.layouts import locate, read_movies, read_ratings
from mlops.datasets.synthetic import generate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    counts = generate(60_000, 7, out / "a")
    files = locate(out / "a", out / "x")
    return counts, read_ratings(files), read_movies(files), out


def test_size_and_minimum_activity(data):
    counts, ratings, movies, _ = data
    assert len(ratings) == 60_000 == counts["ratings"]
    per_user = ratings.groupby("user_id").size()
    assert per_user.min() >= 5
    assert per_user.max() > 5 * per_user.median()  # a spread of activity, not everyone alike
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    assert set(ratings["movie_id"]) <= set(movies["movie_id"])
    assert ratings["rating"].between(0.5, 5).all() and (ratings["rating"] * 2 % 1 == 0).all()
    assert 3.2 < ratings["rating"].mean() < 3.8


def test_long_tail_and_years(data):
    _, ratings, movies, _ = data
    pop = ratings.groupby("movie_id").size().sort_values(ascending=False)
    assert pop.iloc[: len(pop) // 10].sum() / len(ratings) > 0.3  # top 10% of movies: a big share
    span_years = (ratings["timestamp"].max() - ratings["timestamp"].min()) / (365 * 86400)
    assert span_years > 10
    assert movies["year"].notna().all() and movies["genres"].str.len().gt(0).all()


def test_ratings_are_learnable(data):
    """User and movie biases fitted on 80% predict the other 20% clearly better than the global mean."""
    _, ratings, _, _ = data
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(ratings)) < 0.2
    train, test = ratings[~test_mask], ratings[test_mask]
    mu = train["rating"].mean()
    b_i = (train["rating"] - mu).groupby(train["movie_id"]).sum() / (train.groupby("movie_id").size() + 5)
    resid = train["rating"] - mu - train["movie_id"].map(b_i)
    b_u = resid.groupby(train["user_id"]).sum() / (train.groupby("user_id").size() + 5)
    pred = mu + test["movie_id"].map(b_i).fillna(0) + test["user_id"].map(b_u).fillna(0)
    rmse_model = np.sqrt(((pred - test["rating"]) ** 2).mean())
    rmse_mean = np.sqrt(((mu - test["rating"]) ** 2).mean())
    assert rmse_model < 0.9 * rmse_mean


def test_genre_taste_drives_choices(data):
    """Users' genre mixes differ from each other far more than when the same ratings are dealt out at random."""
    _, ratings, movies, _ = data
    genres = movies.set_index("movie_id")["genres"].str.split("|").explode()

    def spread(user_ids: np.ndarray) -> float:
        exploded = pd.DataFrame({"user_id": user_ids, "movie_id": ratings["movie_id"].to_numpy()}).join(
            genres, on="movie_id"
        )
        mix = pd.crosstab(exploded["user_id"], exploded["genres"], normalize="index")
        return float((mix - mix.mean()).abs().sum(axis=1).mean() / 2)  # mean total-variation distance

    shuffled = np.random.default_rng(1).permutation(ratings["user_id"].to_numpy())
    assert spread(ratings["user_id"].to_numpy()) > 1.5 * spread(shuffled)


def test_reproducible_with_seed(data):
    _, _, _, out = data
    generate(2000, 3, out / "b")
    generate(2000, 3, out / "c")
    generate(2000, 4, out / "d")
    same = (out / "b" / "ratings.csv").read_bytes() == (out / "c" / "ratings.csv").read_bytes()
    different = (out / "b" / "ratings.csv").read_bytes() != (out / "d" / "ratings.csv").read_bytes()
    assert same and different
