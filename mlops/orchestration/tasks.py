"""What runs inside a DAG task: launch one step, echo its output, turn its exit code into the task outcome.

Exit 3 is bad data (`mlops.jobs.runner.EXIT_DATA_ERROR`): the task fails without retry, since a retry
cannot help; any other failure (a service briefly down) is retried by Airflow.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from mlops.jobs.runner import EXIT_DATA_ERROR
from mlops.orchestration.steps import HARMLESS_PYTHON_WARNINGS, STEPS, Step, step_argv
from mlops.run_params import RunParams
from mlops.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepResult:
    """How a step's process ended: its exit code and the last lines it printed (for the failure message)."""

    returncode: int
    tail: list[str]

    @property
    def data_error(self) -> bool:
        """Exit 3: bad data, which a retry cannot fix."""
        return self.returncode == EXIT_DATA_ERROR

    def summary(self, step: Step) -> str:
        """The task's failure message: exit code, whether it will be retried, and the output's tail."""
        kind = "bad data, not retried" if self.data_error else "will be retried if attempts remain"
        last = "\n".join(self.tail[-8:])
        return f"step {step.task_id} ({step.script}) exited {self.returncode} ({kind}); last output:\n{last}"


def run_step(argv: list[str], env: Mapping[str, str] | None = None, tail_lines: int = 40) -> StepResult:
    """Run a step, echoing its output line by line into the task log; the child dies with the task.

    The child gets its own process group, so a task killed by a timeout or by the user also stops the
    spark-submit JVM and its Python workers instead of leaving them running.
    """
    child_env = dict(os.environ if env is None else env)
    # spark-submit must run the job (and its Python workers) with this venv's interpreter.
    child_env.setdefault("PYSPARK_PYTHON", sys.executable)
    child_env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    child_env["PYTHONWARNINGS"] = ",".join(w for w in (child_env.get("PYTHONWARNINGS"), HARMLESS_PYTHON_WARNINGS) if w)
    log.info("running: %s", " ".join(argv))
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    proc = subprocess.Popen(
        argv,
        env=child_env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log.info("%s", line)
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return StepResult(returncode, list(tail))


def raise_for(result: StepResult, step: Step) -> None:
    """Turn a step's exit code into the task outcome: bad data fails for good, anything else is retried."""
    if result.returncode == 0:
        return
    if result.data_error:
        raise AirflowFailException(result.summary(step))
    raise AirflowException(result.summary(step))


def execute(task_id: str, settings: Settings, run_id: str, params: Mapping[str, Any]) -> None:
    """Run one step for a DAG run (bad params, like bad data, fail without retry)."""
    step = STEPS[task_id]
    if not (PROJECT_ROOT / step.script).exists():
        raise AirflowFailException(f"{task_id}: entry point {step.script} is missing from {PROJECT_ROOT}")
    try:
        argv = step_argv(settings, step, run_id, RunParams.from_params(params, settings))
    except ValueError as exc:
        raise AirflowFailException(f"{task_id}: {exc}") from exc
    raise_for(run_step(argv), step)
