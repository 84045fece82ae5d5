"""Per-stage progress of a batch step, one line per stage: what it did, on how many rows, in how long.

    with stage("split", "write train/test") as s:
        ...
        s.rows = n

logs `progress: split | write train/test | 80,668 rows | 3.2s` when the stage ends (and `... FAILED after
3.2s` when it raises). The line goes to the step's log, so it is in the Airflow task log; `./run.sh
pipeline` picks the lines with `MARKER` out of the running tasks' logs (`progress_of`) for its live view.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("mlops.progress")

MARKER = "progress: "


@dataclass
class Stage:
    """One stage being timed; the caller fills in `rows` and `note` as it learns them."""

    step: str
    name: str
    rows: int | None = None  # set by the caller when the stage knows its row count
    note: str = ""  # anything else worth one glance (e.g. "4 files")


def line(stage: Stage, seconds: float, failed: bool = False) -> str:
    """`progress: <step> | <stage> | <rows> rows | <seconds>s` (pure: tested without logging)."""
    parts = [stage.step, stage.name]
    if stage.rows is not None:
        parts.append(f"{stage.rows:,} rows")
    if stage.note:
        parts.append(stage.note)
    parts.append(f"FAILED after {seconds:.1f}s" if failed else f"{seconds:.1f}s")
    return MARKER + " | ".join(parts)


@contextmanager
def stage(step: str, name: str) -> Iterator[Stage]:
    """Time one stage of `step` and log its progress line when it ends (failed or not)."""
    current = Stage(step, name)
    started = time.monotonic()
    try:
        yield current
    except BaseException:
        log.info("%s", line(current, time.monotonic() - started, failed=True))
        raise
    log.info("%s", line(current, time.monotonic() - started))


_LINE = re.compile(re.escape(MARKER) + r"([\w.-]+ \| .*)$")


def progress_of(log_lines: list[str]) -> list[str]:
    """The progress lines in a task's log, without the log's own prefixes: `<step> | <stage> | ...`."""
    return [m.group(1) for text in log_lines if (m := _LINE.search(text))]
