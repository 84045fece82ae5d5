"""Per-stage progress: the line a stage logs, how `./run.sh pipeline` picks it out of a task log, and that the
live view prints each line once, including the last ones of a task that ended between two polls."""

from __future__ import annotations

import logging

import pytest

from mlops.orchestration.airflow_api import log_lines
from mlops.orchestration.pipeline import ProgressTail, TaskView, render_progress
from mlops.progress import Stage, line, progress_of, stage


def test_the_line_says_step_stage_rows_and_seconds():
    assert line(Stage("split", "write train", 80668), 3.21) == "progress: split | write train | 80,668 rows | 3.2s"
    assert (
        line(Stage("train", "fit", None, "version 3"), 1, failed=True)
        == "progress: train | fit | version 3 | FAILED after 1.0s"
    )


def test_stage_logs_when_it_ends_and_when_it_fails(caplog):
    caplog.set_level(logging.INFO, logger="mlops.progress")
    with stage("features", "snapshot 1/4") as s:
        s.rows = 12
    with pytest.raises(RuntimeError), stage("features", "write"):
        raise RuntimeError("disk full")
    messages = [r.getMessage() for r in caplog.records if r.name == "mlops.progress"]
    assert messages[0].startswith("progress: features | snapshot 1/4 | 12 rows | ")
    assert messages[1].startswith("progress: features | write | FAILED after ")


def test_progress_lines_are_found_in_an_airflow_task_log():
    content = [
        {"timestamp": "2026-01-01T10:00:01Z", "level": "info", "event": "running: spark-submit ..."},
        {"timestamp": "2026-01-01T10:00:09Z", "level": "info",
         "event": "2026-01-01 10:00:09,001 INFO mlops.progress: progress: split | write train | 9 rows | 1.0s"},
    ]  # fmt: skip
    assert progress_of(log_lines(content)) == ["split | write train | 9 rows | 1.0s"]


class FakeLogs:
    """The one AirflowClient call ProgressTail makes (pure logic under test; the client is tested elsewhere)."""

    def __init__(self) -> None:
        self.logs: dict[str, list[str]] = {}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[str]:
        return self.logs.get(task_id, [])


def test_the_live_view_prints_each_line_once_and_the_last_ones_after_the_task_ends():
    client, tail = FakeLogs(), ProgressTail()
    client.logs["split"] = ["x INFO progress: split | split | 10 rows | 1.0s"]
    assert tail.poll(client, "r", [TaskView("split", "running", 1)]) == ["split | split | 10 rows | 1.0s"]
    assert tail.poll(client, "r", [TaskView("split", "running", 1)]) == []
    client.logs["split"].append("x INFO progress: split | write train | 8 rows | 0.5s")
    assert tail.poll(client, "r", [TaskView("split", "success", 1)]) == ["split | write train | 8 rows | 0.5s"]
    assert tail.poll(client, "r", [TaskView("split", "success", 1)]) == []  # ended: not read again
    assert tail.poll(client, "r", [TaskView("ingest", "success", 1)]) == []  # never seen running: not read
    assert render_progress(42.14, "split | x") == "[   42.1s]   split | x"
