"""Local mode against real processes: lifecycle, repair, and the faults `up`/`down` must handle.

Each test gets its own LOCAL_DIR and free ports, so it never meets the fixture servers or a developer's
stack. Airflow and the consumers are left out (too slow for here; the orchestration and stream tests
cover them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from mlops.services import process
from mlops.services.errors import ServiceError
from mlops.services.local import LocalBackend
from mlops.services.passwords import PASSWORD_SETTINGS
from mlops.settings import PROJECT_ROOT, Settings, load_settings


def local_environ(root: Path, free_port: Callable[[], int], **overrides: str) -> dict[str, str]:
    env = {
        "LOCAL_DIR": str(root),
        "REDIS_PORT": str(free_port()),
        "REDIS_PASSWORD": "lifecycle-pw",
        # Strong values of every other password: the CLI refuses placeholders in local mode too.
        "S3_SECRET_KEY": "lifecycle-s3-secret",
        "AIRFLOW_ADMIN_PASSWORD": "lifecycle-airflow-pw",
        "POSTGRES_PASSWORD": "lifecycle-postgres-pw",
        "GRAFANA_ADMIN_PASSWORD": "lifecycle-grafana-pw",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "AIRFLOW_URL": f"http://127.0.0.1:{free_port()}",
        "INFERENCE_METRICS_PORT": str(free_port()),
        "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "CONSOLE_URL": f"http://127.0.0.1:{free_port()}",
    }
    env.update(overrides)
    return env


def local_settings(root: Path, free_port: Callable[[], int], **overrides: str) -> Settings:
    return load_settings(env_file=root / "no.env", environ=local_environ(root, free_port, **overrides))


def core_backend(settings: Settings) -> LocalBackend:
    backend = LocalBackend(settings)
    backend.include_airflow = False
    backend.include_inference = False
    backend.include_console = False
    backend.include_prometheus = False
    return backend


def pids(root: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (root / "run").glob("*.pid")}


def _assert_no_secret_on_a_command_line(settings: Settings, service_pids) -> None:
    """No password of the settings appears in /proc/<pid>/cmdline of the services or of their children."""
    secrets = [getattr(settings, name) for name in PASSWORD_SETTINGS]
    roots, scanned = set(service_pids), 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if int(proc.name) in roots or parent in roots:
            scanned += 1
            leaked = [s for s in secrets if s in cmdline]
            assert not leaked, f"pid {proc.name} has a password on its command line: {cmdline[:200]}"
    assert scanned >= len(roots)


@pytest.mark.slow
def test_up_status_down_up(tmp_path, free_port, capsys):
    settings = local_settings(tmp_path, free_port)
    backend = core_backend(settings)
    try:
        backend.up()
        first = pids(tmp_path)
        assert set(first) == {"redis", "kafka", "s3", "mlflow"}
        assert all(process.alive(pid) for pid in first.values())
        assert (tmp_path / "logs" / "mlflow.log").exists()

        _assert_no_secret_on_a_command_line(settings, first.values())
        secret_files = [tmp_path / "data" / "redis" / "redis.conf", tmp_path / "data" / "s3proxy.properties"]
        for conf in secret_files[: 2 if secret_files[1].exists() else 1]:  # S3Proxy's, unless MinIO serves S3
            assert conf.stat().st_mode & 0o777 == 0o600, conf

        capsys.readouterr()
        assert backend.status() == 0
        report = capsys.readouterr().out
        for name in first:
            assert any(line.split()[:3] == [name, "up", str(first[name])] for line in report.splitlines()), report
        assert "inference-requests" in report and "p2=0" in report
        assert "feature set (fs:current): none yet" in report
        assert "champion model (movielens-recommender@champion): none yet" in report

        # A second `up` changes nothing; a dead service is restarted, the healthy ones left alone.
        backend.up()
        assert pids(tmp_path) == first
        os.kill(first["redis"], signal.SIGKILL)
        _wait_dead(first["redis"])
        backend.up()
        again = pids(tmp_path)
        assert again["redis"] != first["redis"] and process.alive(again["redis"])
        assert {k: v for k, v in again.items() if k != "redis"} == {k: v for k, v in first.items() if k != "redis"}

        # A process that is alive but does not answer (frozen) is restarted too.
        os.kill(again["kafka"], signal.SIGSTOP)
        backend.up()
        thawed = pids(tmp_path)
        assert thawed["kafka"] != again["kafka"] and not process.alive(again["kafka"])
        assert thawed["redis"] == again["redis"]
        again = thawed

        backend.down(purge=False)
        assert pids(tmp_path) == {}
        assert not any(process.alive(pid) for pid in again.values())
        assert backend.status() == 1
        assert "down" in capsys.readouterr().out
        assert (tmp_path / "data" / "mlflow" / "mlflow.db").exists()  # down keeps data

        backend.up()
        assert set(pids(tmp_path)) == set(first)
    finally:
        backend.down(purge=True)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_rotated_passwords_are_taken_up_by_up_with_no_data_lost(tmp_path, free_port):
    """Passwords changed in .env, then `up`: Redis and Kafka restart on the new ones (the old ones refused from
    then on), MLflow's platform user gets its new password, and what they stored before is still there."""
    import redis
    from confluent_kafka import Consumer, Producer, TopicPartition

    from mlops import kafka_auth
    from mlops.topics import REQUESTS

    environ = local_environ(tmp_path, free_port)
    settings = load_settings(env_file=tmp_path / "no.env", environ=environ)
    backend = core_backend(settings)
    rotated = load_settings(env_file=tmp_path / "no.env", environ={
        **environ, "REDIS_PASSWORD": "rotated-redis-pw", "KAFKA_ADMIN_PASSWORD": "rotated-kafka-admin",
        "KAFKA_PLATFORM_PASSWORD": "rotated-kafka-platform", "MLFLOW_TRACKING_PASSWORD": "rotated-mlflow-pw",
    })  # fmt: skip
    try:
        backend.up()
        first = pids(tmp_path)
        redis.Redis.from_url(settings.redis_url).set("kept", "before the rotation")
        producer = Producer(kafka_auth.client_config(settings, kafka_auth.PLATFORM))
        producer.produce(REQUESTS, b"kept before the rotation", b"1", partition=0)
        assert producer.flush(15) == 0

        core_backend(rotated).up()
        now = pids(tmp_path)
        assert now["redis"] != first["redis"] and now["kafka"] != first["kafka"]
        assert now["s3"] == first["s3"] and now["mlflow"] == first["mlflow"]  # their passwords did not change
        assert redis.Redis.from_url(rotated.redis_url).get("kept") == b"before the rotation"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(settings.redis_url).ping()
        reader = Consumer({**kafka_auth.client_config(rotated, kafka_auth.PLATFORM), "group.id": "inference-rot"})
        reader.assign([TopicPartition(REQUESTS, 0, 0)])
        values = []
        deadline = time.monotonic() + 30
        while b"kept before the rotation" not in values and time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
        reader.close()
        assert b"kept before the rotation" in values
        refused = Producer({**kafka_auth.client_config(settings, kafka_auth.PLATFORM), "message.timeout.ms": 4000})
        errors: list = []
        refused.produce(REQUESTS, b"x", on_delivery=lambda err, _m: errors.append(err))
        refused.flush(10)
        assert errors and errors[0] is not None  # the old platform password no longer signs in
        search = f"{rotated.mlflow_tracking_uri}/api/2.0/mlflow/experiments/search"
        assert requests.get(search, params={"max_results": 1}, auth=rotated.mlflow_auth, timeout=10).ok
        assert requests.get(search, params={"max_results": 1}, auth=settings.mlflow_auth, timeout=10).status_code == 401
    finally:
        core_backend(rotated).down(purge=True)


def test_port_taken_by_a_stranger_stops_up_with_one_line(tmp_path, free_port):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        backend = core_backend(local_settings(tmp_path, free_port, REDIS_PORT=str(port)))
        with pytest.raises(ServiceError) as caught:
            backend.up()
    message = str(caught.value)
    assert message.startswith("redis: port 127.0.0.1:") and str(port) in message
    assert "redis.log" in message and "\n" not in message
    assert pids(tmp_path) == {}  # nothing was started


def test_service_that_exits_at_start_is_reported_with_its_log(tmp_path, free_port):
    # 192.0.2.1 (TEST-NET) is no local address: redis-server cannot bind it and exits.
    backend = core_backend(local_settings(tmp_path, free_port, REDIS_HOST="192.0.2.1"))
    try:
        with pytest.raises(ServiceError) as caught:
            backend.up()
    finally:
        backend.down(purge=False)  # Kafka and S3, started alongside, are left running by a failed `up`
    message = str(caught.value)
    assert message.startswith("redis: exited with code")
    assert str(tmp_path / "logs" / "redis.log") in message


BROKEN_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>mlops-platform.test</groupId><artifactId>kafka</artifactId><version>1</version><packaging>pom</packaging>
  <properties><kafka.version>0-test</kafka.version></properties>
  <repositories><repository><id>central</id><url>{url}</url></repository></repositories>
  <dependencies><dependency>
    <groupId>org.example.mlopstest</groupId><artifactId>broker</artifactId><version>{version}</version>
  </dependency></dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
  </plugin></plugins></build>
</project>
"""


@pytest.fixture
def broken_maven(tmp_path, monkeypatch):
    """Point the kafka component at a pom whose one dependency comes from a repository of our making:
    a file:// repository whose jar does not match its published SHA-1, or a URL nobody answers (offline).
    A fresh artifact version each time, so Maven's local repository has nothing cached for it."""
    import uuid

    from mlops.services import jvm

    version = f"1.0.{uuid.uuid4().hex[:8]}"
    repo = tmp_path / "repo"
    base = repo / "org" / "example" / "mlopstest" / "broker" / version
    base.mkdir(parents=True)
    pom_file, jar_file = base / f"broker-{version}.pom", base / f"broker-{version}.jar"
    pom_file.write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>org.example.mlopstest</groupId><artifactId>broker</artifactId><version>{version}</version>"
        "</project>"
    )
    jar_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    (base / f"broker-{version}.pom.sha1").write_text(hashlib.sha1(pom_file.read_bytes()).hexdigest())
    (base / f"broker-{version}.jar.sha1").write_text("0" * 40)  # the mismatch
    poms = tmp_path / "jvm"
    (poms / "kafka").mkdir(parents=True)
    monkeypatch.setattr(jvm, "POM_DIR", poms)
    monkeypatch.setenv("MLOPS_JVM_CACHE", str(tmp_path / "jvm-cache"))

    def use(url: str) -> str:
        (poms / "kafka" / "pom.xml").write_text(BROKEN_POM.format(url=url, version=version))
        return f"org.example.mlopstest:broker:jar:{version}"

    yield repo, use
    shutil.rmtree(Path.home() / ".m2" / "repository" / "org" / "example" / "mlopstest", ignore_errors=True)


@pytest.mark.parametrize("fault", ["checksum", "offline"])
def test_failed_maven_resolution_stops_up_naming_the_artifact(tmp_path, free_port, broken_maven, fault):
    repo, use = broken_maven
    artifact = use(repo.as_uri() if fault == "checksum" else f"http://127.0.0.1:{free_port()}/maven2")
    root = tmp_path / "local"
    backend = core_backend(local_settings(root, free_port))
    with pytest.raises(ServiceError) as caught:
        backend.up()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("kafka: Maven could not resolve org.example.mlopstest:broker:")
    assert artifact.rsplit(":", 1)[1] in message and "Nothing was installed or started" in message
    if fault == "checksum":
        assert "checksum" in message.lower() and "~/.m2/repository" in message
    else:
        assert "Connection refused" in message and "reachable" in message
    assert "kafka-maven.log" in message
    assert not list((tmp_path / "jvm-cache").glob("*.classpath"))  # no record of a half-resolved classpath
    assert pids(root) == {} and not (root / "data").exists()  # nothing started, nothing written


def test_corrupt_kafka_log_dir_is_one_line_and_nothing_is_deleted(tmp_path, free_port):
    from mlops.services import specs

    settings = local_settings(tmp_path, free_port)
    data = tmp_path / "data" / "kafka"
    specs.kafka(settings, data).prepare()  # formats the log dir once, with the persisted cluster id
    meta = data / "logs" / "meta.properties"
    assert meta.exists() and (data / "cluster.id").exists()
    specs.kafka(settings, data).prepare()  # idempotent: a formatted dir is accepted as it is
    meta.write_text(meta.read_text().replace("cluster.id=", "cluster.id=X"))  # another cluster's data
    before = _kafka_data(data)
    backend = core_backend(settings)
    try:
        with pytest.raises(ServiceError) as caught:
            backend.up()
    finally:
        backend.down(purge=False)
    message = str(caught.value)
    assert message.startswith("kafka: corrupt or foreign log dir: ") and "\n" not in message
    assert str(meta) in message and "nothing was deleted" in message and "kafka.log" in message
    assert _kafka_data(data) == before


def _kafka_data(data: Path) -> dict[str, bytes]:
    """What the broker stores (the config files `up` regenerates each time aside)."""
    generated = {"server.properties", "java.args", "log4j2.properties"}
    files = [p for p in data.rglob("*") if p.is_file() and p.name not in generated]
    return {str(p.relative_to(data)): p.read_bytes() for p in files}


def test_down_leaves_alone_a_process_that_is_not_ours(tmp_path, free_port, capsys):
    backend = core_backend(local_settings(tmp_path, free_port))
    stranger = subprocess.Popen(["sleep", "300"])
    other = subprocess.Popen(["sleep", "300"])
    try:
        run = tmp_path / "run"
        run.mkdir(parents=True)
        # A pid file by hand (no start-time record): the command line is not redis-server's.
        (run / "redis.pid").write_text(f"{stranger.pid}\n")
        # A recorded process whose pid now belongs to someone else: the start time differs.
        (run / "kafka.pid").write_text(f"{other.pid}\n")
        (run / "kafka.json").write_text(json.dumps({"pid": other.pid, "argv": ["sleep"], "start_time": 1}))
        backend.down(purge=False)
        assert stranger.poll() is None and other.poll() is None
        out = capsys.readouterr().out
        assert f"redis: pid {stranger.pid} is not a process this project started" in out
        assert f"kafka: pid {other.pid} is not a process this project started" in out
        assert pids(tmp_path) == {}
    finally:
        stranger.kill()
        other.kill()


@pytest.mark.slow
def test_ctrl_c_during_up_leaves_no_orphan(tmp_path, free_port):
    env = {**os.environ, **local_environ(tmp_path, free_port)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "mlops.cli", "--local", "up"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 120
    # Interrupt while MLflow is starting, i.e. after the core services are up and recorded.
    while "mlflow" not in seen and time.monotonic() < deadline and cli.poll() is None:
        seen.update(pids(tmp_path))
        time.sleep(0.05)
    assert "mlflow" in seen, cli.communicate()[0]
    cli.send_signal(signal.SIGINT)
    out = cli.communicate(timeout=60)[0]
    assert cli.returncode == 130, out
    assert "interrupted" in out
    for name, pid in seen.items():
        _wait_dead(pid)
        assert not process.alive(pid), f"{name} (pid {pid}) outlived Ctrl-C"
    assert pids(tmp_path) == {}


def test_status_of_a_stack_that_is_not_running_is_a_readable_report(tmp_path, free_port):
    env = {**os.environ, **local_environ(tmp_path, free_port)}
    result = subprocess.run(
        [sys.executable, "-m", "mlops.cli", "--local", "status"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("redis", "kafka", "s3", "mlflow"):
        assert any(line.split()[:2] == [name, "down"] for line in lines), result.stdout
    assert "topics: -" in result.stdout and "champion model" in result.stdout


def test_unknown_verb_and_bad_setting_are_one_line_errors(tmp_path, free_port):
    env = {**os.environ, **local_environ(tmp_path, free_port)}
    bad = subprocess.run([sys.executable, "-m", "mlops.cli", "launch"], cwd=PROJECT_ROOT, env=env, capture_output=True)
    assert bad.returncode == 2 and b"invalid choice" in bad.stderr
    env["TEST_FRACTION"] = "2"
    status = [sys.executable, "-m", "mlops.cli", "--local", "status"]
    bad = subprocess.run(status, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "settings: TEST_FRACTION=2.0: expected a number between 0 and 1 (fix it in .env or the environment)"
    ]


def _wait_dead(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while process.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.slow
def test_consumers_start_without_a_model_and_restart(tmp_path, free_port, capsys):
    settings = local_settings(tmp_path, free_port, INFERENCE_CONSUMERS="2")
    backend = LocalBackend(settings)
    backend.include_airflow = False
    try:
        backend.up()
        first = pids(tmp_path)
        assert {"inference-0", "inference-1"} <= set(first)
        backend.restart_consumers(wait_for_model=False)  # no champion exists here
        second = pids(tmp_path)
        for name in ("inference-0", "inference-1"):
            assert second[name] != first[name] and not process.alive(first[name])
        assert {k: v for k, v in second.items() if not k.startswith("inference")} == {
            k: v for k, v in first.items() if not k.startswith("inference")
        }
        capsys.readouterr()
        backend.status()
        rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("inference-")]
        assert len(rows) == 2
        assert all(" up " in row and "not serving: no `champion` model registered yet" in row for row in rows), rows
        # `up` started Prometheus scraping both consumers; `up` with another consumer count reloads its targets
        targets = settings.prometheus_url + "/api/v1/targets"

        def scraped() -> list[str]:
            active = requests.get(targets, timeout=5).json()["data"]["activeTargets"]
            return sorted(t["labels"]["instance"] for t in active if t["labels"]["job"] == "inference")

        def wait_scraped(expected: list[str]) -> list[str]:
            deadline = time.monotonic() + 30
            while scraped() != expected and time.monotonic() < deadline:
                time.sleep(0.5)
            return scraped()

        both = sorted(f"127.0.0.1:{settings.inference_metrics_port + i}" for i in range(2))
        assert wait_scraped(both) == both
        prometheus_pid = pids(tmp_path)["prometheus"]
        fewer = LocalBackend(settings.replace(inference_consumers=1))
        fewer.include_airflow = fewer.include_inference = fewer.include_console = False
        fewer.up()  # everything else is running and left alone
        one = [f"127.0.0.1:{settings.inference_metrics_port}"]
        assert wait_scraped(one) == one and pids(tmp_path)["prometheus"] == prometheus_pid
    finally:
        backend.down(purge=True)


def test_a_full_disk_is_one_line_before_the_jvm_starts(tmp_path, free_port, monkeypatch):
    from mlops.services import specs

    monkeypatch.setattr(specs, "MIN_FREE_BYTES", 1 << 60)  # more than any disk: this one counts as full
    settings = local_settings(tmp_path, free_port)
    for launch in (specs.kafka(settings, tmp_path / "data" / "kafka"), specs.s3(settings, tmp_path / "data" / "s3")):
        log = tmp_path / "logs" / f"{launch.name}.log"
        with pytest.raises(ServiceError) as caught:
            process.start(launch, log)
        message = str(caught.value)
        assert message.startswith(f"{launch.name}: only ") and "MiB free on the disk of" in message, message
        assert "nothing was deleted" in message and str(log) in message and "\n" not in message
    assert not (tmp_path / "data").exists()


def test_local_mode_refuses_a_placeholder_password_naming_it(tmp_path, free_port):
    """A placeholder put back by hand (here the example's S3 secret) stops `up` before anything starts, with
    the setting's name; a fresh clone never meets this, since `./run.sh` creates `.env` with strong ones."""
    env = {**os.environ, **local_environ(tmp_path, free_port, S3_SECRET_KEY="change-me-s3-secret")}
    result = subprocess.run([sys.executable, "-m", "mlops.cli", "--local", "up"], cwd=PROJECT_ROOT, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "S3_SECRET_KEY is a well-known or placeholder value" in result.stdout
    assert "weak passwords" in result.stderr and "S3_SECRET_KEY" in result.stderr
    assert pids(tmp_path) == {}


def test_up_refuses_results_that_cannot_fit_in_redis(tmp_path, free_port):
    """A day-long result lifetime at 1,000 req/s needs 90 GiB: `up` says so, naming the settings, and starts
    nothing (before, Redis filled up and the stream halted)."""
    env = {**os.environ, **local_environ(tmp_path, free_port, PREDICTION_TTL_SECONDS="86400")}
    result = subprocess.run([sys.executable, "-m", "mlops.cli", "--local", "up"], cwd=PROJECT_ROOT, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "redis: stored results need" in result.stderr and "PREDICTION_TTL_SECONDS 86,400" in result.stderr
    assert pids(tmp_path) == {}
