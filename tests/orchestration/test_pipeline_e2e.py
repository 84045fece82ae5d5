"""The DAG end to end through the real Airflow scheduler, against the real servers of tests/conftest.py.

Airflow's api-server, scheduler and dag-processor are started exactly as local mode starts them
(`mlops.services.airflow_config.launches`, configured by `airflow_env`), with their state in the test's temp dir, and
the run is driven by the same client as `./run.sh pipeline`. Data: the synthetic generator (DATASET and
SYNTHETIC_RATINGS from the test settings, 20,000 ratings).
"""

from __future__ import annotations

import io
import re
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
