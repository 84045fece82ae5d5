"""
### drift_monitor: is the champion still serving the world it was trained on?

`compare_with_reference` → `decide` → `trigger_mlops_platform`, and beside it `promote_online`

Compares the latest window the inference consumers served (the model inputs and predictions each one
samples and publishes to Redis) with the champion version's reference profile (its training run's
`reference_profile.json` in MLflow): PSI per model input and for the predictions, KS where it fits. Each
measured check is an MLflow run in the experiment `<MLFLOW_EXPERIMENT>-drift`, with the table and a plot.

When the largest PSI exceeds the threshold (`DRIFT_RETRAIN_THRESHOLD`, or the `threshold` param), it
triggers `mlops_platform`, at most once per cool-down (`DRIFT_RETRAIN_COOLDOWN_HOURS`) whatever that
retrain's outcome: a retrain that fails or loses leaves the champion serving, and its drift does not loop
the pipeline.

`promote_online` is `./run.sh promote` on the same schedule: the online champion/challenger decision from
the feedback gathered so far (promotes only on a significant win; recorded on both versions in MLflow).

**Schedule**: `DRIFT_MONITOR_SCHEDULE` (default hourly); trigger it any time from the UI.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

from mlops.orchestration import drift_monitor as dm
from mlops.orchestration import tasks
from mlops.orchestration.steps import DAG_ID as PIPELINE_DAG_ID
from mlops.settings import get_settings

_settings = get_settings()


def _threshold() -> float:
    return float(get_current_context()["params"]["threshold"])


@dag(
    dag_id=dm.DAG_ID,
    schedule=None if _settings.drift_monitor_schedule.lower() == "none" else _settings.drift_monitor_schedule,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    description="Served traffic vs the champion's reference profile: drift report in MLflow, retrain on drift",
    doc_md=__doc__,
    tags=["mlops", "monitoring"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(minutes=15),
    },
    params={
        "threshold": Param(
            _settings.drift_retrain_threshold,
            type="number",
            exclusiveMinimum=0,
            description="largest PSI that still counts as no drift (default DRIFT_RETRAIN_THRESHOLD)",
        ),
    },
)
def drift_monitor():
    @task(doc_md=inspect.cleandoc("""
        #### Compare with the reference
        Reads the windows the consumers published to Redis for the `champion` version (sampled model inputs
        and predictions of the score traffic they served) and measures PSI (and KS where it fits) per column
        against the version's `reference_profile.json`. Logs the report (table `drift_report.json`, plot
        `drift_psi.png`, metrics `max_psi`, `prediction_psi`, `psi_<column>`) as a run of the MLflow
        experiment `<MLFLOW_EXPERIMENT>-drift`. No champion, no reference profile (an old version) or too
        few served rows: drift is *unavailable*, never zero, and nothing is logged.
        """))  # fmt: skip
    def compare_with_reference() -> dict:
        return dm.compare(get_settings(), _threshold())

    @task.short_circuit(doc_md=inspect.cleandoc("""
        #### Decide
        Retrain when the largest PSI exceeds `threshold` and the last drift-triggered retrain is at least
        `DRIFT_RETRAIN_COOLDOWN_HOURS` ago, whatever its outcome (a failed retrain leaves the champion
        serving, and its drift must not loop the pipeline). A retrain is recorded first (Redis
        `drift:last_retrain`: that starts the cool-down), then the trigger runs; otherwise it is skipped.
        The decision and its reason are tags of the report's MLflow run.
        """))  # fmt: skip
    def decide(check: dict) -> str:
        run_id = get_current_context()["run_id"]
        return dm.decide_and_record(get_settings(), check, _threshold(), monitor_run_id=run_id)

    trigger = TriggerDagRunOperator(
        task_id="trigger_mlops_platform",
        doc_md="#### Trigger mlops_platform\nStarts the batch pipeline under the run id `decide` recorded "
        "(`drift__<time>`); it does not wait for it.",
        trigger_dag_id=PIPELINE_DAG_ID,
        trigger_run_id="{{ ti.xcom_pull(task_ids='decide') }}",
        fail_when_dag_is_paused=True,
        retries=0,  # the cool-down already counts from this trigger: never a second one from a retry
    )
    decide(compare_with_reference()) >> trigger

    @task(doc_md=inspect.cleandoc("""
        #### Promote online
        `./run.sh promote`: when `CHALLENGER_TRAFFIC` sends users to the `challenger`, compares the two
        variants on the feedback credited to each (hit rate, AUC, with confidence intervals) and promotes the
        challenger only on a significant win; otherwise keeps the champion. Either way the task succeeds and
        the reason is in its log and on the versions in MLflow; it fails only when it cannot decide.
        """))  # fmt: skip
    def promote_online() -> None:
        tasks.promote_online()

    promote_online()


drift_monitor()
