"""Parquet datasets addressed by object-store keys, committed by their manifest (real S3 API + Spark)."""

from __future__ import annotations

import pytest

from mlops.errors import DataError
from mlops.layout import manifest_key, split_key
from mlops.object_store import ObjectStore
from mlops.spark_io import dataset_exists, read_manifest, read_pandas, read_parquet, write_parquet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_write_commits_with_manifest_and_reads_back(spark, settings, s3_server):
    store = ObjectStore.from_settings(settings)
    key = split_key("t-sparkio", "train")
    df = spark.range(500).selectExpr("id AS user_id", "CAST(id % 3 AS INT) AS part", "id * 0.5 AS rating")
    manifest = write_parquet(df, key, settings, {"run_id": "t-sparkio", "inputs": ["x"]}, partition_by=["part"])

    assert manifest["row_count"] == 500
    assert manifest["run_id"] == "t-sparkio" and manifest["inputs"] == ["x"] and manifest["schema_version"] == 1
    assert [c["name"] for c in manifest["columns"]] == ["user_id", "part", "rating"]
    assert read_manifest(key, settings) == manifest
    keys = store.list_keys(key + "/")
    assert manifest_key(key) in keys and all(f"{key}/{f}" in keys for f in manifest["files"])
    assert not any(k.endswith((".crc", "_SUCCESS")) for k in keys)

    back = read_parquet(spark, key, settings)
    assert back.count() == 500
    assert back.agg({"rating": "sum"}).first()[0] == pytest.approx(sum(i * 0.5 for i in range(500)))
    assert len(read_pandas(key, settings)) == 500

    # a re-run replaces the output whole: no part of the first write survives
    write_parquet(df.limit(10), key, settings, {"run_id": "t-sparkio", "inputs": []})
    assert read_parquet(spark, key, settings).count() == 10
    assert read_manifest(key, settings)["row_count"] == 10


def test_uncommitted_dataset_is_missing(spark, settings, s3_server):
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    key = split_key("t-sparkio-missing", "test")
    store.put_bytes(f"{key}/part-0000.parquet", b"half-written")  # parts without a manifest
    assert not dataset_exists(key, settings)
    with pytest.raises(DataError, match=r"runs/t-sparkio-missing/split/test.*run split_dataset first"):
        read_parquet(spark, key, settings)


S3A_ROUND_TRIP = """
from mlops.settings import get_settings
from mlops.spark_io import read_manifest, read_parquet, spark_session, write_parquet

settings = get_settings()
assert settings.spark_io == "s3a"
spark = spark_session("tests-s3a", settings)
df = spark.range(300).selectExpr("id AS user_id", "CAST(id % 3 AS INT) AS part")
manifest = write_parquet(df, "runs/t-s3a/split/train", settings, {"run_id": "t-s3a", "inputs": []}, ["part"])
assert read_manifest("runs/t-s3a/split/train", settings) == manifest
print("ROWS", read_parquet(spark, "runs/t-s3a/split/train", settings).count(), manifest["row_count"])
spark.stop()
"""


def test_s3a_reads_and_writes_the_object_store_directly(settings, s3_server):
    """SPARK_IO=s3a natively: the S3A jars come from jvm/s3a/pom.xml (Maven), Spark talks to the S3 server.

    In a process of its own: the S3A jars go on the JVM's classpath at launch, and the session's JVM is up.
    """
    import os
    import subprocess
    import sys

    env = {**os.environ, "SPARK_IO": "s3a"}
    result = subprocess.run([sys.executable, "-c", S3A_ROUND_TRIP], env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ROWS 300 300" in result.stdout
    keys = ObjectStore.from_settings(settings).list_keys("runs/t-s3a/split/train/")
    assert any(k.endswith(".parquet") for k in keys) and manifest_key("runs/t-s3a/split/train") in keys
