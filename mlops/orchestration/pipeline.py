"""`./run.sh pipeline`: trigger `mlops_platform` through the Airflow REST API (v2), follow it live, and wait.

The run goes through the real scheduler, so it shows in the UI like any other; this command only logs in
(`orchestration.airflow_api`), unpauses the DAG, triggers a run with the run parameters from the settings
(so `DATASET=... ./run.sh pipeline` works), prints one line per task state change, and on failure names
the failing task and prints the tail of its log. Runs on the host: it imports nothing of Airflow itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import requests

from mlops.orchestration.airflow_api import AirflowClient, PipelineError
from mlops.orchestration.steps import DAG_ID, STEPS
from mlops.orchestration.summary import summarize
from mlops.progress import progress_of
from mlops.run_params import RunParams, add_arguments, apply, overrides
from mlops.settings import DATASET_NAMES, Settings, get_settings

SUCCESS_STATES = frozenset({"success"})
FAILED_RUN_STATES = frozenset({"failed"})
TASK_FAILED = "failed"
RAN_STATES = frozenset({"success", "failed", "up_for_retry"})  # not upstream_failed/skipped: they never ran


# --- pure logic: what changed, how to show it ---------------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    """What the live view shows of a task instance; equal views mean nothing to report."""

    task_id: str
    state: str  # Airflow's state, "none" when not yet scheduled
    try_number: int

    @classmethod
    def from_api(cls, ti: Mapping[str, Any]) -> TaskView:
        """From a task instance of the API; a task not yet scheduled has state "none"."""
        return cls(ti["task_id"], ti.get("state") or "none", int(ti.get("try_number") or 0))


def changed(previous: Mapping[str, TaskView], current: Iterable[TaskView]) -> list[tuple[TaskView | None, TaskView]]:
    """The tasks whose state or attempt differs from the last poll, in the DAG's step order.

    A task first seen unscheduled is not news: it appears when something happens to it.
    """
    order = {task_id: i for i, task_id in enumerate(STEPS)}
    out = [
        (previous.get(t.task_id), t)
        for t in current
        if previous.get(t.task_id) != t and not (t.task_id not in previous and t.state == "none")
    ]
    return sorted(out, key=lambda pair: order.get(pair[1].task_id, len(order)))


def render_change(elapsed_s: float, before: TaskView | None, after: TaskView) -> str:
    """One line per change, e.g. `[   42.1s] split                 running      (try 1)  was queued`."""
    attempt = f"(try {after.try_number})" if after.try_number else ""
    was = f"  was {before.state}" if before is not None and before.state != after.state else ""
    return f"[{elapsed_s:7.1f}s] {after.task_id:<22} {after.state:<12} {attempt:<8}{was}".rstrip()


def render_progress(elapsed_s: float, text: str) -> str:
    """A step's progress line in the live view, under the task lines: `[   42.1s]   split | write train | ...`."""
    return f"[{elapsed_s:7.1f}s]   {text}"


class ProgressTail:
    """The progress lines (`mlops.progress`) of running tasks, each printed once, read from their logs.

    A task is read while it runs and once more when it has just ended, so its last stages are not missed.
    """

    def __init__(self) -> None:
        self.shown: dict[tuple[str, int], int] = {}
        self.running: set[str] = set()

    def poll(self, client: AirflowClient, run_id: str, tasks: Iterable[TaskView]) -> list[str]:
        """The progress lines not printed yet; a log that cannot be read is skipped, not an error."""
        out: list[str] = []
        for task in tasks:
            if task.state == "running":
                self.running.add(task.task_id)
            elif task.task_id not in self.running:
                continue
            else:
                self.running.discard(task.task_id)
            key = (task.task_id, max(task.try_number, 1))
            try:
                lines = progress_of(client.task_log(DAG_ID, run_id, task.task_id, key[1]))
            except (requests.RequestException, PipelineError):
                continue  # the log is a nicety: the task states still tell the story
            out += lines[self.shown.get(key, 0) :]
            self.shown[key] = len(lines)
        return out


def first_failure(tasks: Iterable[TaskView]) -> TaskView | None:
    """The failed task earliest in step order: the cause; later ones are consequences."""
    failed = {t.task_id: t for t in tasks if t.state == TASK_FAILED}
    return next((failed[task_id] for task_id in STEPS if task_id in failed), next(iter(failed.values()), None))


def run_conf(settings: Settings, cwd: Path | None = None) -> dict[str, Any]:
    """The run parameters from the settings; a relative dataset path is made absolute (tasks run elsewhere)."""
    conf = RunParams.defaults(settings).as_dict()
    if conf["dataset"] not in DATASET_NAMES:
        path = Path(conf["dataset"])
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        if path.exists():
            conf["dataset"] = str(path.resolve())
    return conf


def new_run_id(now: datetime | None = None) -> str:
    """A run id that is also a valid object-store prefix (`layout.check_run_id`) and sorts by time."""
    return "pipeline__" + (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


# --- the command ----------------------------------------------------------------------------------------


def not_ready_reason(client: AirflowClient) -> str | None:
    """Why a run cannot start yet (None: ready); raises when waiting cannot help (bad login, broken DAG file)."""
    health = client.health()
    for component in ("scheduler", "dag_processor"):
        status = (health.get(component) or {}).get("status")
        if status != "healthy":
            return f"{component} is {status or 'not reporting'}"
    if client.dag(DAG_ID) is not None:
        return None
    errors = [e for e in client.import_errors() if Path(e.get("filename", "")).stem == DAG_ID]
    if errors:
        raise PipelineError(f"the DAG file does not import:\n{errors[0].get('stack_trace', errors[0])}")
    return f"DAG {DAG_ID} not parsed yet"


def wait_ready(client: AirflowClient, timeout_s: float, say: Callable[[str], None], unreachable_s: float = 30) -> None:
    """Until the API answers, the scheduler and DAG processor heartbeat, and the DAG is parsed.

    An API that never answered fails after `unreachable_s` (Airflow is not up: say so rather than wait).
    """
    start = time.monotonic()
    answered = False
    last = ""
    while True:
        try:
            reason = not_ready_reason(client)
            answered = True
        except requests.RequestException as exc:
            reason = f"API at {client.base_url} not answering ({type(exc).__name__})"
        if reason is None:
            return
        waited = time.monotonic() - start
        if waited > timeout_s or (not answered and waited > unreachable_s):
            raise PipelineError(f"Airflow not ready after {waited:.0f}s: {reason} (is it up? ./run.sh up)")
        if reason != last:
            say(f"waiting for Airflow: {reason}")
            last = reason
        time.sleep(2)


def follow(
    client: AirflowClient,
    run_id: str,
    say: Callable[[str], None],
    poll_s: float = 2.0,
    timeout_s: float = 4 * 3600,
) -> tuple[str, dict[str, TaskView], float]:
    """Poll the run until it ends, printing each task state change; returns (run state, tasks, seconds)."""
    start = time.monotonic()
    seen: dict[str, TaskView] = {}
    run_state = "queued"
    transient = 0
    progress = ProgressTail()
    while True:
        try:
            run_state = client.dag_run(DAG_ID, run_id)["state"]
            tasks = [TaskView.from_api(ti) for ti in client.task_instances(DAG_ID, run_id)]
            transient = 0
        except requests.RequestException as exc:
            transient += 1
            if transient > 15:
                raise PipelineError(f"lost contact with Airflow at {client.base_url}: {exc}") from exc
            time.sleep(poll_s)
            continue
        elapsed = time.monotonic() - start
        for before, after in changed(seen, tasks):
            say(render_change(elapsed, before, after))
            seen[after.task_id] = after
        for text in progress.poll(client, run_id, tasks):
            say(render_progress(elapsed, text))
        if run_state in SUCCESS_STATES | FAILED_RUN_STATES:
            return run_state, seen, elapsed
        if elapsed > timeout_s:
            raise PipelineError(f"run {run_id} still {run_state} after {timeout_s:.0f}s")
        time.sleep(poll_s)


@dataclass(frozen=True)
class Outcome:
    """How a `./run.sh pipeline` ended: the exit code, and what the run did (for tests and benchmarks)."""

    code: int  # 0 success, 1 the run failed, 2 Airflow not usable
    run_id: str | None = None
    elapsed_s: float = 0.0
    failed_task: str | None = None
    durations_s: dict[str, float] = field(default_factory=dict)


def run_pipeline(
    settings: Settings,
    conf: Mapping[str, Any] | None = None,
    *,
    out: TextIO = sys.stdout,
    ready_timeout_s: float = 300,
    poll_s: float = 2.0,
    log_tail: int = 40,
    summary: bool = True,
) -> Outcome:
    """Trigger one run of the DAG with `conf` (default: from the settings), follow it, report the result.

    A successful run ends with its summary (`orchestration.summary`): dataset, split, model, decision, URLs.
    """

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    conf = dict(conf) if conf is not None else run_conf(settings)
    client = AirflowClient(settings.airflow_url, settings.airflow_admin_user, settings.airflow_admin_password)
    run_id = None
    try:
        wait_ready(client, ready_timeout_s, say)
        client.unpause(DAG_ID)
        run_id = new_run_id()
        client.trigger(DAG_ID, run_id, conf)
        say(f"triggered {DAG_ID} run {run_id} with {conf}")
        say(f"UI: {client.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
        state, tasks, elapsed = follow(client, run_id, say, poll_s=poll_s)
        durations = {
            ti["task_id"]: float(ti["duration"])
            for ti in client.task_instances(DAG_ID, run_id)
            if ti.get("state") in RAN_STATES and ti.get("duration") is not None
        }
    except (PipelineError, requests.RequestException) as exc:
        say(f"pipeline: {exc}")
        return Outcome(2, run_id)
    say("task durations: " + ", ".join(f"{t} {durations[t]:.1f}s" for t in STEPS if t in durations))
    if state in SUCCESS_STATES:
        say(f"run {run_id} succeeded in {elapsed:.1f}s")
        if summary:
            say("\n" + summarize(settings, run_id))
        return Outcome(0, run_id, elapsed, None, durations)
    failed = first_failure(tasks.values())
    if failed is None:
        say(f"run {run_id} ended {state} after {elapsed:.1f}s without a failed task (was it marked failed by hand?)")
        return Outcome(1, run_id, elapsed, None, durations)
    say(f"run {run_id} FAILED after {elapsed:.1f}s: task {failed.task_id} failed (try {failed.try_number})")
    try:
        lines = client.task_log(DAG_ID, run_id, failed.task_id, max(failed.try_number, 1))
    except (requests.RequestException, PipelineError) as exc:
        lines = [f"(could not fetch the log: {exc})"]
    say(f"--- last {log_tail} log lines of {failed.task_id} ---")
    for line in lines[-log_tail:]:
        say(line)
    return Outcome(1, run_id, elapsed, failed.task_id, durations)


def main(settings: Settings | None = None, conf: Mapping[str, Any] | None = None, **options: Any) -> int:
    """`./run.sh pipeline`: 0 on success, 1 when the run failed, 2 when Airflow is not usable."""
    return run_pipeline(settings or get_settings(), conf, **options).code


def parse_conf(argv: Sequence[str] | None, settings: Settings) -> dict[str, Any]:
    """`python -m mlops.orchestration.pipeline [--dataset D] ...`: per-run overrides on top of the settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_conf(apply(settings, overrides(parser.parse_args(argv))))


if __name__ == "__main__":
    _settings = get_settings()
    sys.exit(main(_settings, parse_conf(None, _settings)))
