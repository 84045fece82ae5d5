"""The DAG `drift_monitor` parses as the scheduler parses it, with its graph, schedule, cool-down-safe trigger."""

from __future__ import annotations

import pytest

from mlops.orchestration import drift_monitor as dm
from mlops.orchestration.steps import DAG_ID as PIPELINE_DAG_ID
from mlops.services.airflow_config import DAGS_FOLDER
from mlops.settings import Settings


@pytest.fixture(scope="module")
def dag(airflow_environ: dict[str, str]):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=DAGS_FOLDER, safe_mode=False)
    assert bag.import_errors == {}
    return bag.dags[dm.DAG_ID]


def test_graph_compare_then_decide_then_trigger_and_the_online_decision_beside(dag) -> None:
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == {
        "compare_with_reference": set(),
        "decide": {"compare_with_reference"},
        "trigger_mlops_platform": {"decide"},
        "promote_online": set(),  # ./run.sh promote on the same schedule, whatever the drift says
    }
    dag.check_cycle()


def test_decide_short_circuits_and_the_trigger_targets_the_pipeline_once(dag) -> None:
    decide, trigger = dag.get_task("decide"), dag.get_task("trigger_mlops_platform")
    assert type(decide).__name__ == "_ShortCircuitDecoratedOperator"  # an empty run id skips the trigger
    assert trigger.trigger_dag_id == PIPELINE_DAG_ID
    assert "xcom_pull(task_ids='decide')" in trigger.trigger_run_id  # the run id the cool-down recorded
    assert trigger.retries == 0, "a retried trigger would be a second retrain inside one cool-down"
    assert trigger.fail_when_dag_is_paused


def test_scheduled_hourly_by_default_one_run_at_a_time(dag, base_settings: Settings) -> None:
    assert base_settings.drift_monitor_schedule == "@hourly"
    assert dag.schedule == "@hourly" and dag.timetable.expression == "0 * * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.params.dump() == {"threshold": base_settings.drift_retrain_threshold}


def test_documented_for_the_ui(dag) -> None:
    assert dag.doc_md and "drift_monitor" in dag.doc_md and dag.description
    for t in dag.tasks:
        assert t.doc_md and t.doc_md.strip(), f"{t.task_id} has no doc_md"
        assert t.execution_timeout is not None, t.task_id
