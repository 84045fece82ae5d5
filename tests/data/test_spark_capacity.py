"""A Spark step too big for the disk or the configured memory stops before it starts, says why, and
leaves nothing half-written; scratch directories of dead steps are deleted."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

from mlops import spark_capacity as capacity
from mlops.errors import CapacityError
from mlops.jobs import feature_engineering, ingest, split_dataset, validate
from mlops.jobs.runner import EXIT_DATA_ERROR, run
from mlops.layout import features_key
from mlops.object_store import ObjectStore
from mlops.settings import PROJECT_ROOT
from mlops.spark_io import read_manifest, write_parquet


def test_sizes_parse_like_the_jvm_and_bad_ones_name_the_setting():
    assert capacity.parse_size("512m", "X") == 512 * capacity.MIB
    assert capacity.parse_size("4g", "X") == 4 * capacity.GIB
    assert capacity.parse_size("1.5G", "X") == int(1.5 * capacity.GIB)
    with pytest.raises(CapacityError, match="SPARK_DRIVER_MEMORY='lots'"):
        capacity.parse_size("lots", "SPARK_DRIVER_MEMORY")


def test_low_disk_is_reported_with_the_space_needed(base_settings, tmp_path):
    settings = base_settings.replace(spark_local_dir=str(tmp_path / "scratch"))
    free = shutil.disk_usage(tmp_path).free
    need = capacity.Need("feature_engineering", "9 train ratings", free + capacity.GIB, 0)
    with pytest.raises(CapacityError) as info:
        capacity.check(settings, need)
    message = str(info.value)
    assert "not enough disk" in message and "SPARK_LOCAL_DIR" in message and str(tmp_path / "scratch") in message
    assert capacity.human(free + capacity.GIB) in message
    capacity.check(settings, capacity.Need("feature_engineering", "9 train ratings", 1, 0))  # fits: no error


def test_memory_estimate_over_the_driver_heap_names_the_setting(base_settings):
    settings = base_settings.replace(spark_driver_memory="1g")
    usable = capacity.usable_driver_bytes(settings)
    assert 0 < usable < capacity.GIB
    with pytest.raises(CapacityError, match=r"SPARK_DRIVER_MEMORY=1g leaves .* Raise SPARK_DRIVER_MEMORY to at least"):
        capacity.check(settings, capacity.Need("feature_engineering", "many ratings", 0, usable + 1))
    # 25M MovieLens-sized ratings (20M train) ran out of heap on 4g and passed on 8g: refused on the first,
    # with the size to set; 5M (4M train) fits the default 4g
    big = capacity.features_need(20_000_000, 4, 3_000_000)
    with pytest.raises(CapacityError, match=r"SPARK_DRIVER_MEMORY=4g .* at least 7\.\d GiB"):
        capacity.check(base_settings.replace(spark_driver_memory="4g"), dataclasses.replace(big, scratch_bytes=0))
    assert big.driver_bytes <= capacity.usable_driver_bytes(base_settings.replace(spark_driver_memory="8g"))
    small = capacity.features_need(4_000_000, 4, 3_000_000)
    assert small.driver_bytes <= capacity.usable_driver_bytes(base_settings.replace(spark_driver_memory="4g"))


def test_scratch_of_a_dead_step_is_removed_and_a_live_one_kept(base_settings, tmp_path):
    settings = base_settings.replace(spark_local_dir=str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"feature_engineering-{dead.pid}-0123abcd"
    live = tmp_path / f"split_dataset-{os.getpid()}-0123abcd"
    worker = tmp_path / "worker-0"  # a local cluster worker's shuffle dir: not a step's
    for path in (stale, live, worker):
        (path / "blockmgr-x").mkdir(parents=True)
    assert capacity.remove_stale(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and worker.exists()
    fresh = capacity.step_scratch(settings, "load_to_redis")
    assert fresh.parent == tmp_path and fresh.name.startswith(f"load_to_redis-{os.getpid()}-")


def test_a_step_process_deletes_its_scratch_when_it_ends(base_settings, tmp_path):
    """As the DAG runs a step: its own process, which creates a session and exits."""
    env = {**os.environ, "SPARK_LOCAL_DIR": str(tmp_path), "SPARK_MASTER": "local[1]"}
    code = (
        "from mlops.settings import get_settings; from mlops.spark_io import spark_session;"
        "s = spark_session('probe', get_settings());"
        "s.range(100000).repartition(4).selectExpr('id % 7 as k').groupBy('k').count().collect();"
        "import pathlib, sys; sys.stdout.write(str([p.name for p in pathlib.Path(sys.argv[1]).iterdir()]))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "probe-" in done.stdout  # it worked in its own directory
    assert list(tmp_path.iterdir()) == []  # and deleted it on the way out


@pytest.mark.slow
@pytest.mark.integration
def test_features_too_big_for_the_memory_fail_early_and_commit_nothing(settings, spark):
    run_id = "t-capacity"
    ingest.main(["--run-id", run_id, "--dataset", "synthetic"], settings)
    validate.main(["--run-id", run_id], settings)
    split_dataset.main(["--run-id", run_id], settings)
    # what an earlier, complete attempt committed stays as it was: the refused attempt writes nothing
    earlier = features_key(run_id, "online_items")
    committed = write_parquet(spark.range(3).withColumnRenamed("id", "movie_id"), earlier, settings, {"run_id": run_id})
    store = ObjectStore.from_settings(settings)
    before = sorted(store.list_keys(features_key(run_id, "")))
    tiny = settings.replace(spark_driver_memory="601m")  # leaves well under a MiB for data
    with pytest.raises(CapacityError, match=r"train ratings .* need about .* SPARK_DRIVER_MEMORY=601m"):
        feature_engineering.main(["--run-id", run_id], tiny)
    assert sorted(store.list_keys(features_key(run_id, ""))) == before
    assert read_manifest(earlier, settings) == committed
    with pytest.raises(SystemExit) as code:
        run(lambda argv: feature_engineering.main(argv, tiny), ["--run-id", run_id])
    assert code.value.code == EXIT_DATA_ERROR  # the DAG does not retry it
