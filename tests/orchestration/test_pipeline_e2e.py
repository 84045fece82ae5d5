"""The DAG end to end through the real Airflow scheduler, against the real servers of tests/conftest.py.

Airflow's api-server, scheduler and dag-processor are started exactly as local mode starts them
(`mlops.services.airflow_config.launches`, configured by `airflow_env`), with their state in the test's temp dir, and
the run is driven by the same client as `./run.sh pipeline`. Data: the synthetic generator (DATASET and
SYNTHETIC_RATINGS from the test settings, 20,000 ratings).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlops.feature_store import RedisFeatureStore
from mlops.layout import manifest_key, normalized_key, run_prefix, split_key
from mlops.object_store import ObjectStore
from mlops.orchestration.airflow_api import AirflowClient
from mlops.orchestration.pipeline import Outcome, run_pipeline, wait_ready
from mlops.orchestration.steps import STEPS
from mlops.services import airflow_config, process
from mlops.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def airflow_stack(settings: Settings, mlflow_server, servers_root: Path) -> Iterator[Settings]:
    # A registered model of its own: the session's other tests register versions under the default name on
    # other data, and promotion rightly refuses to compare across lineages, so this run's first version must
    # be the first of its model to become champion (and move the feature set) by the rules under test.
    settings = settings.replace(model_name=f"{settings.model_name}-e2e")
    airflow_config.prepare(settings)
    started = []
    try:
        for launch in airflow_config.launches(settings):
            log = servers_root / "logs" / f"{launch.name}.log"
            proc = process.start(launch, log)
            started.append(proc)
            process.wait_ready(launch, proc, log)
        client = AirflowClient(settings.airflow_url, settings.airflow_admin_user, settings.airflow_admin_password)
        wait_ready(client, 240, print)  # until the DAG is parsed
        yield settings
    finally:
        for proc in reversed(started):
            process.stop(proc.pid)


def _run(settings: Settings, conf: dict | None = None) -> tuple[Outcome, str]:
    out = io.StringIO()
    outcome = run_pipeline(settings, conf, out=out, ready_timeout_s=240, poll_s=1.0)
    print(out.getvalue())  # shown by pytest when a test fails (or with -rP)
    return outcome, out.getvalue()


def _champion_version(settings: Settings) -> str | None:
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient

    try:
        return (
            MlflowClient(settings.mlflow_tracking_uri)
            .get_model_version_by_alias(settings.model_name, "champion")
            .version
        )
    except MlflowException:
        return None


@pytest.fixture(scope="module")
def good_run(airflow_stack: Settings) -> tuple[Outcome, str]:
    return _run(airflow_stack)


def test_run_succeeds_and_reports_every_step(good_run: tuple[Outcome, str]) -> None:
    outcome, output = good_run
    assert outcome.code == 0, output
    assert outcome.run_id and f"run {outcome.run_id} succeeded" in output
    assert set(outcome.durations_s) == set(STEPS), output
    for task_id in STEPS:  # the live view showed each task running and finishing
        assert f"{task_id:<22} running" in output
        assert f"{task_id:<22} success" in output


def test_outputs_are_keyed_by_the_run_id(good_run: tuple[Outcome, str], airflow_stack: Settings) -> None:
    outcome, _ = good_run
    store = ObjectStore.from_settings(airflow_stack)
    run_id = outcome.run_id
    for key in (normalized_key(run_id, "ratings"), split_key(run_id, "train"), split_key(run_id, "test")):
        assert store.exists(manifest_key(key)), f"{key} was not committed"
    keys = store.list_keys(run_prefix(run_id) + "/features/")
    assert any(k.endswith("_manifest.json") for k in keys), "no committed feature table under the run's prefix"


def test_feature_set_and_champion_moved_to_this_run(good_run: tuple[Outcome, str], airflow_stack: Settings) -> None:
    outcome, _ = good_run
    current = RedisFeatureStore.from_settings(airflow_stack).current_version()
    assert current is not None and outcome.run_id in current
    assert _champion_version(airflow_stack) is not None


def test_bad_data_fails_at_once_and_leaves_serving_alone(
    good_run: tuple[Outcome, str], airflow_stack: Settings, tmp_path: Path
) -> None:
    fs = RedisFeatureStore.from_settings(airflow_stack)
    before = (fs.current_version(), _champion_version(airflow_stack))
    bad = tmp_path / "bad-movielens"
    bad.mkdir()
    (bad / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,Heat (1995),Action\n")
    (bad / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,9.0,964981247\n")

    outcome, output = _run(airflow_stack, {"dataset": str(bad), "split_strategy": "temporal",
                                           "test_fraction": 0.2, "seed": 42})  # fmt: skip
    assert outcome.code == 1, output
    assert outcome.failed_task in ("ingest", "validate"), output
    assert f"task {outcome.failed_task} failed (try 1)" in output  # bad data is not retried
    assert re.search(r"ratings\.csv\W+line 3\W.*rating", output), output  # the log tail names file, line, rule
    assert (fs.current_version(), _champion_version(airflow_stack)) == before


def test_ui_login_and_task_docs(airflow_stack: Settings) -> None:
    """The `.env` login works and the API behind the UI serves each task's documentation."""

    client = AirflowClient(
        airflow_stack.airflow_url, airflow_stack.airflow_admin_user, airflow_stack.airflow_admin_password
    )
    assert requests.get(airflow_stack.airflow_url, timeout=10).status_code == 200
    for task_id in STEPS:
        doc = client.json("GET", f"/dags/mlops_platform/tasks/{task_id}")["doc_md"]
        assert doc and doc.startswith("####"), task_id


def test_wrong_login_is_named(airflow_stack: Settings) -> None:
    outcome, output = _run(airflow_stack.replace(airflow_admin_password="not-the-password"))
    assert outcome.code == 2 and outcome.run_id is None
    assert "refused the login" in output and "AIRFLOW_ADMIN_PASSWORD" in output


def _finished_run(client: AirflowClient, dag_id: str, run_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.dag_run(dag_id, run_id)
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(1)
    raise AssertionError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f}s")


def test_drift_monitor_triggers_one_retrain_then_holds_its_cool_down(
    good_run: tuple[Outcome, str], airflow_stack: Settings
) -> None:
    """The DAG drift_monitor through the real scheduler: a drifted window of the champion triggers
    mlops_platform once; that retrain fails (marked failed here) and serving stays as it was; the next check
    sees the same drift and holds the cool-down instead of triggering again."""
    import numpy as np
    import redis

    import mlflow
    from mlops import drift, drift_windows
    from mlops import features as fx
    from mlops.orchestration import drift_monitor as dm
    from mlops.orchestration.steps import DAG_ID
    from mlops.topics import CONSUMER_GROUP

    settings = airflow_stack
    client = AirflowClient(settings.airflow_url, settings.airflow_admin_user, settings.airflow_admin_password)
    fs = RedisFeatureStore.from_settings(settings)
    champion = _champion_version(settings)
    before = (fs.current_version(), champion)
    r = redis.Redis.from_url(settings.redis_url)
    r.delete(dm.LAST_RETRAIN_KEY)
    columns = (*fx.FEATURE_NAMES, drift.PREDICTION)
    rows = np.random.default_rng(5).uniform(1e6, 2e6, (800, len(columns)))  # far above every reference bin
    consumer = drift_windows.consumer_id(CONSUMER_GROUP, "inference-e2e")
    drift_windows.publish(r, drift_windows.PublishedWindow(consumer, str(champion), fs.current_version() or "",
                                                           columns, rows, time.time()))  # fmt: skip
    try:
        client.unpause(dm.DAG_ID)
        client.trigger(dm.DAG_ID, "manual__drift-e2e-1", {})
        first = _finished_run(client, dm.DAG_ID, "manual__drift-e2e-1")
        states = {t["task_id"]: t["state"] for t in client.task_instances(dm.DAG_ID, "manual__drift-e2e-1")}
        assert first["state"] == "success" and set(states.values()) == {"success"}, states
        retrain = dm.last_retrain(settings)
        assert retrain is not None and retrain["run_id"].startswith(dm.RUN_ID_PREFIX)
        assert retrain["monitor_run_id"] == "manual__drift-e2e-1" and retrain["model_version"] == str(champion)
        triggered = client.dag_run(DAG_ID, retrain["run_id"])  # the retrain mlops_platform got
        client.json("PATCH", f"/dags/{DAG_ID}/dagRuns/{retrain['run_id']}", json={"state": "failed"})
        assert triggered["dag_run_id"] == retrain["run_id"]
        assert _finished_run(client, DAG_ID, retrain["run_id"])["state"] == "failed"
        assert (fs.current_version(), _champion_version(settings)) == before  # serving as it was

        client.trigger(dm.DAG_ID, "manual__drift-e2e-2", {})
        second = _finished_run(client, dm.DAG_ID, "manual__drift-e2e-2")
        states = {t["task_id"]: t["state"] for t in client.task_instances(dm.DAG_ID, "manual__drift-e2e-2")}
        assert second["state"] == "success", states
        assert states == {"compare_with_reference": "success", "decide": "success",
                          "trigger_mlops_platform": "skipped", "promote_online": "success"}  # fmt: skip
        assert dm.last_retrain(settings) == retrain  # no second trigger recorded
        report = mlflow.MlflowClient(settings.mlflow_tracking_uri).search_runs(
            [mlflow.MlflowClient(settings.mlflow_tracking_uri).get_experiment_by_name(
                settings.mlflow_experiment + dm.EXPERIMENT_SUFFIX).experiment_id],
            order_by=["attributes.start_time DESC"], max_results=1)[0]  # fmt: skip
        assert report.data.tags["decision"] == "none" and "cool-down" in report.data.tags["decision_reason"]
        assert report.data.metrics["max_psi"] > settings.drift_retrain_threshold
    finally:
        r.delete(drift_windows.key(consumer), dm.LAST_RETRAIN_KEY)
