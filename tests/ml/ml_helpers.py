"""Helpers of the ML tests: tiny synthetic MovieLens-like data and a features run on it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops import features as fx
from mlops.jobs.feature_engineering import FeatureParams, compute_features

GENRE_POOL = ["Action", "Comedy", "Drama", "Children's", "Sci-Fi", "Romance", "Thriller"]


def tiny_movielens(seed: int = 7, n_users: int = 60, n_movies: int = 80) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings with structure a model can learn: latent tastes drive both who watches what and the rating."""
    rng = np.random.default_rng(seed)
    user_f = rng.normal(size=(n_users, 3))
    movie_f = rng.normal(size=(n_movies, 3))
    popularity = 1.0 / (np.arange(n_movies) + 3.0)
    rows = []
    for u in range(n_users):
        affinity = movie_f @ user_f[u]
        p = popularity * np.exp(affinity)
        n = int(rng.integers(18, 35))
        chosen = rng.choice(n_movies, size=n, replace=False, p=p / p.sum())
        start = 880_000_000 + int(rng.integers(0, 5_000_000))
        times = np.sort(start + rng.integers(0, 3_000_000, size=n))
        for m, t in zip(chosen, times, strict=True):
            rating = int(np.clip(np.round(3.2 + 0.9 * affinity[m] + rng.normal(0, 0.7)), 1, 5))
            rows.append((u + 1, int(m) + 1, float(rating), int(t)))
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    movies = pd.DataFrame(
        {
            "movie_id": np.arange(1, n_movies + 1),
            "title": [f"Movie {i}" for i in range(1, n_movies + 1)],
            "year": [None if i % 17 == 0 else 1950 + i % 50 for i in range(1, n_movies + 1)],
            "genres": ["|".join(sorted(set(rng.choice(GENRE_POOL, size=2)))) for _ in range(n_movies)],
        }
    )
    return ratings, movies


def random_split(ratings: pd.DataFrame, fraction: float = 0.25, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    shuffled = ratings.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby("user_id").cumcount()
    size = shuffled.groupby("user_id")["movie_id"].transform("size")
    test = rank < np.round(size * fraction)
    return shuffled[~test].sort_values(["user_id", "timestamp"]), shuffled[test].sort_values(["user_id", "timestamp"])


PARAMS = FeatureParams(seed=42, cutoff_quantiles=(0.5, 0.75), negatives_per_positive=3, als_iterations=3)


SHUFFLE_PARTITIONS = 4


def run_features(
    spark, train: pd.DataFrame, test: pd.DataFrame, movies: pd.DataFrame, params: FeatureParams = PARAMS
) -> dict[str, pd.DataFrame]:
    """compute_features on pandas inputs, outputs back as pandas (through Arrow, like the Parquet files).

    The shuffle partition count is pinned: the test session's Spark is shared, a step run in-process by
    another test sets its own count, and ALS's factors move in the last digits with the partitioning, so
    two calls compared with each other must run with the same one."""
    spark.conf.set("spark.sql.shuffle.partitions", str(SHUFFLE_PARTITIONS))
    movies = movies.astype({"year": "Int64"})
    outs = compute_features(
        spark, spark.createDataFrame(train), spark.createDataFrame(test), spark.createDataFrame(movies), params, "t"
    )
    return {name: df.toPandas() for name, df in outs.items()}


def feature_columns() -> list[str]:
    return [*fx.USER_COLUMNS, *fx.ITEM_COLUMNS]


def recommender_for(items: dict, users: list, family_name: str = "ranker", seed: int = 3):
    """A `Recommender` over synthetic item / user rows (no Spark): retrievers fit on the users' rated lists,
    a rating head and (for learned families) a state trained on random labels, so tests compare code paths,
    not quality."""
    import lightgbm as lgb

    from mlops.model import learners
    from mlops.model.candidates import RANKER_FEATURES
    from mlops.model.families import FAMILIES
    from mlops.model.ranking import Catalog
    from mlops.model.rating_input import HISTORY_FEATURES, RATING_FEATURES
    from mlops.model.recommender import Recommender
    from mlops.model.retrievers import Retrievers

    rng = np.random.default_rng(seed)
    catalog = Catalog(items)
    known = [u for u in users if u is not None]
    history = pd.DataFrame(
        [(k, m) for k, u in enumerate(known) for m in u[fx.RATED_COLUMN]], columns=["user_id", "movie_id"]
    )
    retrievers = Retrievers.fit(history, catalog.movie_ids, catalog.keys, 10.0)
    x = fx.build_matrix([known[int(r)] for r in rng.integers(0, len(known), 600)],
                        [items[int(m)] for m in rng.choice(catalog.movie_ids, 600)])  # fmt: skip
    x = np.hstack([x, rng.normal(size=(len(x), len(HISTORY_FEATURES)))])
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 20, "verbose": -1, "num_threads": 1}
    y = np.nan_to_num(x[:, fx.FEATURE_NAMES.index("cf_score")]) + x[:, -1] + rng.normal(0, 0.3, len(x)) > 0
    rating = lgb.train(params, lgb.Dataset(x, y.astype(int), feature_name=list(RATING_FEATURES)), 20)
    fam = FAMILIES[family_name]
    learned = None
    if fam.learned:
        n = 40 * 30
        table = learners.Table(np.repeat(np.arange(40), 30), rng.integers(1, 100, n),
                               rng.normal(size=(n, len(RANKER_FEATURES))).astype(np.float32),
                               (rng.random(n) < 0.2).astype(np.float32), np.full(n, 6))  # fmt: skip
        learned = learners.fit(fam, table, seed, {"rounds": 20, "min_data_in_leaf": 5})
    return Recommender(rating, fam, learned, retrievers.state())
