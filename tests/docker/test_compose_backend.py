"""ComposeBackend's pure parts: reading `docker inspect`, deciding readiness, building compose commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.services import compose
from mlops.services.compose import ComposeBackend, parse_inspect, readiness
from mlops.settings import Settings


def inspect_item(service: str, status: str, exit_code: int = 0, health: str | None = None, n: int = 1) -> dict:
    state = {"Status": status, "ExitCode": exit_code}
    if health:
        state["Health"] = {"Status": health}
    return {
        "Name": f"/mlops-{service}-{n}",
        "State": state,
        "Config": {"Labels": {"com.docker.compose.project": "mlops", "com.docker.compose.service": service}},
    }


def containers(*items: dict):
    return parse_inspect(json.dumps(list(items)))


def test_parse_inspect_reads_service_state_and_health() -> None:
    (c,) = containers(inspect_item("kafka", "running", health="starting"))
    assert (c.service, c.name, c.status, c.health) == ("kafka", "mlops-kafka-1", "running", "starting")
    assert not c.ready
    (c,) = containers(inspect_item("kafka-init", "exited", 0))
    assert c.ready, "a one-shot that exited 0 is done"


def test_readiness_waits_for_health_and_for_every_replica() -> None:
    cs = containers(
        inspect_item("redis", "running", health="healthy"),
        inspect_item("inference", "running", health="healthy", n=1),
        inspect_item("inference", "running", health="starting", n=2),
        inspect_item("kafka-init", "running"),
    )
    states = readiness(cs, {"redis", "inference", "kafka-init", "mlflow"}, exclude=set())
    assert states == {"redis": "healthy", "inference": "pending", "kafka-init": "pending", "mlflow": "pending"}
    # During `up`, the consumers only need to run: they wait for the first champion model.
    assert readiness(cs, {"inference"}, exclude={"inference"}) == {"inference": "running"}


def test_readiness_reports_a_failed_one_shot() -> None:
    cs = containers(inspect_item("airflow-init", "exited", 1))
    assert readiness(cs, {"airflow-init"}, exclude=set()) == {"airflow-init": "failed"}
    # An exited long-running service is not failed-fast (restart policy may bring it back): it is pending.
    cs = containers(inspect_item("redis", "exited", 137))
    assert readiness(cs, {"redis"}, exclude=set()) == {"redis": "pending"}


def test_commands_name_the_project_file_env_and_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compose, "compose_cli", lambda: ["docker-compose"])
    env = tmp_path / ".env"
    env.write_text("DATASET=auto\n")
    backend = ComposeBackend(Settings(), env_file=env)
    argv = backend.command("up", "-d")
    assert argv == ["docker-compose", "-p", "mlops", "-f", str(compose.COMPOSE_FILE), "--env-file", str(env),
                    "up", "-d"]  # fmt: skip
    assert "--profile" in backend.command("down", all_profiles=True)
    monitored = ComposeBackend(Settings(), env_file=env, monitoring=True)
    assert monitored.command("ps")[-3:] == ["--profile", "monitoring", "ps"]


def test_urls_include_kafka_ui_on_8090() -> None:
    urls = ComposeBackend(Settings()).urls()
    assert urls["Kafka UI"] == "http://127.0.0.1:8090"
    assert urls["Airflow UI"].startswith(Settings().airflow_url)
    assert "Grafana" in ComposeBackend(Settings(), monitoring=True).urls()


def test_status_rows_show_one_shots_as_done_and_unhealthy_services(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = ComposeBackend(Settings())
    monkeypatch.setattr(backend, "containers", lambda: containers(
        inspect_item("kafka-init", "exited", 0),
        inspect_item("airflow-init", "exited", 2),
        inspect_item("redis", "running", health="healthy"),
        inspect_item("mlflow", "running", health="unhealthy"),
    ))  # fmt: skip
    rows = {r.name: r for r in backend.rows()}
    assert rows["mlops-kafka-init-1"].state == "done"
    assert rows["mlops-airflow-init-1"].state == "failed (exit 2)"
    assert rows["mlops-redis-1"].state == "up" and rows["mlops-redis-1"].url.endswith(":6379")
    assert rows["mlops-mlflow-1"].state == "unhealthy" and rows["mlops-mlflow-1"].url == Settings().mlflow_tracking_uri
