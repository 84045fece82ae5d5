"""Batch step timings: `python -m mlops.bench.batch --ratings 100000 1000000 5000000 25000000`.

Runs each batch step as its own process, exactly as the DAG does (`spark-jobs/<step>.py --run-id R`), on
synthetic data of each size, and prints one Markdown row per step and size: wall-clock seconds (JVM and
session start-up included), the peak resident memory of the step's process tree (Python, the JVM and
Spark's Python workers), what Spark's shuffle wrote and spilled (from the step's event log), the peak size
of its scratch directory, and the 1-minute load average at the start and the end, so that a reader can
tell a quiet machine's figures from a shared one's. `load_to_redis` only stages its set (`--stage-only`),
so the running stack keeps serving its own. Figures, never pass/fail; needs `./run.sh up`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops.settings import PROJECT_ROOT, get_settings
from mlops.spark_capacity import human, scratch_root

STEPS = ("ingest", "validate", "split_dataset", "feature_engineering", "load_to_redis")
SAMPLE_S = 0.5


@dataclass
class StepFigures:
    """One step run's figures: a row of the benchmark table."""

    seconds: float
    peak_rss: int
    shuffle_write: int
    spilled: int
    peak_scratch: int


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (the step's Python, its JVM, Spark's workers)."""
    tree, todo, total = _children(), [pid], 0
    while todo:
        p = todo.pop()
        todo += tree.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def dir_bytes(root: Path) -> int:
    """Bytes of the files under `root` (links not followed): how much scratch a step holds."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def shuffle_figures(event_dir: Path) -> tuple[int, int]:
    """(shuffle bytes written, bytes spilled to disk) summed over every task in the event logs."""
    written = spilled = 0
    for log in (p for p in event_dir.rglob("*") if p.is_file()):
        with log.open() as fh:
            for line in fh:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                metrics = json.loads(line).get("Task Metrics") or {}
                written += metrics.get("Shuffle Write Metrics", {}).get("Shuffle Bytes Written", 0)
                spilled += metrics.get("Disk Bytes Spilled", 0)
    return written, spilled


def run_step(step: str, run_id: str, env: dict[str, str], scratch: Path) -> StepFigures:
    """One step process with its figures; raises if it fails (a failed step's figures mean nothing)."""
    argv = [sys.executable, str(PROJECT_ROOT / "spark-jobs" / f"{step}.py"), "--run-id", run_id]
    if step == "load_to_redis":
        argv.append("--stage-only")
    with tempfile.TemporaryDirectory(prefix="bench-events-") as events:
        conf = {"enabled": "true", "dir": f"file://{events}", "compress": "false", "rolling.enabled": "false"}
        submit = " ".join(f"--conf spark.eventLog.{k}={v}" for k, v in conf.items()) + " pyspark-shell"
        started = time.monotonic()
        proc = subprocess.Popen(argv, env={**env, "PYSPARK_SUBMIT_ARGS": submit}, stdout=subprocess.DEVNULL)
        peak = {"rss": 0, "scratch": 0}

        def sample() -> None:
            while proc.poll() is None:
                peak["rss"] = max(peak["rss"], tree_rss(proc.pid))
                peak["scratch"] = max(peak["scratch"], dir_bytes(scratch))
                time.sleep(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        seconds = time.monotonic() - started
        sampler.join()
        if code != 0:
            raise subprocess.CalledProcessError(code, argv)
        written, spilled = shuffle_figures(Path(events))
    return StepFigures(seconds, peak["rss"], written, spilled, peak["scratch"])


def main(argv: Sequence[str] | None = None) -> int:
    """Every step at every size, one Markdown row each; a failed step stops the run (exit non-zero)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--spark-master", default="local[2]")
    args = parser.parse_args(argv)
    scratch = scratch_root(get_settings())
    print("| ratings | step | seconds | peak RSS | shuffle written | spilled | peak scratch | load (1-min) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |", flush=True)
    for n in args.ratings:
        env = {**os.environ, "DATASET": "synthetic", "SYNTHETIC_RATINGS": str(n), "SPARK_MASTER": args.spark_master}
        run_id = f"bench-batch-{n}-{int(time.time())}"
        for step in STEPS:
            load_before = os.getloadavg()[0]
            f = run_step(step, run_id, env, scratch)
            print(f"| {n:,} | {step} | {f.seconds:,.1f} | {human(f.peak_rss)} | {human(f.shuffle_write)} | "
                  f"{human(f.spilled)} | {human(f.peak_scratch)} | {load_before:.1f} - {os.getloadavg()[0]:.1f} |",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
