"""Spark step `load_to_redis`: the run's serving set becomes a new feature-set version, then current.

Two sets per run since issue 26: the serving set (`features/serving/...`, every ingested rating) under the
run's version `layout.feature_set_version`, what users are answered from; and the evaluation set
(`features/online_*`, train + validation) under `layout.evaluation_set_version`, never current, what the
parity checks serve. A run written before the serving set existed loads its evaluation set as its version.

Spark reads `features/online_users`, `features/online_items` (and the one-row `online_meta` when present);
the driver streams the rows to Redis in pipelined batches under the run's feature-set version
(`layout.feature_set_version`), and only then switches `fs:current` (see `mlops.feature_store`). The
encoding is generic: the id column is the key and every other column goes into the entity's JSON, so this
step never needs to know the feature list.

Idempotent: re-running it for a run whose version is already loaded does not rewrite anything; it only
makes that version current again (which is also how to roll back to an older, unexpired version).

`--stage-only` (what the DAG uses) loads without switching: the promote step makes the set current
together with its model, so `fs:current` always names the features the champion was trained for, and a
run whose model loses or fails leaves serving as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import redis

from mlops.errors import CapacityError
from mlops.feature_store import RedisFeatureStore
from mlops.jobs.runner import job_parser, resolve, run
from mlops.layout import SERVING_PREFIX, evaluation_set_version, feature_set_version, features_key, split_key
from mlops.object_store import ObjectStore
from mlops.progress import stage
from mlops.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def entity_rows(df: DataFrame, id_column: str, total: int, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(id, {every other column}) for each row, moved to the driver as Arrow (far faster than Row objects)."""
    if id_column not in df.columns:
        raise ValueError(f"{label}: no {id_column!r} column (has {df.columns})")
    started = time.monotonic()
    done = 0
    for batch in df.toArrow().to_batches(max_chunksize=10_000):
        for features in batch.to_pylist():
            yield int(features.pop(id_column)), features
        done += batch.num_rows
        log.info("load_to_redis: %s %d/%d (%.0f%%, %.0f rows/s)", label, done, total, 100 * done / max(total, 1),
                 done / max(time.monotonic() - started, 1e-9))  # fmt: skip


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Load the run's serving set as its feature-set version (current unless `--stage-only`) and its
    evaluation set beside it (never current); returns the serving set's metadata."""
    from mlops.spark_io import dataset_exists

    parser = job_parser("Load the run's online snapshot into Redis as a new feature-set version")
    parser.add_argument("--batch-size", type=int, default=2000, help="SETs per pipelined round trip")
    parser.add_argument("--stage-only", action="store_true", help="load, but leave fs:current (promotion switches)")
    args = parser.parse_args(argv)
    run_id, settings = resolve(args, settings)
    store = ObjectStore.from_settings(settings)
    loader = _Loader(settings, store, args.batch_size)
    if not dataset_exists(features_key(run_id, SERVING_PREFIX + "online_users"), settings, store):
        # A run from before the serving set: its evaluation set is what serves.
        return loader.load(run_id, "", feature_set_version(run_id), activate=not args.stage_only)
    loader.load(run_id, "", evaluation_set_version(run_id), activate=False)
    return loader.load(run_id, SERVING_PREFIX, feature_set_version(run_id), activate=not args.stage_only)


class _Loader:
    """Loads one of a run's online snapshots into Redis under a version; one Spark session for all of them."""

    def __init__(self, settings: Settings, store: ObjectStore, batch_size: int) -> None:
        self.settings, self.store, self.batch_size = settings, store, batch_size
        self.fs = RedisFeatureStore.from_settings(settings)
        self._spark: Any = None

    def load(self, run_id: str, prefix: str, version: str, activate: bool) -> dict[str, Any]:
        """The snapshot under `features/{prefix}` as feature-set `version`; idempotent (a loaded version is
        only made current again when `activate`)."""
        from mlops import spark_capacity as capacity
        from mlops.spark_io import dataset_exists, read_manifest, read_parquet, spark_session

        settings, store, fs = self.settings, self.store, self.fs
        started = time.monotonic()
        if fs.exists(version):
            if not activate:
                log.info("load_to_redis: feature set %s is already loaded (staged)", version)
                return fs.metadata(version)
            previous = fs.switch_to(version)
            log.info("load_to_redis: feature set %s is already loaded; made it current (was %s)", version, previous)
            return fs.metadata(version)
        users_key, items_key, meta_key = (
            features_key(run_id, prefix + n) for n in ("online_users", "online_items", "online_meta")
        )
        users_manifest = read_manifest(users_key, settings, store)
        items_manifest = read_manifest(items_key, settings, store)
        train_key = split_key(run_id, "train")
        train = read_manifest(train_key, settings, store) if dataset_exists(train_key, settings, store) else {}
        capacity.check(settings, capacity.load_need(
            users_manifest["row_count"], len(users_manifest["columns"]),
            items_manifest["row_count"], len(items_manifest["columns"]), train.get("row_count", 0),
        ))  # fmt: skip
        self._spark = self._spark or spark_session("load_to_redis", settings)
        users = read_parquet(self._spark, users_key, settings, store)
        items = read_parquet(self._spark, items_key, settings, store)
        metadata: dict[str, Any] = {
            "run_id": run_id,
            "schema_version": users_manifest.get("schema_version"),
            "feature_names": users_manifest.get("feature_names"),
            "history": users_manifest.get("history"),
            "user_columns": [c for c in users.columns if c != "user_id"],
            "item_columns": [c for c in items.columns if c != "movie_id"],
            "inputs": [users_key, items_key],
        }
        if dataset_exists(meta_key, settings, store):
            rows = read_parquet(self._spark, meta_key, settings, store).collect()
            if len(rows) == 1:
                metadata.update(rows[0].asDict(recursive=True))
            else:
                metadata["online_meta"] = [r.asDict(recursive=True) for r in rows]
            metadata["inputs"].append(meta_key)
        log.info("load_to_redis %s: loading %d users and %d items as %s", run_id, users_manifest["row_count"],
                 items_manifest["row_count"], version)  # fmt: skip
        with stage("load_to_redis", f"write feature set {version}") as progress:
            try:
                meta = fs.write_feature_set(
                    version,
                    entity_rows(users, "user_id", users_manifest["row_count"], "users"),
                    entity_rows(items, "movie_id", items_manifest["row_count"], "items"),
                    metadata,
                    batch_size=self.batch_size,
                    activate=activate,
                )
            except redis.exceptions.OutOfMemoryError as exc:  # the meta is written last: nothing half-made serves
                raise CapacityError(
                    f"load_to_redis: Redis is full (maxmemory REDIS_MAXMEMORY_MB={settings.redis_maxmemory_mb}) "
                    f"while writing feature set {version} ({users_manifest['row_count']:,} users): raise "
                    "REDIS_MAXMEMORY_MB (Docker mode: with the redis service's mem_limit) and run the step again; "
                    "the current feature set still serves"
                ) from exc
            progress.rows = int(meta["n_users"]) + int(meta["n_items"])
            progress.note = f"{meta['n_users']:,} users, {meta['n_items']:,} items"
        log.info("load_to_redis %s: %d users, %d items loaded in %.1fs", version, meta["n_users"], meta["n_items"],
                 time.monotonic() - started)  # fmt: skip
        return meta


if __name__ == "__main__":
    run(main)
