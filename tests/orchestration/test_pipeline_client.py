"""The pure parts of `./run.sh pipeline`: what counts as a change, how it prints, which task is blamed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mlops.layout import check_run_id
from mlops.orchestration.airflow_api import log_lines
from mlops.orchestration.pipeline import (
    TaskView,
    changed,
    first_failure,
    new_run_id,
    render_change,
    run_conf,
)
from mlops.settings import Settings


def tv(task_id: str, state: str, try_number: int = 1) -> TaskView:
    return TaskView(task_id, state, try_number)


def test_from_api_maps_unscheduled_to_none() -> None:
    assert TaskView.from_api({"task_id": "ingest", "state": None, "try_number": 0}) == tv("ingest", "none", 0)


def test_only_real_changes_are_reported_in_step_order() -> None:
    previous = {"ingest": tv("ingest", "success"), "validate": tv("validate", "running")}
    current = [
        tv("train", "none", 0),  # unscheduled, never seen: not news
        tv("validate", "success"),
        tv("ingest", "success"),  # unchanged
        tv("split", "queued"),
    ]
    assert changed(previous, current) == [
        (tv("validate", "running"), tv("validate", "success")),
        (None, tv("split", "queued")),
    ]


def test_a_new_attempt_is_a_change_even_in_the_same_state() -> None:
    previous = {"train": tv("train", "running", 1)}
    assert changed(previous, [tv("train", "running", 2)]) == [(tv("train", "running", 1), tv("train", "running", 2))]


def test_render_change() -> None:
    line = render_change(42.14, tv("split", "queued"), tv("split", "running"))
    assert line == "[   42.1s] split                  running      (try 1)   was queued"
    assert render_change(3, None, tv("ingest", "queued")) == "[    3.0s] ingest                 queued       (try 1)"
    assert render_change(3, None, tv("train", "upstream_failed", 0)).endswith("upstream_failed")


def test_blames_the_earliest_failed_step_not_its_consequences() -> None:
    tasks = [
        tv("train", "upstream_failed", 0),
        tv("features", "failed", 3),
        tv("load_to_redis", "failed", 1),
        tv("split", "success"),
    ]
    assert first_failure(tasks) == tv("features", "failed", 3)
    assert first_failure([tv("ingest", "success")]) is None


def test_log_lines_from_structured_and_plain_content() -> None:
    content = [
        {"event": "::group::Log message source details", "sources": ["/x.log"]},
        {"event": "::endgroup::"},
        {
            "timestamp": "2026-11-24T09:57:21.123456Z",
            "level": "error",
            "event": "Task failed with exception",
            "error_detail": [{"exc_type": "AirflowFailException", "exc_value": "validate exited 3\nline 3: bad"}],
        },
        "plain line 1\nplain line 2",
    ]
    assert log_lines(content) == [
        "09:57:21 ERROR Task failed with exception",
        "  AirflowFailException: validate exited 3",
        "    line 3: bad",
        "plain line 1",
        "plain line 2",
    ]


def test_run_conf_from_settings(base_settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "ml-100k").mkdir()
    conf = run_conf(base_settings.replace(dataset="ml-100k", seed=7), cwd=tmp_path)
    assert conf == {"dataset": "ml-100k", "split_strategy": base_settings.split_strategy,
                    "test_fraction": base_settings.test_fraction, "seed": 7,
                    "validation_fraction": base_settings.validation_fraction,
                    "tuning_trials": base_settings.tuning_trials}  # fmt: skip
    # a relative path is resolved where the user ran the command, since tasks run in another directory
    (tmp_path / "mine").mkdir()
    assert run_conf(base_settings.replace(dataset="mine/"), cwd=tmp_path)["dataset"] == str(tmp_path / "mine")
    # a path that does not exist is passed as given: ingest names it in its error
    assert run_conf(base_settings.replace(dataset="nowhere"), cwd=tmp_path)["dataset"] == "nowhere"


def test_run_id_is_a_valid_object_store_prefix() -> None:
    run_id = new_run_id(datetime(2026, 11, 24, 9, 5, 7, tzinfo=UTC))
    assert run_id == "pipeline__20261124T090507Z"
    assert check_run_id(run_id) == run_id


def test_airflow_not_up_fails_fast_with_a_hint(base_settings: Settings, free_port) -> None:
    """Nothing listens on the port: exit 2 quickly, saying Airflow is not answering and how to start it."""
    import io
    import time

    from mlops.orchestration.pipeline import run_pipeline

    out = io.StringIO()
    port = free_port()
    started = time.monotonic()
    outcome = run_pipeline(base_settings.replace(airflow_url=f"http://127.0.0.1:{port}"), out=out, ready_timeout_s=4)
    assert outcome.code == 2 and outcome.run_id is None
    assert time.monotonic() - started < 30
    assert "not answering" in out.getvalue() and "./run.sh up" in out.getvalue()
