"""Benchmarks (`./run.sh bench [--json]`): figures, never pass/fail."""

from mlops.bench.stream import main

__all__ = ["main"]
