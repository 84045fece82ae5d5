"""Local mode's standalone Spark cluster: what `up` would launch for SPARK_WORKERS, and bad combinations."""

from __future__ import annotations

import pytest

from mlops.services import specs
from mlops.settings import SettingsError


def test_workers_need_a_standalone_master_url(base_settings):
    with pytest.raises(SettingsError, match=r"SPARK_WORKERS=2 .* SPARK_MASTER must be the spark://host:port"):
        base_settings.replace(spark_workers=2, spark_master="local[*]").validate()
    with pytest.raises(SettingsError, match="SPARK_WORKERS=-1"):
        base_settings.replace(spark_workers=-1).validate()


def test_no_cluster_without_workers(base_settings, tmp_path):
    assert specs.spark_cluster(base_settings, tmp_path / "spark", tmp_path / "scratch") == []


def test_master_and_workers_from_pyspark_classes(base_settings, tmp_path):
    settings = base_settings.replace(
        spark_master="spark://127.0.0.1:17077", spark_workers=2, spark_master_ui_url="http://127.0.0.1:18081",
        spark_executor_memory="3g",
    ).validate()  # fmt: skip
    master, *workers = specs.spark_cluster(settings, tmp_path / "spark", tmp_path / "scratch")
    assert master.argv[0].endswith("pyspark/bin/spark-class")
    assert master.argv[1:] == ("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", "17077",
                               "--webui-port", "18081")  # fmt: skip
    assert (master.port, master.url) == (17077, "http://127.0.0.1:18081")
    assert [w.name for w in workers] == ["spark-worker-0", "spark-worker-1"]
    for i, worker in enumerate(workers):
        assert worker.argv[1] == "org.apache.spark.deploy.worker.Worker"
        assert worker.argv[-1] == "spark://127.0.0.1:17077" and "3g" in worker.argv
        assert worker.env["SPARK_LOCAL_DIRS"] == str(tmp_path / "scratch" / f"worker-{i}")
