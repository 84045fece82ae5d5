"""The DAG's steps as command lines, and running one so that its exit code decides retry or fail.

Each batch step is an entry point (`spark-jobs/*.py`, `mlflow/*.py`) sharing the command-line contract of
`mlops.jobs.runner`: `--run-id` plus the run parameters, exit 3 for bad data (a retry cannot help) and 1
for anything else (a service briefly down: retry). Spark steps go through `spark-submit` against
`SPARK_MASTER`, so the same DAG drives `local[*]` natively and the Spark master in Docker.
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
from mlops.layout import check_run_id
from mlops.settings import PROJECT_ROOT, SPLIT_STRATEGIES, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    task_id: str
    script: str  # relative to the project root
    spark: bool  # launched with spark-submit (else the venv's python)
    extra: tuple[str, ...] = ()  # the step's own options, after the shared ones


STEPS: dict[str, Step] = {
    s.task_id: s
    for s in (
        # ingest and validate are pandas/pyarrow work: a JVM would only add start-up time.
        Step("ingest", "spark-jobs/ingest.py", spark=False),
        Step("validate", "spark-jobs/validate.py", spark=False),
        Step("split", "spark-jobs/split_dataset.py", spark=True),
        Step("features", "spark-jobs/feature_engineering.py", spark=True),
        # Staged only: evaluate_and_promote makes the feature set current together with its model.
        Step("load_to_redis", "spark-jobs/load_to_redis.py", spark=True, extra=("--stage-only",)),
        Step("train", "mlflow/train_model.py", spark=False),
        Step("evaluate_and_promote", "mlflow/promote_model.py", spark=False),
    )
}


@dataclass(frozen=True)
class RunParams:
    """What a run may override (DAG params); everything else comes from the settings."""

    dataset: str
    split_strategy: str
    test_fraction: float
    seed: int

    @classmethod
    def defaults(cls, settings: Settings) -> RunParams:
        return cls(settings.dataset, settings.split_strategy, settings.test_fraction, settings.seed)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], settings: Settings) -> RunParams:
        """From a DAG run's params; a missing or empty value falls back to the settings."""
        d = cls.defaults(settings)

        def pick(name: str, default: Any, kind: type) -> Any:
            value = params.get(name)
            return default if value in (None, "") else kind(value)

        run = cls(
            dataset=pick("dataset", d.dataset, str),
            split_strategy=pick("split_strategy", d.split_strategy, str),
            test_fraction=pick("test_fraction", d.test_fraction, float),
            seed=pick("seed", d.seed, int),
        )
        if run.split_strategy not in SPLIT_STRATEGIES:
            raise ValueError(f"param split_strategy={run.split_strategy!r}: expected one of {SPLIT_STRATEGIES}")
        if not 0.0 < run.test_fraction < 1.0:
            raise ValueError(f"param test_fraction={run.test_fraction}: expected a number between 0 and 1")
        return run

    def argv(self) -> list[str]:
        return [
            "--dataset",
            self.dataset,
            "--split-strategy",
            self.split_strategy,
            "--test-fraction",
            repr(self.test_fraction),
            "--seed",
            str(self.seed),
        ]


def step_argv(settings: Settings, step: Step, run_id: str, params: RunParams) -> list[str]:
    """The full command line of one step for one run."""
    job = [str(PROJECT_ROOT / step.script), "--run-id", check_run_id(run_id), *params.argv(), *step.extra]
    if not step.spark:
        return [sys.executable, *job]
    return [
        "spark-submit",
        "--master",
        settings.spark_master,
        "--driver-memory",
        settings.spark_driver_memory,
        "--name",
        f"mlops_platform.{step.task_id}",
        # Spark's INFO start-up chatter would bury the job's own progress lines in the task log.
        "--conf",
        "spark.log.level=WARN",
        *job,
    ]


@dataclass(frozen=True)
class StepResult:
    returncode: int
    tail: list[str]

    @property
    def data_error(self) -> bool:
        return self.returncode == EXIT_DATA_ERROR

    def summary(self, step: Step) -> str:
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
