"""Spark step `split_dataset`: the run's ratings into `split/train`, `split/validation` and `split/test`.

Validation is what every choice is made on (tuning, the EASE baseline's lambda); test is scored once,
by the model refit on train + validation with the chosen parameters.
- `temporal` (default): each user's latest `TEST_FRACTION` of ratings are test and the
  `VALIDATION_FRACTION` just before them validation, so the model is judged on the future, as in serving.
  Ties in time are ordered by movie id, so the split is deterministic.
- `random`: per-user stratified random split (the protocol of the published MovieLens benchmarks): each
  user's ratings are ordered by a hash of (seed, user, movie), reproducible with `SEED` on any cluster.
- `global_temporal`: one time cutoff for everyone (what production sees): ratings before the
  (1 - TEST_FRACTION - VALIDATION_FRACTION) time quantile are train, then validation up to the
  (1 - TEST_FRACTION) quantile, then test. A user who only appears after a cutoff is a cold user there.
Per-user strategies: a user with n >= 3 ratings has round(n * TEST_FRACTION) test ratings (1 to n - 2)
and round(n * VALIDATION_FRACTION) validation ratings (1 to what leaves one in train), so every such user
is in all three parts; a user with fewer than 3 ratings stays in train and is counted in the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlops.errors import DataError
from mlops.jobs.runner import job_parser, resolve, run
from mlops.layout import normalized_key, quality_report_key, split_key
from mlops.object_store import ObjectStore
from mlops.progress import stage
from mlops.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

PARTS = ("train", "validation", "test")
MIN_RATINGS_FOR_THREE_PARTS = 3
SHUFFLED_BYTES_PER_RATING = 40  # a rating row (4 columns) as Spark's shuffle writes it


def split(ratings: DataFrame, strategy: str, test_fraction: float, validation_fraction: float, seed: int) -> DataFrame:
    """`ratings` with a string column `part`: `train`, `validation` or `test`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if strategy == "global_temporal":
        return _split_global(ratings, test_fraction, validation_fraction)
    if strategy == "temporal":
        order = [F.col("timestamp").desc(), F.col("movie_id").desc()]  # latest first
    elif strategy == "random":
        order = [F.xxhash64(F.lit(seed), "user_id", "movie_id"), F.col("movie_id")]
    else:
        raise ValueError(f"unknown split strategy {strategy!r}")
    by_user = Window.partitionBy("user_id")
    n = F.count(F.lit(1)).over(by_user)
    few = n < MIN_RATINGS_FOR_THREE_PARTS
    n_test = F.when(few, F.lit(0)).otherwise(F.least(n - 2, F.greatest(F.lit(1), F.round(n * test_fraction))))
    n_val = F.when(few, F.lit(0)).otherwise(
        F.least(n - n_test - 1, F.greatest(F.lit(1), F.round(n * validation_fraction)))
    )
    rank = F.row_number().over(by_user.orderBy(*order))
    part = F.when(rank <= n_test, "test").when(rank <= n_test + n_val, "validation").otherwise("train")
    return ratings.withColumn("part", part)


def _split_global(ratings: DataFrame, test_fraction: float, validation_fraction: float) -> DataFrame:
    """One cutoff pair for everyone, at exact time quantiles; ratings at a cutoff's second go after it."""
    from pyspark.sql import functions as F

    from mlops.jobs.feature_engineering import exact_quantiles  # exact, in memory independent of the rows

    q_val, q_test = 1.0 - test_fraction - validation_fraction, 1.0 - test_fraction
    c_val, c_test = exact_quantiles(ratings, "timestamp", [q_val, q_test])
    if c_val >= c_test:
        raise DataError(
            f"global_temporal split: the validation and test cutoffs coincide (timestamp {c_val}); the ratings' "
            "times are too coarse for VALIDATION_FRACTION/TEST_FRACTION: use a per-user strategy or larger fractions"
        )
    ts = F.col("timestamp")
    part = F.when(ts >= c_test, "test").when(ts >= c_val, "validation").otherwise("train")
    return ratings.withColumn("part", part)


def split_report(marked: DataFrame) -> dict[str, Any]:
    """Ratings and users per part; users kept whole in train (too few ratings); cold users of each held-out part."""
    from pyspark.sql import functions as F

    stats = {r["part"]: r for r in marked.groupBy("part").agg(
        F.count(F.lit(1)).alias("ratings"), F.countDistinct("user_id").alias("users")).collect()}  # fmt: skip
    per_user = marked.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"), F.sum((F.col("part") == "train").cast("int")).alias("n_train")
    )
    few = per_user.where(F.col("n") < MIN_RATINGS_FOR_THREE_PARTS).count()
    cold = {
        p: marked.where(F.col("part") == p).select("user_id").distinct()
        .join(per_user.where(F.col("n_train") == 0), "user_id").count()
        for p in ("validation", "test")
    }  # fmt: skip
    return {
        "counts": {p: int(stats[p]["ratings"]) if p in stats else 0 for p in PARTS},
        "users": {p: int(stats[p]["users"]) if p in stats else 0 for p in PARTS},
        "users_train_only_too_few_ratings": int(few),
        "cold_users": cold,
    }


def require_passed_gate(run_id: str, settings: Settings) -> None:
    """Refuse to split data the quality gate has not passed (run alone, the step would skip the gate)."""
    store = ObjectStore.from_settings(settings)
    key = quality_report_key(run_id, "validate")
    report = store.get_json(key) if store.exists(key) else None
    if report is None:
        raise DataError(f"run {run_id} has no quality report {key!r}: run validate first")
    if not report.get("passed"):
        raise DataError(f"run {run_id} failed the quality gate ({report.get('error', {}).get('message')}); "
                        "fix the input and re-run ingest and validate")  # fmt: skip


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Pipeline step: split the run's normalized ratings (after the quality gate passed); the parts' manifests."""
    from pyspark.sql import functions as F

    from mlops import spark_capacity as capacity
    from mlops.spark_io import read_manifest, read_parquet, spark_session, uncommit, write_parquet

    args = job_parser("Split the run's ratings into train, validation and test").parse_args(argv)
    run_id, settings = resolve(args, settings)  # fractions are validated here, before Spark starts
    started = time.monotonic()
    require_passed_gate(run_id, settings)
    source = normalized_key(run_id, "ratings")
    n_ratings = int(read_manifest(source, settings)["row_count"])
    capacity.check(settings, capacity.split_need(n_ratings))
    spark = spark_session("split_dataset", settings, capacity.shuffle_partitions(n_ratings * SHUFFLED_BYTES_PER_RATING))
    log.info("split_dataset %s: Spark session ready in %.1fs", run_id, time.monotonic() - started)
    s = settings
    with stage("split", f"{s.split_strategy} split") as progress:
        ratings = read_parquet(spark, source, settings)
        marked = split(ratings, s.split_strategy, s.test_fraction, s.validation_fraction, s.seed).cache()
        report = split_report(marked)
        progress.rows = sum(report["counts"].values())
    for part in PARTS:
        if report["counts"][part] == 0:
            raise DataError(
                f"split {s.split_strategy} of run {run_id} left no {part} ratings "
                f"(TEST_FRACTION={s.test_fraction}, VALIDATION_FRACTION={s.validation_fraction})"
            )
    log.info("split_dataset %s: %s split, test %.2f, validation %.2f, seed %d: %s", run_id, s.split_strategy,
             s.test_fraction, s.validation_fraction, s.seed, report)  # fmt: skip
    manifest = {
        "run_id": run_id,
        "inputs": [source],
        "strategy": s.split_strategy,
        "test_fraction": s.test_fraction,
        "validation_fraction": s.validation_fraction,
        "seed": s.seed,
        **report,
    }
    for part in PARTS:  # no part of an earlier attempt stays readable beside a new one
        uncommit(split_key(run_id, part), settings)
    manifests = {}
    for part in PARTS:
        with stage("split", f"write {part}") as progress:
            rows = marked.where(F.col("part") == part).drop("part").repartition(4, "user_id")
            manifests[part] = write_parquet(rows, split_key(run_id, part), settings, manifest)
            progress.rows = report["counts"][part]
    marked.unpersist()
    log.info("split_dataset %s: done in %.1fs", run_id, time.monotonic() - started)
    return manifests


if __name__ == "__main__":
    run(main)
