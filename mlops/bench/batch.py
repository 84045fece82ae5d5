"""Batch step timings: `python -m mlops.bench.batch --ratings 100000 1000000 5000000`.

Runs each Spark step as its own process, exactly as the DAG does (`spark-jobs/<step>.py --run-id R`), on
synthetic data of each size, and prints one Markdown row per size: wall-clock seconds per step (JVM and
session start-up included) and the 1-minute load average at the start and the end, so that a reader can
tell a quiet machine's figures from a shared one's. `load_to_redis` only stages its set (`--stage-only`),
so the running stack keeps serving its own. Figures, never pass/fail; needs `./run.sh up`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from mlops.settings import PROJECT_ROOT

STEPS = ("ingest", "validate", "split_dataset", "feature_engineering", "load_to_redis")


def time_step(step: str, run_id: str, env: dict[str, str]) -> float:
    """Seconds one step process takes; raises if it fails (a failed step's time means nothing)."""
    argv = [sys.executable, str(PROJECT_ROOT / "spark-jobs" / f"{step}.py"), "--run-id", run_id]
    if step == "load_to_redis":
        argv.append("--stage-only")
    started = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--spark-master", default="local[2]")
    args = parser.parse_args(argv)
    print("| ratings | " + " | ".join(STEPS) + " | load (1-min avg) |", flush=True)
    print("| ---: " * (len(STEPS) + 1) + "| --- |", flush=True)
    for n in args.ratings:
        env = {**os.environ, "DATASET": "synthetic", "SYNTHETIC_RATINGS": str(n), "SPARK_MASTER": args.spark_master}
        run_id = f"bench-batch-{n}-{int(time.time())}"
        load_before = os.getloadavg()[0]
        times = [time_step(step, run_id, env) for step in STEPS]
        load_after = os.getloadavg()[0]
        cells = " | ".join(f"{t:,.1f}" for t in times)
        print(f"| {n:,} | {cells} | {load_before:.1f} - {load_after:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
