"""Test helpers for Spark plans: windows without a partition, and MovieLens 100k when it is at hand."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops.datasets.layouts import locate, read_movies, read_ratings

ML100K_CANDIDATES = (os.environ.get("ML100K_DIR", ""), "/work/shared/datasets/ml-100k")
SINGLE_PARTITION_WARNING = "No Partition Defined for Window operation"


def _walk(node: Any) -> Iterator[Any]:
    """Every node of a JVM plan, including inner plans (cached relations, AQE's input plan, subqueries)."""
    yield node
    for seq in (node.children(), node.innerChildren()):
        for i in range(seq.size()):
            yield from _walk(seq.apply(i))


def unpartitioned_windows(df: Any) -> list[str]:
    """The window operators of `df`'s optimized logical and physical plans that have no partition spec:
    Spark runs each of them in a single task, whatever the cluster size."""
    qe = df._jdf.queryExecution()
    found = []
    for plan in (qe.optimizedPlan(), qe.executedPlan()):
        for node in _walk(plan):
            if node.nodeName() in ("Window", "WindowGroupLimit") and node.partitionSpec().isEmpty():
                found.append(node.simpleString(200))
    return found


def ml100k_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens 100k (official u.data layout) as normalized ratings and movies; skips when absent."""
    for candidate in ML100K_CANDIDATES:
        if candidate and Path(candidate, "u.data").exists():
            files = locate(Path(candidate), Path(candidate))
            return read_ratings(files), read_movies(files)
    pytest.skip(f"MovieLens 100k not found (set ML100K_DIR; looked in {[c for c in ML100K_CANDIDATES if c]})")
