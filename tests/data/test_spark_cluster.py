"""The DAG's Spark steps on a standalone Spark cluster give the same outputs as `local[*]`.

A master and one worker are started from pyspark's own classes by local mode's launch specs
(SPARK_WORKERS=1); each step is submitted with the command line the DAG uses (spark-submit against
SPARK_MASTER). The same run on `local[2]` is the reference. Along the way: no step plans a window without
a partition (Spark logs a warning for each), and no step leaves its scratch directory behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from spark_plans import ML100K_CANDIDATES, SINGLE_PARTITION_WARNING

from mlops.jobs import ingest, validate
from mlops.layout import features_key, split_key
from mlops.orchestration.steps import STEPS, RunParams, step_argv
from mlops.services import process, specs
from mlops.settings import Settings
from mlops.spark_capacity import scratch_root
from mlops.spark_io import read_pandas

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(7200)]

SPARK_STEPS = ("split", "features", "load_to_redis")
WORKER_PIDS: list[int] = []  # of the module's cluster: the kill test touches only its executors
FEATURES = ("train_examples", "eval_examples", "online_users", "online_items", "online_meta")


def _dataset() -> str:
    """MovieLens 100k; CLUSTER_TEST_DATASET=synthetic runs the same comparison on the small synthetic set."""
    if os.environ.get("CLUSTER_TEST_DATASET") == "synthetic":
        return "synthetic"
    for candidate in ML100K_CANDIDATES:
        if candidate and Path(candidate, "u.data").exists():
            return candidate
    pytest.skip("MovieLens 100k not found (set ML100K_DIR, or CLUSTER_TEST_DATASET=synthetic)")


@pytest.fixture(scope="module")
def cluster(settings: Settings, servers_root: Path, free_port) -> Iterator[Settings]:
    """A standalone master and one worker on free ports; the settings that point the steps at it."""
    port, ui = free_port(), free_port()
    cluster_settings = settings.replace(
        spark_master=f"spark://127.0.0.1:{port}",
        spark_workers=1,
        spark_master_ui_url=f"http://127.0.0.1:{ui}",
        spark_executor_memory="1g",
    ).validate()
    started = []
    try:
        for launch in specs.spark_cluster(cluster_settings, servers_root / "spark", scratch_root(cluster_settings)):
            log = servers_root / "logs" / f"{launch.name}.log"
            proc = process.start(launch, log, die_with_parent=True)
            started.append(proc)
            if launch.name.startswith("spark-worker"):
                WORKER_PIDS.append(proc.pid)
            process.wait_ready(launch, proc, log)
        yield cluster_settings
    finally:
        for proc in reversed(started):
            process.stop(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def _run_spark_steps(settings: Settings, run_id: str) -> str:
    """ingest and validate in-process (no Spark), then the Spark steps exactly as the DAG launches them;
    returns their combined stderr."""
    ingest.main(["--run-id", run_id, "--dataset", settings.dataset], settings)
    validate.main(["--run-id", run_id], settings)
    env = {
        **os.environ,
        **specs.settings_environ(settings),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    logs = []
    for task in SPARK_STEPS:
        argv = step_argv(settings, STEPS[task], run_id, RunParams.defaults(settings))
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
        assert done.returncode == 0, f"{task} failed on {settings.spark_master}:\n{done.stderr[-3000:]}"
        logs.append(done.stderr)
        step = Path(STEPS[task].script).stem
        # The step's own process must leave nothing; this test process's in-process sessions (other tests
        # that call a step's main directly) keep theirs until it exits, and carry its pid in their name.
        mine = f"{step}-{os.getpid()}-"
        leftovers = [p.name for p in scratch_root(settings).glob(f"{step}-*") if not p.name.startswith(mine)]
        assert leftovers == [], f"{task} left its scratch directory behind: {leftovers}"
    return "\n".join(logs)


def _outputs(settings: Settings, run_id: str) -> dict[str, pd.DataFrame]:
    frames = {part: read_pandas(split_key(run_id, part), settings) for part in ("train", "validation", "test")}
    frames |= {name: read_pandas(features_key(run_id, name), settings) for name in FEATURES}
    frames["online_meta"] = frames["online_meta"].drop(columns=["feature_set"])  # the run id itself
    return {
        name: df.sort_values([c for c in df.columns if df[c].dtype != object], kind="mergesort").reset_index(drop=True)
        for name, df in frames.items()
    }


def test_spark_steps_on_a_standalone_cluster_equal_local_mode(cluster: Settings, settings: Settings):
    dataset = _dataset()
    local = settings.replace(dataset=dataset, spark_master="local[2]")
    on_cluster = cluster.replace(dataset=dataset)
    local_log = _run_spark_steps(local, "t-cluster-ref")
    cluster_log = _run_spark_steps(on_cluster, "t-cluster-run")
    assert SINGLE_PARTITION_WARNING not in local_log + cluster_log

    apps = {a["name"] for a in specs.spark_master_state(cluster).get("completedapps", [])}
    assert {"split_dataset", "feature_engineering", "load_to_redis"} <= apps, apps  # they really ran there

    reference, result = _outputs(local, "t-cluster-ref"), _outputs(on_cluster, "t-cluster-run")
    total = sum(len(reference[part]) for part in ("train", "validation", "test"))
    assert total == (100_000 if dataset != "synthetic" else 20_000)
    for name in reference:
        ref, got = reference[name], result[name]
        assert list(got.columns) == list(ref.columns), name
        scalar = [c for c in ref.columns if ref[c].dtype != object]
        pd.testing.assert_frame_equal(got[scalar], ref[scalar], check_exact=True, obj=name)
        for column in set(ref.columns) - set(scalar):  # arrays: rated movies, cutoffs, popular movies
            assert [np.asarray(v).tolist() for v in got[column]] == [np.asarray(v).tolist() for v in ref[column]]


KILL_PROBE = """
import sys, time
from mlops.settings import get_settings
from mlops.spark_io import spark_session
spark = spark_session("kill_probe", get_settings())
started = time.monotonic()
rows = spark.range(0, 8, 1, 8).selectExpr(
    "id", "reflect('java.lang.Thread', 'sleep', cast(4000 as bigint)) as slept").collect()
print("sum", sum(r.id for r in rows), "seconds", round(time.monotonic() - started, 1), flush=True)
"""


def _executor_pids(worker_pid: int) -> set[int]:
    """Executor JVMs started by our worker (never another test session's or anyone else's)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == worker_pid and b"CoarseGrainedExecutorBackend" in (stat.parent / "cmdline").read_bytes():
                pids.add(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def test_a_killed_executor_is_replaced_and_its_tasks_rerun(cluster: Settings):
    """An executor JVM killed mid-job: the worker starts a new one and Spark re-runs the lost tasks."""
    worker = WORKER_PIDS[0]
    before = _executor_pids(worker)
    env = {**os.environ, **specs.settings_environ(cluster), "PYSPARK_PYTHON": sys.executable}
    probe = subprocess.Popen([sys.executable, "-c", KILL_PROBE], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (new := _executor_pids(worker) - before):
        assert probe.poll() is None and time.monotonic() < deadline, "no executor started for the probe"
        time.sleep(0.5)
    time.sleep(3)  # its first tasks are running (each sleeps 4 s)
    for pid in new:
        os.kill(pid, signal.SIGKILL)
    out, _ = probe.communicate(timeout=600)
    # The only executor of the only worker died with tasks running: a complete, correct result means a
    # new executor was started and the lost tasks ran again.
    assert probe.returncode == 0 and "sum 28 " in out, out
    assert all(not Path(f"/proc/{pid}").exists() for pid in new)
    apps = specs.spark_master_state(cluster)
    assert any(a["name"] == "kill_probe" for a in apps.get("completedapps", [])), apps
