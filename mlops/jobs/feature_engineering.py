"""Spark step `feature_engineering`: point-in-time training examples, evaluation examples, online snapshot.

Inputs (run-scoped): the split's `train` / `validation` / `test` ratings and the normalized `movies`.
The outputs below are computed twice (issue 14): from train + validation with the test ratings as
evaluation pairs (what is served and refit on), and under `validation/` from train alone with the
validation ratings as evaluation pairs (what model selection uses). Each is a Parquet dataset with a
manifest (schema version `features.SCHEMA_VERSION`):
- `train_examples`: the train ratings from the first time cutoff on, each with user columns aggregated
  over that user's strictly earlier ratings and item columns + ALS factors from a snapshot of all ratings
  strictly before the cutoff that precedes it (Feast-style as-of join), plus `NEGATIVES_PER_POSITIVE`
  sampled movies the user never rated, labelled 0, with the same user state. Above
  `TRAINING_EXAMPLES_MAX` examples they come from a share of the users (by a hash of the user id): each
  kept row is exactly what the uncapped step computes for it, since item columns still see every rating;
- `eval_examples`: the test ratings with the online snapshot's features (train history only, as serving);
- `online_users` / `online_items` / `online_meta`: features from all train history, what load_to_redis
  loads and what the model serves from.

Why cutoffs: item statistics and ALS factors need the whole population's history, so they are
materialized at a few cutoffs (train-time quantiles) instead of per example; an example at time t uses
the latest cutoff <= t, so nothing at or after t can reach it. The user's own history is exact (< t).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import features as fx
from mlops.errors import DataError
from mlops.jobs.runner import job_parser, resolve, run
from mlops.layout import (
    SELECTION_PREFIX,
    SERVING_PREFIX,
    feature_set_version,
    features_key,
    normalized_key,
    split_key,
)
from mlops.progress import stage
from mlops.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

OUTPUTS = ("train_examples", "eval_examples", "online_users", "online_items", "online_meta")
SERVING_OUTPUTS = ("online_users", "online_items", "online_meta")
POPULAR_FALLBACK = 100  # movie ids kept in online_meta for the cold-start fallback


@dataclass(frozen=True)
class FeatureParams:
    """Knobs of the step; logged with the model so a run can be reproduced."""

    seed: int = 42
    cutoff_quantiles: tuple[float, ...] = (0.5, 0.625, 0.75, 0.875)
    negatives_per_positive: int = 4
    als_rank: int = fx.CF_RANK
    als_iterations: int = 10
    als_reg: float = 0.1
    als_alpha: float = 1.0
    fold_in_reg: float = 10.0
    max_train_examples: int = 0  # 0: every user's examples; else about this many, from a share of the users


USER_SAMPLE_BUCKETS = 1_000_000  # resolution of the user share kept when training examples are capped


def user_share(expected_examples: int, max_examples: int) -> float:
    """Share of users whose examples are kept: all of them (1.0) unless the expected count passes the cap."""
    if max_examples <= 0 or expected_examples <= max_examples:
        return 1.0
    return max_examples / expected_examples


def sampled_users(ratings: DataFrame, share: float, seed: int) -> DataFrame:
    """The rows of a deterministic share of the users, by a hash of (user, seed): the same users in every
    snapshot and every rerun, so each kept user's examples are all there."""
    from pyspark.sql import functions as F

    if share >= 1.0:
        return ratings
    bucket = F.pmod(F.xxhash64(F.col("user_id"), F.lit(seed)), F.lit(USER_SAMPLE_BUCKETS))
    return ratings.where(bucket < F.lit(math.ceil(share * USER_SAMPLE_BUCKETS)))


# -- ALS snapshot -----------------------------------------------------------------------------------------------


def als_snapshot(spark: SparkSession, history: DataFrame, params: FeatureParams) -> tuple[DataFrame, DataFrame]:
    """Implicit ALS on `history` (who rated what); returns (y: movie_id, y_00.. item factors,
    keys: movie_id, k_00.. = (Y'Y + reg I)^-1 y, so that sum_j y_j . k_i is the least-squares fold-in
    score of a user who rated the movies j). Movies absent from `history` get no row (zeros downstream)."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    data = history.select(
        F.col("user_id").cast("int").alias("user_id"),
        F.col("movie_id").cast("int").alias("movie_id"),
        F.lit(1.0).alias("seen"),
    )
    als = ALS(
        rank=params.als_rank,
        maxIter=params.als_iterations,
        regParam=params.als_reg,
        alpha=params.als_alpha,
        implicitPrefs=True,
        userCol="user_id",
        itemCol="movie_id",
        ratingCol="seen",
        seed=params.seed,
        coldStartStrategy="drop",
    )
    model = als.fit(data)
    rows = sorted((r.id, r.features) for r in model.itemFactors.collect())
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    y = np.array([r[1] for r in rows], dtype=np.float64).reshape(len(rows), params.als_rank)
    a = np.linalg.inv(y.T @ y + params.fold_in_reg * np.eye(params.als_rank))
    keys = y @ a  # a is symmetric
    schema_y = "movie_id int, " + ", ".join(f"y_{d:02d} double" for d in range(params.als_rank))
    schema_k = "movie_id int, " + ", ".join(f"k_{d:02d} double" for d in range(params.als_rank))
    y_df = spark.createDataFrame([(int(i), *map(float, v)) for i, v in zip(ids, y, strict=True)], schema_y)
    k_df = spark.createDataFrame([(int(i), *map(float, v)) for i, v in zip(ids, keys, strict=True)], schema_k)
    return y_df, k_df


def _with_factors(ratings: DataFrame, y: DataFrame, movies_g: DataFrame) -> DataFrame:
    """Ratings with the rated movie's genre flags and item factors (zeros when the snapshot lacks it)."""
    from pyspark.sql import functions as F

    genres = movies_g.select("movie_id", *[f"g_{s}" for s in fx.GENRE_SLUGS])
    out = ratings.join(F.broadcast(genres), "movie_id", "left").join(F.broadcast(y), "movie_id", "left")
    return out.na.fill(0, [f"g_{s}" for s in fx.GENRE_SLUGS]).na.fill(0.0, [f"y_{d:02d}" for d in range(fx.CF_RANK)])


# -- cutoffs ----------------------------------------------------------------------------------------------------

QUANTILE_SLICES = 1024  # value slices counted per pass when narrowing down an exact quantile
QUANTILE_COLLECT = 200_000  # values few enough to sort on the driver


def exact_quantiles(df: DataFrame, column: str, quantiles: Sequence[float]) -> list[int]:
    """The exact quantiles of an integer column, as `approxQuantile(column, quantiles, 0.0)` gives them
    (the value of rank ceil(q * n) in sorted order), in memory independent of the row count.

    `approxQuantile` with a relative error of 0 ships every value to the driver (tens of bytes each: about
    1 GB at 20M ratings, over `spark.driver.maxResultSize`). Here each pass counts the values per slice of
    the current range (a table of at most QUANTILE_SLICES rows), keeps the slice that holds the rank, and
    stops when that slice is small enough to sort on the driver.
    """
    from pyspark.sql import functions as F

    values = df.select(F.col(column).cast("long").alias("v"))
    n, lo, hi = values.agg(F.count("v"), F.min("v"), F.max("v")).first()
    out = []
    for q in quantiles:
        rank, low, high, inside = max(1, math.ceil(q * n)), int(lo), int(hi), n
        while inside > QUANTILE_COLLECT:
            width = -(-(high - low + 1) // QUANTILE_SLICES)
            part = values.where(F.col("v").between(low, high))
            counts = dict(part.groupBy(F.floor((F.col("v") - low) / width).cast("long")).count().collect())
            for b in sorted(counts):
                if rank <= counts[b]:
                    low, high, inside = low + b * width, min(high, low + (b + 1) * width - 1), counts[b]
                    break
                rank -= counts[b]
            if width == 1:  # a single value holds the rank
                break
        if low == high:
            out.append(low)
            continue
        chunk = sorted(r.v for r in values.where(F.col("v").between(low, high)).collect())
        out.append(int(chunk[rank - 1]))
    return out


# -- negatives --------------------------------------------------------------------------------------------------


def sample_negatives(
    positives: DataFrame, catalog: DataFrame, train: DataFrame, per_positive: int, seed: int
) -> DataFrame:
    """For each example row, `per_positive` movies the user never rated in train, drawn uniformly from the
    catalog by a hash of (user, movie, time, draw, seed): deterministic whatever Spark's partitioning.

    The draws, the filter against train and the ranking work on the example's key alone (user, movie,
    time): each example is drawn 3 x `per_positive` times, so carrying its ~80 user columns through those
    shuffles would move most of the step's data. The chosen movies are joined back to the example's row
    once at the end (the key is unique: a user rates a movie once).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Position of each movie in the sorted catalog: a small table (one row per movie), numbered on the
    # driver, where a row_number over the whole catalog would be a window computed in one task.
    ids = sorted(int(r.movie_id) for r in catalog.select("movie_id").collect())
    n_catalog = len(ids)
    indexed = positives.sparkSession.createDataFrame(list(enumerate(ids)), "_idx long, movie_id int")
    key = ["user_id", "_pos_movie", "timestamp"]
    draws = positives.select(
        "user_id",
        F.col("movie_id").alias("_pos_movie"),
        "timestamp",
        F.explode(F.sequence(F.lit(0), F.lit(3 * per_positive - 1))).alias("_draw"),
    )
    draws = draws.withColumn(
        "_idx", F.pmod(F.xxhash64("user_id", "_pos_movie", "timestamp", "_draw", F.lit(seed)), F.lit(n_catalog))
    )
    cand = draws.join(F.broadcast(indexed), "_idx").drop("_idx")
    cand = cand.join(train.select("user_id", "movie_id"), ["user_id", "movie_id"], "left_anti")
    w = Window.partitionBy(*key).orderBy("_draw")
    cand = cand.withColumn("_rank", F.row_number().over(w)).where(F.col("_rank") <= per_positive)
    chosen = cand.select(*key, "movie_id").dropDuplicates()
    return positives.withColumnRenamed("movie_id", "_pos_movie").join(chosen, key).drop("_pos_movie")


# -- the step ---------------------------------------------------------------------------------------------------


def _check_inputs(train: DataFrame, test: DataFrame, movies: DataFrame) -> None:
    from pyspark.sql import functions as F

    for name, df, cols in (
        ("split/train", train, ("user_id", "movie_id", "rating", "timestamp")),
        ("split/test", test, ("user_id", "movie_id", "rating", "timestamp")),
        ("normalized/movies", movies, ("movie_id", "year", "genres")),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"{name}: missing column(s) {missing}; expected {list(cols)}")
    if train.limit(1).count() == 0:
        raise DataError("split/train: no ratings; feature_engineering needs a non-empty training split")
    nulls = train.where(F.col("timestamp").isNull() | F.col("rating").isNull()).limit(1).collect()
    if nulls:
        raise DataError(f"split/train: null timestamp or rating in row {nulls[0].asDict()}")
    bad = fx.unknown_genres(movies)
    if bad:
        raise DataError(f"normalized/movies: column genres holds names outside the canonical vocabulary: {bad}")


def _prepared(train: DataFrame, movies: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The ratings with their types, cached; the movies with one 0/1 column per genre, plus a metadata-less
    row for every movie rated but missing from the movies table."""
    from pyspark.sql import functions as F

    train = train.select(
        F.col("user_id").cast("int"),
        F.col("movie_id").cast("int"),
        F.col("rating").cast("double"),
        F.col("timestamp").cast("long"),
    ).cache()
    movies_g = movies.select(F.col("movie_id").cast("int"), F.col("year"), *fx.genre_flag_columns())
    orphans = train.select("movie_id").distinct().join(movies_g, "movie_id", "left_anti")
    movies_g = movies_g.unionByName(orphans, allowMissingColumns=True).na.fill(0, [f"g_{s}" for s in fx.GENRE_SLUGS])
    return train, movies_g.cache()


def _online(
    spark: SparkSession, history: DataFrame, movies_g: DataFrame, params: FeatureParams, run_id: str,
    cutoffs: Sequence[int],
) -> tuple[DataFrame, DataFrame, DataFrame]:  # fmt: skip
    """The online snapshot of `history` (every rating in it; cutoff just after its last one): user rows with
    their rated lists, item rows with ALS keys, and the one-row metadata."""
    from pyspark.sql import functions as F

    y, keys = als_snapshot(spark, history, params)
    gm, gl = _global_stats(history)
    online_items = fx.with_item_keys(
        fx.item_aggregates(history, movies_g, as_of=False, global_mean=gm, global_like=gl), keys
    ).cache()
    online_users = fx.user_aggregates(_with_factors(history, y, movies_g), as_of=False)
    rated = history.groupBy("user_id").agg(
        F.sort_array(F.collect_list("movie_id")).alias(fx.RATED_COLUMN),
        F.sort_array(F.collect_list(F.when(F.col("rating") >= fx.LIKE_THRESHOLD, F.col("movie_id")))).alias(
            fx.LIKED_COLUMN
        ),
    )
    online_users = online_users.join(rated, "user_id").cache()
    popular = [
        int(r.movie_id)
        for r in history.groupBy("movie_id")
        .count()
        .orderBy(F.desc("count"), "movie_id")
        .limit(POPULAR_FALLBACK)
        .collect()
    ]
    n_ratings = history.count()
    max_ts = int(history.agg(F.max("timestamp")).first()[0])
    meta = spark.createDataFrame(
        [(run_id, fx.SCHEMA_VERSION, popular, int(n_ratings), gm, gl, max_ts + 1, list(cutoffs), fx.CF_RANK)],
        "feature_set string, schema_version int, popular_movie_ids array<int>, n_train_ratings long, "
        "global_mean double, global_like_rate double, snapshot_cutoff long, training_cutoffs array<long>, cf_rank int",
    )
    return online_users, online_items, meta


def serving_features(
    spark: SparkSession, ratings: DataFrame, movies: DataFrame, params: FeatureParams, run_id: str
) -> dict[str, DataFrame]:
    """The serving set (issue 26): the online snapshot of every ingested rating, computed by the same code
    as the evaluation set's, so a user's rated list and aggregates include their held-out ratings too."""
    history, movies_g = _prepared(ratings, movies)
    users, items, meta = _online(spark, history, movies_g, params, run_id, [])
    return {"online_users": users, "online_items": items, "online_meta": meta}


def compute_features(
    spark: SparkSession, train: DataFrame, test: DataFrame, movies: DataFrame, params: FeatureParams, run_id: str
) -> dict[str, DataFrame]:
    """All five outputs as DataFrames (lazy apart from the ALS fits and a few small collects)."""
    from pyspark.sql import functions as F

    _check_inputs(train, test, movies)
    started = time.monotonic()
    cols = ["user_id", "movie_id", "rating", "timestamp"]
    train, movies_g = _prepared(train, movies)
    test = test.select(*cols)

    n_train = train.count()
    max_ts = int(train.agg(F.max("timestamp")).first()[0])
    cutoffs = exact_quantiles(train, "timestamp", params.cutoff_quantiles)
    cutoffs = sorted(set(cutoffs))
    log.info("feature_engineering: %d train ratings, cutoffs %s (max ts %d)", n_train, cutoffs, max_ts)
    expected = train.where(F.col("timestamp") >= cutoffs[0]).count() * (1 + params.negatives_per_positive)
    share = user_share(expected, params.max_train_examples)
    if share < 1.0:
        log.info(
            "feature_engineering: about %d training examples expected, over TRAINING_EXAMPLES_MAX=%d: "
            "examples of %.1f%% of the users (hash of user id); item columns and ALS still see every rating",
            expected,
            params.max_train_examples,
            100 * share,
        )
    train_users = sampled_users(train, share, params.seed)

    examples: list[DataFrame] = []
    for k, cutoff in enumerate(cutoffs):
        end = cutoffs[k + 1] if k + 1 < len(cutoffs) else max_ts + 1
        history = train.where(F.col("timestamp") < cutoff)
        gm, gl = _global_stats(history)
        y, keys = als_snapshot(spark, history, params)
        upto = train.where(F.col("timestamp") < end)
        users_upto = train_users.where(F.col("timestamp") < end)
        users_asof = fx.user_aggregates(_with_factors(users_upto, y, movies_g), as_of=True).where(
            F.col("timestamp") >= cutoff
        )
        users_asof = users_asof.withColumn("label", (F.col("rating") >= fx.LIKE_THRESHOLD).cast("int"))
        users_asof = users_asof.withColumn("is_negative", F.lit(0)).cache()
        negatives = sample_negatives(
            users_asof.drop("rating", "label", "is_negative"),
            movies_g,
            train_users,
            params.negatives_per_positive,
            params.seed + k,
        ).select(
            "*", F.lit(None).cast("double").alias("rating"), F.lit(0).alias("label"), F.lit(1).alias("is_negative")
        )
        pairs = users_asof.unionByName(negatives)
        # As-of join of the item side: each (movie, time) queried sees only the movie's earlier ratings.
        events = upto.select("movie_id", "timestamp", "rating", F.lit(1).alias("_event")).unionByName(
            pairs.select(
                "movie_id", "timestamp", F.lit(None).cast("double").alias("rating"), F.lit(0).alias("_event")
            ).dropDuplicates(["movie_id", "timestamp"])
        )
        items_asof = fx.item_aggregates(events, movies_g, as_of=True, global_mean=gm, global_like=gl)
        items_asof = fx.with_item_keys(items_asof, keys)
        rows = pairs.join(items_asof, ["movie_id", "timestamp"], "left").withColumn("snapshot", F.lit(k))
        examples.append(rows)
        log.info(
            "feature_engineering: snapshot %d/%d (cutoff %d) planned, ALS fitted (%.0fs)",
            k + 1,
            len(cutoffs),
            cutoff,
            time.monotonic() - started,
        )

    train_examples = examples[0]
    for more in examples[1:]:
        train_examples = train_examples.unionByName(more)

    online_users, online_items, meta = _online(spark, train, movies_g, params, run_id, cutoffs)
    eval_examples = (
        test.join(online_users.drop(fx.RATED_COLUMN, fx.LIKED_COLUMN), "user_id", "left")
        .join(online_items, "movie_id", "left")
        .withColumn("label", (F.col("rating") >= fx.LIKE_THRESHOLD).cast("int"))
    )
    return {
        "train_examples": train_examples,
        "eval_examples": eval_examples,
        "online_users": online_users,
        "online_items": online_items,
        "online_meta": meta,
    }


def _global_stats(history: DataFrame) -> tuple[float, float]:
    """Mean rating and like rate of `history`: the smoothing prior of movie means (3.5 / 0.5 when empty)."""
    from pyspark.sql import functions as F

    row = history.agg(
        F.avg("rating").alias("gm"), F.avg((F.col("rating") >= fx.LIKE_THRESHOLD).cast("double")).alias("gl")
    ).first()
    return (float(row["gm"]) if row["gm"] is not None else 3.5, float(row["gl"]) if row["gl"] is not None else 0.5)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Pipeline step: features of the run's split, once for model selection and once for the final model; manifests."""
    from mlops import spark_capacity as capacity
    from mlops.spark_io import read_manifest, read_parquet, spark_session, uncommit, write_parquet

    parser = job_parser("Point-in-time features: offline train/eval examples and the online snapshot")
    parser.add_argument("--negatives-per-positive", type=int, default=FeatureParams.negatives_per_positive)
    args = parser.parse_args(argv)
    run_id, settings = resolve(args, settings)
    params = FeatureParams(
        seed=settings.seed,
        negatives_per_positive=args.negatives_per_positive,
        max_train_examples=settings.training_examples_max,
    )
    started = time.monotonic()
    inputs = {
        "train": split_key(run_id, "train"),
        "validation": split_key(run_id, "validation"),
        "test": split_key(run_id, "test"),
        "movies": normalized_key(run_id, "movies"),
    }
    # The bigger of the two computations below has train + validation as its history.
    n_train = sum(int(read_manifest(inputs[p], settings)["row_count"]) for p in ("train", "validation"))
    need = capacity.features_need(n_train, params.negatives_per_positive, params.max_train_examples)
    capacity.check(settings, need)
    # A failed attempt must not leave this run's outputs of an earlier attempt readable beside new ones.
    for name in (prefix + output for prefix in ("", SELECTION_PREFIX) for output in OUTPUTS):
        uncommit(features_key(run_id, name), settings)
    for name in SERVING_OUTPUTS:
        uncommit(features_key(run_id, SERVING_PREFIX + name), settings)
    spark = spark_session("feature_engineering", settings, capacity.shuffle_partitions(need.scratch_bytes // 4))
    frames = {name: read_parquet(spark, key, settings) for name, key in inputs.items()}
    # Issue 14 (three-way split): the same computation on two histories, one after the other. Model
    # selection (SELECTION_PREFIX): history = train only, evaluation pairs = validation, so no choice sees
    # the test rows. Final outputs (what is served, the refit and the test pairs): train + validation.
    history = frames["train"].unionByName(frames["validation"].select(*frames["train"].columns))
    passes = (
        (SELECTION_PREFIX, frames["train"], frames["validation"], "train"),
        ("", history, frames["test"], "train+validation"),
    )
    manifests: dict[str, Any] = {}

    def write(outputs: dict[str, DataFrame], prefix: str, described: str) -> None:
        for output, frame in outputs.items():
            name = prefix + output
            with stage("features", f"write {name}") as progress:
                manifests[name] = write_parquet(
                    frame,
                    features_key(run_id, name),
                    settings,
                    {
                        "run_id": run_id,
                        "schema_version": fx.SCHEMA_VERSION,
                        "feature_set": feature_set_version(run_id),
                        "inputs": inputs,
                        "history": described,
                        "params": vars(params),
                        "feature_names": list(fx.FEATURE_NAMES),
                    },
                )
                progress.rows = int(manifests[name]["row_count"])
            if manifests[name]["row_count"] == 0 and output != "eval_examples":
                raise DataError(f"feature_engineering produced an empty {name}; check the split of run {run_id}")
        spark.catalog.clearCache()  # a pass's cached tables are not read by the next

    for prefix, train, held_out, described in passes:
        with stage("features", f"history {described}: cutoffs, ALS snapshots, plans"):
            outputs = compute_features(spark, train, held_out, frames["movies"], params, run_id)
        write({output: outputs[output] for output in OUTPUTS}, prefix, described)
    # The serving set (issue 26): every ingested rating, held-out ones included, so that serving knows all
    # of them (evaluation, parity and promotion read the sets above, whose history never saw the test rows).
    everything = history.unionByName(frames["test"].select(*frames["train"].columns))
    with stage("features", "history every rating: the serving set's ALS snapshot"):
        serving = serving_features(spark, everything, frames["movies"], params, run_id)
    write(serving, SERVING_PREFIX, "train+validation+test")
    log.info("feature_engineering: done in %.1fs", time.monotonic() - started)
    return manifests


if __name__ == "__main__":
    run(main)
