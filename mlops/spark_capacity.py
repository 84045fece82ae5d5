"""The disk and memory a Spark step needs, checked before it starts, and the step's own scratch space.

Why: a step that runs out of disk in the middle of a shuffle, or a driver that runs out of heap, fails
after minutes with a JVM stack trace and leaves gigabytes of spill files behind. The needs are estimated
from the input's row counts (coefficients measured on synthetic data, see docs/spark.md), so a step too
big for the machine or the settings stops at once with the sizes and the setting to change, before
anything is written.

Scratch: each step process gets `SPARK_LOCAL_DIR/<step>-<pid>-<id>` as `spark.local.dir` (shuffle and
spill files), deleted when the process exits; a directory left by a killed step is deleted by the next
step that starts.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from mlops.errors import CapacityError
from mlops.pids import alive
from mlops.settings import Settings

GIB = 1024**3
MIB = 1024**2
# What the driver JVM uses before holding any data (Spark's reserved memory, code, Py4J, metadata).
DRIVER_BASE_BYTES = 600 * MIB
# Of the rest, the share Spark gives to execution and storage (spark.memory.fraction).
MEMORY_FRACTION = 0.6
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_STEP_DIR = re.compile(r"^.+-(\d+)-[0-9a-f]{8}$")


def parse_size(text: str, setting: str) -> int:
    """Bytes of a JVM-style size (`512m`, `4g`, `1.5g`); `setting` names it in the error."""
    match = _SIZE.match(text)
    if not match:
        raise CapacityError(f"{setting}={text!r}: expected a size such as 512m or 4g")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def human(n: float) -> str:
    """Bytes as GiB (MiB below 1 GiB), for the messages and the benchmark table."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def scratch_root(settings: Settings) -> Path:
    """SPARK_LOCAL_DIR, or LOCAL_DIR/spark-tmp when it is empty."""
    return settings.path("spark_local_dir") if settings.spark_local_dir else settings.path("local_dir") / "spark-tmp"


def remove_stale(root: Path) -> list[Path]:
    """Delete the scratch directories of step processes that no longer run (killed, crashed)."""
    removed = []
    for child in root.iterdir() if root.exists() else ():
        match = _STEP_DIR.match(child.name)
        if child.is_dir() and match and not alive(int(match.group(1))):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def step_scratch(settings: Settings, step: str) -> Path:
    """A fresh scratch directory for this process's Spark session, deleted when the process exits."""
    root = scratch_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root)
    path = root / f"{step}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    atexit.register(_stop_and_remove, path)
    return path


def _stop_and_remove(path: Path) -> None:
    """Stop the session first, so that Spark no longer writes there, then delete its scratch."""
    try:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    except Exception:  # the JVM may already be gone; the directory goes anyway
        pass
    shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Need:
    """What a step needs, estimated from its input before it starts; `basis` says from what."""

    step: str
    basis: str
    scratch_bytes: int
    driver_bytes: int


def usable_driver_bytes(settings: Settings) -> int:
    """Heap Spark can use for data in the driver (in local[*] the executors run there too)."""
    heap = parse_size(settings.spark_driver_memory, "SPARK_DRIVER_MEMORY")
    return int(max(heap - DRIVER_BASE_BYTES, 0) * MEMORY_FRACTION)


def available_memory_bytes() -> int | None:
    """MemAvailable of this machine (Linux), None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check(settings: Settings, need: Need) -> None:
    """Refuse to start `need.step` when the disk or the configured memory cannot hold what it needs."""
    root = scratch_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < need.scratch_bytes:
        raise CapacityError(
            f"{need.step}: not enough disk for its shuffle and scratch files: about {human(need.scratch_bytes)} "
            f"needed for {need.basis}, {human(free)} free in {root}. Free space there, or point "
            "SPARK_LOCAL_DIR at a larger disk"
        )
    usable = usable_driver_bytes(settings)
    if need.driver_bytes > usable:
        raise CapacityError(
            f"{need.step}: {need.basis} need about {human(need.driver_bytes)} of Spark memory in the driver, "
            f"SPARK_DRIVER_MEMORY={settings.spark_driver_memory} leaves {human(usable)} for data. Raise "
            f"SPARK_DRIVER_MEMORY to at least {human(need.driver_bytes / MEMORY_FRACTION + DRIVER_BASE_BYTES)}"
        )
    heap = parse_size(settings.spark_driver_memory, "SPARK_DRIVER_MEMORY")
    available = available_memory_bytes()
    if settings.spark_master.startswith("local") and available is not None and heap > available:
        raise CapacityError(
            f"{need.step}: SPARK_DRIVER_MEMORY={settings.spark_driver_memory} is more than this machine has "
            f"available ({human(available)}): the JVM would be killed or swap. Lower SPARK_DRIVER_MEMORY, "
            "or stop other work"
        )


# -- what each step needs, from its input's row counts ------------------------------------------------------------
# Bytes of shuffle, spill and staged output per input row, rounded up by half again or more, from the peak
# scratch column of `python -m mlops.bench.batch`; see docs/spark.md.
SPLIT_SCRATCH_PER_RATING = 300  # measured: about 10 per rating at 100k (1 MiB); generous on purpose
# Per train_examples row (a positive or one of its negatives): peak scratch measured 1.32 KB at 100k and
# 1.40 KB at 1M ratings (2026-11-29, negatives drawn on keys); half as much again for headroom.
FEATURES_SCRATCH_PER_EXAMPLE = 2_000
# Per train rating, for the item side's as-of windows (every rating, whatever the cap on examples): not
# measured apart from the per-example part; the split's generous figure, as a floor when examples are capped.
FEATURES_SCRATCH_PER_RATING = SPLIT_SCRATCH_PER_RATING
# Spark memory per train rating: ALS's blocks (48 B: each pair in an in- and an out-block, both ways) were
# the first estimate, and it let 25M ratings (20M train) start on the default 4g, where the step ran out of
# heap in a sort after 26 minutes in one of two runs; it passed with 8g. 230 B asks for about 8g there, and
# keeps 5M ratings (4M train, passed every time on 4g) well inside 4g.
FEATURES_DRIVER_BYTES_PER_RATING = 230
FLOAT_BYTES = 4


def split_need(n_ratings: int) -> Need:
    """The split needs scratch for its shuffle of the ratings, and no driver memory beyond the base."""
    return Need("split_dataset", f"{n_ratings:,} ratings", n_ratings * SPLIT_SCRATCH_PER_RATING, 0)


def features_need(n_train: int, negatives_per_positive: int, max_examples: int = 0) -> Need:
    """Training examples: about half the train ratings (those after the first cutoff), each with its
    negatives, at most `max_examples` (TRAINING_EXAMPLES_MAX, 0: no cap); the item side's as-of windows
    still shuffle every rating, and their sorts and ALS's blocks grow with the train ratings in memory."""
    examples = n_train // 2 * (1 + negatives_per_positive)
    if max_examples > 0:
        examples = min(examples, max_examples)
    return Need(
        "feature_engineering",
        f"{n_train:,} train ratings (about {examples:,} training examples)",
        examples * FEATURES_SCRATCH_PER_EXAMPLE + n_train * FEATURES_SCRATCH_PER_RATING,
        n_train * FEATURES_DRIVER_BYTES_PER_RATING,
    )


def load_need(n_users: int, user_columns: int, n_items: int, item_columns: int, n_train: int) -> Need:
    """load_to_redis collects the whole online snapshot to the driver (as Arrow): every user and item row,
    and each user's list of rated movies."""
    cells = n_users * user_columns + n_items * item_columns + n_train
    return Need("load_to_redis", f"{n_users:,} users and {n_items:,} items", 0, cells * FLOAT_BYTES * 2)


def shuffle_partitions(shuffle_bytes: int, cores: int | None = None) -> int:
    """Partitions per shuffle for an estimated shuffle size: about 128 MiB each, so a task's sort fits in
    memory instead of spilling, and never fewer than two per core (adaptive execution merges small ones)."""
    floor = 2 * (cores or os.cpu_count() or 2)
    return max(floor, min(2_000, -(-shuffle_bytes // (128 * MIB))))
