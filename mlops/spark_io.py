"""Spark sessions and Parquet datasets addressed by object-store keys.

A dataset is a prefix of Parquet part files plus `_manifest.json`, written last: a reader that finds no
manifest treats the dataset as absent, so a crashed writer never leaves something half-readable.

`SPARK_IO=staged`: Spark writes to a local scratch directory, the parts are uploaded through the S3 API,
then the manifest; reads download the committed prefix to a local cache (reused while the manifest is
unchanged) and Spark reads that. `SPARK_IO=s3a`: Spark reads and writes `s3a://` directly (the S3A jars
are in Docker's images; natively they come from `jvm/s3a/pom.xml`, resolved once by Maven) and the
manifest is still written last through the S3 API. Either way the object store is the system of record.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from mlops.errors import DataError
from mlops.layout import MANIFEST, manifest_key
from mlops.object_store import ObjectStore
from mlops.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LOOPBACK = ("127.0.0.1", "localhost")  # a cluster on this machine reaches the driver there

# Which step produces the datasets under each part of a run's prefix: named in "missing input" errors.
_PRODUCERS = {"raw": "ingest", "normalized": "ingest", "split": "split_dataset", "features": "feature_engineering"}


def spark_session(app_name: str, settings: Settings, shuffle_partitions: int = 8) -> SparkSession:
    """A session from the settings, tuned for a small machine: no UI, shuffle partitions sized by the
    caller from its data (the default 200 mostly schedules empty tasks on 2 cores), shuffle and spill
    files in a scratch directory of this process under SPARK_LOCAL_DIR, deleted when it exits."""
    from pyspark.sql import SparkSession

    from mlops.spark_capacity import step_scratch

    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.executor.memory", settings.spark_executor_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.local.dir", str(step_scratch(settings, app_name)))
        .config("spark.sql.parquet.compression.codec", "snappy")
    )
    if settings.spark_master.startswith("local") or urlparse(settings.spark_master).hostname in LOOPBACK:
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
    if settings.spark_io == "s3a":
        url = urlparse(settings.s3_endpoint_url)
        if jars := s3a_classpath():
            # On the JVM's own classpath (set at launch), where Hadoop's FileSystem loader looks; `spark.jars`
            # would load them in a child class loader that S3AFileSystem's lookup does not see.
            builder = builder.config("spark.driver.extraClassPath", jars).config("spark.executor.extraClassPath", jars)
        builder = (
            builder.config("spark.hadoop.fs.s3a.endpoint", settings.s3_endpoint_url)
            .config("spark.hadoop.fs.s3a.access.key", settings.s3_access_key)
            .config("spark.hadoop.fs.s3a.secret.key", settings.s3_secret_key)
            .config("spark.hadoop.fs.s3a.endpoint.region", settings.s3_region)
            .config("spark.hadoop.fs.s3a.path.style.access", "true")
            .config("spark.hadoop.fs.s3a.connection.ssl.enabled", str(url.scheme == "https").lower())
            .config("spark.hadoop.fs.s3a.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def s3a_classpath() -> str:
    """The S3A jars to add, or "" when Spark already carries them (Docker's images put them into PySpark's jars).

    Under spark-submit, `pyspark` is imported from $SPARK_HOME/python/lib/pyspark.zip, whose parent has no
    jars: SPARK_HOME (set by spark-submit) is where they are looked for first.
    """
    import pyspark

    homes = [Path(home) for home in (os.environ.get("SPARK_HOME"), str(Path(pyspark.__file__).parent)) if home]
    if any(any((home / "jars").glob("hadoop-aws-*.jar")) for home in homes):
        return ""
    from mlops.services import jvm

    return ":".join(jvm.classpath("s3a", "spark"))


def _s3a_path(key: str, settings: Settings) -> str:
    return f"s3a://{settings.s3_bucket}/{key}"


def _staging_root(settings: Settings) -> Path:
    return settings.path("local_dir") / "data" / "spark-staging"


def _cache_root(settings: Settings) -> Path:
    return settings.path("local_dir") / "data" / "cache"


def _producer(key: str) -> str:
    parts = key.split("/")
    section = parts[2] if len(parts) > 2 and parts[0] == "runs" else ""
    return _PRODUCERS.get(section, "the step that writes it")


def read_manifest(key: str, settings: Settings, store: ObjectStore | None = None) -> dict[str, Any]:
    """The manifest of the dataset at `key`; `DataError` when the dataset was never committed."""
    store = store or ObjectStore.from_settings(settings)
    try:
        return store.get_json(manifest_key(key))
    except KeyError:
        raise DataError(
            f"missing input {key!r}: no {MANIFEST} in bucket {store.bucket!r} (run {_producer(key)} first)"
        ) from None


def dataset_exists(key: str, settings: Settings, store: ObjectStore | None = None) -> bool:
    """Whether the dataset at `key` was committed (its manifest exists)."""
    return (store or ObjectStore.from_settings(settings)).exists(manifest_key(key))


def _columns(df: DataFrame) -> list[dict[str, str]]:
    return [{"name": f.name, "type": f.dataType.simpleString()} for f in df.schema.fields]


def _data_files(root: Path) -> list[Path]:
    """Parquet part files under a Spark output dir (partition sub-dirs included), without markers or CRCs."""
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))


def write_parquet(
    df: DataFrame,
    key: str,
    settings: Settings,
    manifest: dict[str, Any],
    partition_by: list[str] | None = None,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """Write `df` as the dataset at `key` and commit it with its manifest; returns the manifest.

    `manifest` carries what only the caller knows (`run_id`, `inputs`, anything else); this adds
    `schema_version` (unless given), `row_count`, `columns`, `files` and `created_at`. Re-running a step
    replaces its own output: the old manifest goes first, so no reader ever sees old and new parts mixed.
    """
    store = store or ObjectStore.from_settings(settings)
    store.ensure_bucket()
    uncommit(key, settings, store)
    writer = df.write.mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)

    if settings.spark_io == "s3a":
        writer.parquet(_s3a_path(key, settings))
        row_count = df.sparkSession.read.parquet(_s3a_path(key, settings)).count()
        files = [k[len(key) + 1 :] for k in store.list_keys(key + "/") if k.endswith(".parquet")]
    else:
        scratch = _staging_root(settings) / f"{uuid.uuid4().hex}"
        try:
            writer.parquet(str(scratch))
            parts = _data_files(scratch)
            row_count = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
            files = []
            for i, path in enumerate(parts, 1):
                rel = path.relative_to(scratch).as_posix()
                store.put_file(f"{key}/{rel}", path)
                files.append(rel)
                if i % 50 == 0:
                    log.info("%s: uploaded %d/%d part files", key, i, len(parts))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    full = {
        "schema_version": SCHEMA_VERSION,
        **manifest,
        "row_count": int(row_count),
        "columns": _columns(df),
        "partition_by": partition_by or [],
        "files": files,
        "created_at": datetime.now(UTC).isoformat(),
    }
    store.put_json(manifest_key(key), full)
    log.info("committed %s: %d rows, %d files", key, row_count, len(files))
    return full


def write_table(
    table: pa.Table,
    key: str,
    settings: Settings,
    manifest: dict[str, Any],
    rows_per_file: int = 2_000_000,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """Write an Arrow table as the dataset at `key`: the same files and manifest `write_parquet` makes.

    For steps that hold their data on the driver anyway (ingest): no Spark round trip needed.
    """
    store = store or ObjectStore.from_settings(settings)
    store.ensure_bucket()
    uncommit(key, settings, store)
    scratch = _staging_root(settings) / f"{uuid.uuid4().hex}"
    scratch.mkdir(parents=True)
    files = []
    try:
        for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
            name = f"part-{i:05d}.parquet"
            pq.write_table(table.slice(start, rows_per_file), scratch / name, compression="snappy")
            store.put_file(f"{key}/{name}", scratch / name)
            files.append(name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    full = {
        "schema_version": SCHEMA_VERSION,
        **manifest,
        "row_count": table.num_rows,
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "partition_by": [],
        "files": files,
        "created_at": datetime.now(UTC).isoformat(),
    }
    store.put_json(manifest_key(key), full)
    log.info("committed %s: %d rows, %d files", key, table.num_rows, len(files))
    return full


def uncommit(key: str, settings: Settings, store: ObjectStore | None = None) -> None:
    """Remove a previous output at `key`, manifest first, so it stops being readable before it changes."""
    store = store or ObjectStore.from_settings(settings)
    if store.exists(manifest_key(key)):
        log.info("replacing the existing dataset at %s", key)
        store.client.remove_object(store.bucket, manifest_key(key))
    store.delete_prefix(key)


def local_copy(key: str, settings: Settings, store: ObjectStore | None = None) -> tuple[Path, dict[str, Any]]:
    """A local directory holding the committed dataset at `key`, and its manifest.

    Downloads into a private temporary directory, then renames it into the cache, so concurrent readers
    never see a partial copy; a cached copy is reused while its manifest equals the stored one.
    """
    store = store or ObjectStore.from_settings(settings)
    manifest = read_manifest(key, settings, store)
    target = _cache_root(settings) / key
    cached_manifest = target / MANIFEST
    if cached_manifest.exists() and json.loads(cached_manifest.read_text()) == manifest:
        return target, manifest
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        for rel in manifest["files"]:
            store.get_file(f"{key}/{rel}", tmp / rel)
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    except OSError:
        if not cached_manifest.exists():  # lost a race against another reader: its copy is just as good
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, manifest


def read_parquet(spark: SparkSession, key: str, settings: Settings, store: ObjectStore | None = None) -> DataFrame:
    """The committed dataset at `key` as a DataFrame; `DataError` naming the key when it is missing."""
    if settings.spark_io == "s3a":
        read_manifest(key, settings, store)
        return spark.read.parquet(_s3a_path(key, settings))
    path, manifest = local_copy(key, settings, store)
    if not manifest["files"]:
        raise DataError(f"dataset {key!r} has no part files (its manifest lists none)")
    return spark.read.parquet(str(path))


def read_pandas(
    key: str, settings: Settings, store: ObjectStore | None = None, nullable_ints: bool = False
) -> pd.DataFrame:
    """The committed dataset at `key` as pandas, without Spark (for training and small tables).

    `nullable_ints`: integer columns become pandas `Int64`, so one with nulls (a movie's year) stays integer.
    """
    import pandas as pd

    path, manifest = local_copy(key, settings, store)
    if not manifest["files"]:
        raise DataError(f"dataset {key!r} has no part files (its manifest lists none)")
    table = pq.read_table(str(path), partitioning="hive")
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get if nullable_ints else None)
