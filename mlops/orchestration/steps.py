"""The DAG `mlops_platform` as data: its id, its steps in order, and the command line of each step.

Each batch step is an entry point (`spark-jobs/*.py`, `mlflow/*.py`) sharing the command-line contract of
`mlops.jobs.runner`: `--run-id` plus the run parameters (`mlops.run_params`). Spark steps go through
`spark-submit` against `SPARK_MASTER`, so the same DAG drives `local[*]` natively and the Spark master in
Docker. Pure definitions, no Airflow import: the DAG file, the tasks (`orchestration.tasks`) and the
host-side `./run.sh pipeline` client (which orders its report by these steps) all read them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mlops.layout import check_run_id
from mlops.run_params import RunParams
from mlops.settings import PROJECT_ROOT, Settings

DAG_ID = "mlops_platform"
SPARK_LOG_CONFIG = PROJECT_ROOT / "spark-jobs" / "log4j2.properties"
# PySpark warns on import that it does not fully support pandas 3 yet: true, known, and nothing a run can act on.
HARMLESS_PYTHON_WARNINGS = "ignore:PySpark does not yet fully support pandas:FutureWarning"


@dataclass(frozen=True)
class Step:
    """One DAG task: its entry point and how it is launched."""

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


def step_argv(settings: Settings, step: Step, run_id: str, params: RunParams) -> list[str]:
    """The full command line of one step for one run."""
    job = [str(PROJECT_ROOT / step.script), "--run-id", check_run_id(run_id), *params.argv(), *step.extra]
    if not step.spark:
        return [sys.executable, *job]
    return [*spark_submit(settings, f"{DAG_ID}.{step.task_id}"), *job]


def spark_submit(settings: Settings, name: str) -> list[str]:
    """`spark-submit` with the settings' master and memory, and the pipeline's log configuration."""
    return [
        "spark-submit",
        "--master",
        settings.spark_master,
        "--driver-memory",
        settings.spark_driver_memory,
        "--name",
        name,
        # Spark's INFO start-up chatter and known-harmless warnings would bury the job's own progress lines.
        "--conf",
        "spark.log.level=WARN",
        "--driver-java-options",
        f"-Dlog4j2.configurationFile=file:{SPARK_LOG_CONFIG}",
    ]
