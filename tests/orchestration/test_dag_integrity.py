"""The DAG file parses the way the scheduler parses it, and has the task graph the platform relies on."""

from __future__ import annotations

import pytest

from mlops.orchestration.drift_monitor import DAG_ID as DRIFT_DAG_ID
from mlops.orchestration.steps import DAG_ID, STEPS
from mlops.services.airflow_config import DAGS_FOLDER
from mlops.settings import PROJECT_ROOT, Settings

EXPECTED_UPSTREAM = {
    "ingest": set(),
    "validate": {"ingest"},
    "split": {"validate"},
    "features": {"split"},
    "load_to_redis": {"features"},
    "train": {"features"},
    "evaluate_and_promote": {"train", "load_to_redis"},
}


@pytest.fixture(scope="module")
def dagbag(airflow_environ: dict[str, str]):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=DAGS_FOLDER, safe_mode=False)


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


def test_dag_folder_imports_cleanly(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {DAG_ID, DRIFT_DAG_ID}


def test_task_graph(dag) -> None:
    assert {t.task_id: set(t.upstream_task_ids) for t in dag.tasks} == EXPECTED_UPSTREAM
    assert set(STEPS) == set(EXPECTED_UPSTREAM)


def test_graph_is_acyclic_and_orders_the_steps(dag) -> None:
    dag.check_cycle()  # raises on a cycle
    order = [t.task_id for t in dag.topological_sort()]
    assert order.index("ingest") < order.index("validate") < order.index("split") < order.index("features")
    assert order.index("features") < min(order.index("load_to_redis"), order.index("train"))
    assert order.index("train") < order.index("evaluate_and_promote")


def test_every_task_documented_as_markdown(dag) -> None:
    assert dag.doc_md and "mlops_platform" in dag.doc_md
    assert dag.description and "ingest" in dag.description  # shown under the DAG name in the UI list
    for t in dag.tasks:
        assert t.doc_md, f"{t.task_id} has no doc_md"
        assert t.doc_md.startswith("####"), f"{t.task_id}: doc_md must start with a heading, not indentation"


def test_retries_with_backoff_and_run_policy(dag) -> None:
    for t in dag.tasks:
        assert t.retries >= 1, t.task_id
        assert t.retry_exponential_backoff > 1, t.task_id
        assert t.max_retry_delay is not None, t.task_id
        assert t.execution_timeout is not None, t.task_id
    assert type(dag.timetable).__name__ == "NullTimetable"  # no schedule: triggered only
    assert dag.catchup is False
    assert dag.max_active_runs == 1


def test_params_default_to_settings(dag, base_settings: Settings) -> None:
    params = dag.params.dump()
    assert params == {
        "dataset": base_settings.dataset,
        "split_strategy": base_settings.split_strategy,
        "test_fraction": base_settings.test_fraction,
        "validation_fraction": base_settings.validation_fraction,
        "seed": base_settings.seed,
        "tuning_trials": base_settings.tuning_trials,
    }


def test_entry_points_exist() -> None:
    missing = [s.script for s in STEPS.values() if not (PROJECT_ROOT / s.script).exists()]
    assert missing == [], f"entry points the DAG runs are missing: {missing}"
