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
