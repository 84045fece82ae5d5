"""Spark step `split_dataset`: the run's ratings into `split/train` and `split/test`.

- `temporal` (default): each user's latest `TEST_FRACTION` of ratings are test, so the model is judged
  on the future, as in serving. Ties in time are ordered by movie id, so the split is deterministic.
- `random`: per-user stratified random split (the protocol of the published MovieLens benchmarks): each
  user's ratings are ordered by a hash of (seed, user, movie), reproducible with `SEED` on any cluster.
Either way a user with n >= 2 ratings has round(n * fraction) test ratings, at least 1 and at most n - 1,
so every such user is in both parts; a user with a single rating stays in train.
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

SHUFFLED_BYTES_PER_RATING = 40  # a rating row (4 columns) as Spark's shuffle writes it


def split(ratings: DataFrame, strategy: str, fraction: float, seed: int) -> DataFrame:
    """`ratings` with a boolean column `is_test`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if strategy == "temporal":
        order = [F.col("timestamp").desc(), F.col("movie_id").desc()]  # latest first
    elif strategy == "random":
        order = [F.xxhash64(F.lit(seed), "user_id", "movie_id"), F.col("movie_id")]
    else:
        raise ValueError(f"unknown split strategy {strategy!r}")
    by_user = Window.partitionBy("user_id")
    n = F.count(F.lit(1)).over(by_user)
    n_test = F.when(n < 2, F.lit(0)).otherwise(F.least(n - 1, F.greatest(F.lit(1), F.round(n * fraction))))
    rank = F.row_number().over(by_user.orderBy(*order))
    return ratings.withColumn("is_test", rank <= n_test)


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
    from pyspark.sql import functions as F

    from mlops import spark_capacity as capacity
    from mlops.spark_io import read_manifest, read_parquet, spark_session, uncommit, write_parquet

    args = job_parser("Split the run's ratings into train and test (temporal or per-user random)").parse_args(argv)
    run_id, settings = resolve(args, settings)
    started = time.monotonic()
    require_passed_gate(run_id, settings)
    source = normalized_key(run_id, "ratings")
    n_ratings = int(read_manifest(source, settings)["row_count"])
    capacity.check(settings, capacity.split_need(n_ratings))
    spark = spark_session("split_dataset", settings, capacity.shuffle_partitions(n_ratings * SHUFFLED_BYTES_PER_RATING))
    log.info("split_dataset %s: Spark session ready in %.1fs", run_id, time.monotonic() - started)
    with stage("split", f"{settings.split_strategy} split") as progress:
        ratings = read_parquet(spark, source, settings)
        marked = split(ratings, settings.split_strategy, settings.test_fraction, settings.seed).cache()
        stats = marked.groupBy("is_test").agg(F.count(F.lit(1)).alias("ratings"),
                                              F.countDistinct("user_id").alias("users"))  # fmt: skip
        parts = {("test" if r["is_test"] else "train"): r for r in stats.collect()}
        progress.rows = sum(int(r["ratings"]) for r in parts.values())
    counts = {p: int(parts[p]["ratings"]) if p in parts else 0 for p in ("train", "test")}
    users = {p: int(parts[p]["users"]) if p in parts else 0 for p in ("train", "test")}
    log.info("split_dataset %s: %s split, fraction %.2f, seed %d: %d train / %d test ratings",
             run_id, settings.split_strategy, settings.test_fraction, settings.seed,
             counts["train"], counts["test"])  # fmt: skip
    manifest = {
        "run_id": run_id,
        "inputs": [source],
        "strategy": settings.split_strategy,
        "test_fraction": settings.test_fraction,
        "seed": settings.seed,
        "counts": counts,
        "users": users,
    }
    for part in ("train", "test"):  # neither part of an earlier attempt stays readable beside a new one
        uncommit(split_key(run_id, part), settings)
    manifests = {}
    for part, is_test in (("train", False), ("test", True)):
        with stage("split", f"write {part}") as progress:
            rows = marked.where(F.col("is_test") == is_test).drop("is_test").repartition(4, "user_id")
            manifests[part] = write_parquet(rows, split_key(run_id, part), settings, manifest)
            progress.rows = counts[part]
    marked.unpersist()
    log.info("split_dataset %s: done in %.1fs", run_id, time.monotonic() - started)
    return manifests


if __name__ == "__main__":
    run(main)
