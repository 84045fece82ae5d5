"""How each native service is launched, in one place: local mode's `up` and the test fixtures both use it.

A `Launch` is everything needed to start one process: its argv and environment, the port it must bind,
a preparation step (config files, schema migration) and the protocol-level health check that says it is
ready. The functions below build one from the settings and a data directory, so the ports always come
from the URL settings and nothing here can drift from what the clients connect to.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from mlops import kafka_auth
from mlops.prediction_budget import EVICTION_POLICY
from mlops.services import health, jvm, mlflow_auth
from mlops.services.errors import ServiceError
from mlops.services.passwords import write_secret_file
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
    data_dir: Path | None = None  # what `status` sizes on disk
    secrets: tuple[str, ...] = ()  # passwords it reads from its own configuration files (those in `env` count too)


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
    """A system binary the project does not install itself; ServiceError with how to install it when missing."""
    found = shutil.which(name)
    if not found:
        raise ServiceError(service, f"`{name}` not found on PATH; {hint}")
    return found


def redis(settings: Settings, data_dir: Path) -> Launch:
    """redis-server with the password from the settings and append-only persistence in `data_dir`.

    The configuration goes in a file (mode 600) so the password never shows in the process list.
    """
    conf = data_dir / "redis.conf"

    def prepare() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_secret_file(
            conf,
            "\n".join(
                [
                    f"bind {settings.redis_host}",
                    f"port {settings.redis_port}",
                    f'requirepass "{settings.redis_password}"',
                    f'dir "{data_dir}"',
                    "appendonly yes",
                    'save ""',
                    f"maxmemory {settings.redis_maxmemory_mb}mb",
                    f"maxmemory-policy {EVICTION_POLICY}",  # results first, never a live feature set
                    "daemonize no",
                    "protected-mode yes",
                    "",
                ]
            ),
        )

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
        secrets=(settings.redis_password,),
    )


KAFKA_HEAP = ("-Xms256m", "-Xmx512m")  # small: a single-node broker for one machine's traffic (Docker: 512m too)
JAVA_HINT = "install it: apt-get install -y openjdk-17-jre-headless (or run ./run.sh, which does)"
MIN_FREE_BYTES = 256 << 20


def java(service: str) -> str:
    """The java binary the JVM services (Kafka, Spark, ...) need, or ServiceError with how to install it."""
    return system_tool(service, "java", JAVA_HINT)


def kafka_version() -> str:
    """The Kafka version the pinned jars are of (from the pom), shown in the Kafka status note."""
    return jvm.property_of("kafka", "kafka.version")


def kafka(settings: Settings, data_dir: Path) -> Launch:
    """Apache Kafka, single-node KRaft (broker + controller in one JVM; the controller on the next port up).

    Jars from `jvm/kafka/pom.xml` (the version docker-compose.yml runs). Everything lives in `data_dir`:
    the generated config, the persisted cluster id and the log dirs (`logs/`), formatted once; topics,
    offsets and unconsumed requests survive `down`/`up` and a kill -9 (Kafka recovers its log on start).
    """
    host, port = health.bootstrap_address(settings)
    props, logs, args = data_dir / "server.properties", data_dir / "logs", data_dir / "java.args"
    log4j = data_dir / "log4j2.properties"

    def prepare() -> None:
        _check_free_space("kafka", data_dir)
        if health.tcp_open(host, port + 1):
            owner = health.port_owner(port + 1)
            raise ServiceError("kafka", f"controller port {host}:{port + 1} (bootstrap port + 1) is already in use"
                                        + (f" ({owner})" if owner else ""))  # fmt: skip
        jars = jvm.classpath("kafka", "kafka")
        data_dir.mkdir(parents=True, exist_ok=True)
        write_secret_file(props, kafka_properties(host, port, logs, kafka_auth.jaas_plain(settings)))
        log4j.write_text(LOG4J2)
        args.write_text(_java_args(jars))
        cluster_id = _cluster_id(data_dir / "cluster.id")
        if (logs / "meta.properties").exists():
            _check_meta(logs / "meta.properties", cluster_id)
        elif logs.exists() and any(logs.iterdir()):
            raise ServiceError(
                "kafka",
                f"{logs} holds data but no meta.properties: not a Kafka log dir this project formatted; "
                "move it away to start afresh (nothing was deleted)",
            )
        else:
            _format_storage(args, log4j, props, cluster_id, data_dir / "format.log")

    return Launch(
        name="kafka",
        service="kafka",
        argv=(
            java("kafka"),
            *KAFKA_HEAP,
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"@{args}",
            "kafka.Kafka",
            str(props),
        ),
        url=f"kafka://{host}:{port}",
        check=lambda: health.kafka_metadata(settings),
        port=port,
        host=host,
        prepare=prepare,
        timeout_s=90,
        note=f"Apache Kafka {kafka_version()} (KRaft), data in {data_dir}",
        data_dir=data_dir,
        secrets=(settings.kafka_admin_password,),
    )


# G1 with short pauses, as Kafka's own kafka-run-class.sh: a GC pause is a latency spike for every request.
JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
             "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")  # fmt: skip

LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = info
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
"""


# S3Proxy's jar ships no logback.xml, so logback's default (everything at DEBUG) logged Jetty's thread pool
# every second: 12 GB of s3.log in an afternoon. Requests' errors still show at INFO.
S3PROXY_LOGBACK = """<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>[%d] %level %msg \\(%logger\\)%n</pattern></encoder>
  </appender>
  <logger name="org.gaul.s3proxy" level="info"/>
  <root level="warn"><appender-ref ref="out"/></root>
</configuration>
"""


KAFKA_REAUTH_MS = 30_000
"""Every SASL connection signs in again this often (KIP-368): credentials deleted on the broker stop a client
within this time, not only at its next reconnect."""


def kafka_properties(host: str, port: int, logs: Path, jaas_plain: str) -> str:
    """server.properties of the single-node KRaft broker local mode and the tests run (mode 600: it holds the
    admin's password, `jaas_plain`).

    Authentication and ACLs (mlops.kafka_auth): clients sign in over SASL (SCRAM-SHA-512 for the roles,
    PLAIN for the admin, whose password is in this file); the broker signs in to its own controller listener
    as the admin; KRaft's StandardAuthorizer denies whatever no ACL allows.

    Retention: 7 days or 1 GiB per partition, whichever comes first (a request left unconsumed over a long
    weekend is still there; the bench's millions of requests cannot fill the disk), in 64 MiB segments so
    that retention frees space in small steps. Topics are created by `up` with their partition counts,
    never implicitly (as in docker-compose.yml).
    """
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{port + 1}",
            f"listeners=SASL_PLAINTEXT://{host}:{port},CONTROLLER://{host}:{port + 1}",
            f"advertised.listeners=SASL_PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            f"sasl.enabled.mechanisms={kafka_auth.SCRAM},{kafka_auth.PLAIN}",
            f"sasl.mechanism.inter.broker.protocol={kafka_auth.PLAIN}",
            f"sasl.mechanism.controller.protocol={kafka_auth.PLAIN}",
            f"listener.name.controller.sasl.enabled.mechanisms={kafka_auth.PLAIN}",
            f"listener.name.controller.plain.sasl.jaas.config={jaas_plain}",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas_plain}",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{kafka_auth.ADMIN}",
            "allow.everyone.if.no.acl.found=false",
            f"connections.max.reauth.ms={KAFKA_REAUTH_MS}",
            f"log.dirs={logs}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "log.retention.bytes=1073741824",
            "log.segment.bytes=67108864",
            "num.network.threads=2",
            "num.io.threads=4",
            "num.recovery.threads.per.data.dir=2",
            "",
        ]
    )


def _java_args(jars: list[str]) -> str:
    """A java @argfile with the classpath: keeps the process list short (hundreds of jar paths)."""
    return f'-cp "{":".join(jars)}"\n'


def _cluster_id(path: Path) -> str:
    """The cluster id, generated once (Kafka's Uuid format: URL-safe base64 of 16 random bytes) and kept."""
    if path.exists():
        return path.read_text().strip()
    cluster_id = "-"
    while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: a leading "-" would read as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.write_text(cluster_id + "\n")
    return cluster_id


def _check_meta(meta: Path, cluster_id: str) -> None:
    """Refuse a log dir that is not this broker's (another cluster's data, a damaged meta.properties)."""
    try:
        found = dict(
            line.split("=", 1) for line in meta.read_text().splitlines() if "=" in line and not line.startswith("#")
        )
    except (OSError, ValueError) as exc:
        raise ServiceError("kafka", f"cannot read {meta}: {exc}") from exc
    if found.get("cluster.id") != cluster_id or found.get("node.id") != "1":
        raise ServiceError(
            "kafka",
            f"corrupt or foreign log dir: {meta} has cluster.id={found.get('cluster.id')} node.id="
            f"{found.get('node.id')}, expected cluster.id={cluster_id} (from {meta.parent.parent / 'cluster.id'}) "
            "node.id=1; restore the right directory (nothing was deleted)",
        )


def _format_storage(args: Path, log4j: Path, props: Path, cluster_id: str, log: Path) -> None:
    """`kafka-storage.sh format`, once, with the persisted cluster id."""
    argv = [java("kafka"), "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}", f"@{args}", "kafka.tools.StorageTool",
            "format", "-t", cluster_id, "-c", str(props)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        last = ([ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()] or ["no output"])[-1]
        raise ServiceError("kafka", f"formatting the log dir failed: {last.strip()[:200]}", log)


def _check_free_space(service: str, path: Path) -> None:
    """A full disk as one clear line before the JVM starts, not a stack trace in the log after."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE_BYTES:
        raise ServiceError(service, f"only {free >> 20} MiB free on the disk of {path} (needs at least "
                                    f"{MIN_FREE_BYTES >> 20} MiB): free some space; nothing was deleted")  # fmt: skip


def jvm_components(settings: Settings) -> list[tuple[str, str]]:
    """(component, service) of every jar set local mode will run with these settings, for `up` to fetch first."""
    components = [("kafka", "kafka")]
    if not shutil.which("minio"):
        components.append(("s3proxy", "s3"))
    if settings.spark_io == "s3a":
        components.append(("s3a", "spark"))
    return components


def s3(settings: Settings, data_dir: Path) -> Launch:
    """MinIO when a `minio` binary is on PATH, else S3Proxy on its filesystem backend; data in `data_dir`.

    Both are authenticated with S3_ACCESS_KEY/S3_SECRET_KEY and keep every object on disk across restarts.
    """
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
            prepare=lambda: (_check_free_space("s3", data_dir), data_dir.mkdir(parents=True, exist_ok=True)),
            timeout_s=30,
            note=f"MinIO, data in {data_dir}; console http://{host}:{port + 1}",
            data_dir=data_dir,
        )
    # The config names the keys: beside the data dir (not in it, where it would look like a bucket), mode 600.
    conf, args = data_dir.parent / "s3proxy.properties", data_dir.parent / "s3proxy.java.args"
    logback = data_dir.parent / "s3proxy.logback.xml"

    def prepare() -> None:
        _check_free_space("s3", data_dir)
        jars = jvm.classpath("s3proxy", "s3")
        data_dir.mkdir(parents=True, exist_ok=True)
        write_secret_file(
            conf,
            "\n".join(
                [
                    f"s3proxy.endpoint=http://{host}:{port}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={settings.s3_access_key}",
                    f"s3proxy.credential={settings.s3_secret_key}",
                    "jclouds.provider=filesystem",
                    f"jclouds.filesystem.basedir={data_dir}",
                    "",
                ]
            ),
        )
        logback.write_text(S3PROXY_LOGBACK)
        args.write_text(_java_args(jars))

    return Launch(
        name="s3",
        service="s3",
        argv=(
            java("s3"),
            "-Xms64m",
            "-Xmx256m",
            "-XX:+ExitOnOutOfMemoryError",
            f"-Dlogback.configurationFile={logback}",
            f"@{args}",
            "org.gaul.s3proxy.Main",
            "--properties",
            str(conf),
        ),
        url=url,
        check=lambda: health.s3_list_buckets(settings),
        port=port,
        host=host,
        prepare=prepare,
        timeout_s=60,
        note=f"S3Proxy {jvm.property_of('s3proxy', 's3proxy.version')} (filesystem), data in {data_dir}",
        data_dir=data_dir,
        secrets=(settings.s3_secret_key,),
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
    """MLflow tracking server with its basic-auth app (`mlops.services.mlflow_auth`): SQLite stores in
    `data_dir`, artifacts proxied to the object store's bucket."""
    host = health.urlparse(settings.mlflow_tracking_uri).hostname or "127.0.0.1"
    port = settings.port_of("mlflow_tracking_uri")
    auth_config = data_dir / mlflow_auth.CONFIG_NAME

    def prepare() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        auth_config.write_text(mlflow_auth.config_text(f"sqlite:///{data_dir / 'auth.db'}"))

    return Launch(
        name="mlflow",
        service="mlflow",
        argv=(
            venv_tool("mlflow"),
            "server",
            "--app-name",
            "basic-auth",
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
        env={
            **s3_client_environ(settings),
            **mlflow_auth.server_environ(settings, auth_config),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        },
        prepare=prepare,
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


def write_prometheus_config(settings: Settings, data_dir: Path, rules: Path = PROMETHEUS_RULES) -> bool:
    """Write local mode's `prometheus.yml` under `data_dir` (JSON is YAML); True when it changed."""
    config = data_dir / "prometheus.yml"
    text = json.dumps(prometheus_config(settings, rules), indent=2) + "\n"
    if config.exists() and config.read_text() == text:
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    return True


def prometheus(settings: Settings, data_dir: Path, rules: Path = PROMETHEUS_RULES) -> Launch:
    """Prometheus (Debian's `prometheus` package) on PROMETHEUS_URL, data in `data_dir`, config from settings.

    The configuration is written at each start, and `up` rewrites it and reloads a running Prometheus (SIGHUP)
    when the consumer count changed, so the scrape targets always follow INFERENCE_CONSUMERS.
    """
    host = health.urlparse(settings.prometheus_url).hostname or "127.0.0.1"
    port = settings.port_of("prometheus_url")
    binary = system_tool("prometheus", "prometheus", "install it: apt-get install -y prometheus")
    config = data_dir / "prometheus.yml"

    def prepare() -> None:
        write_prometheus_config(settings, data_dir, rules)

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
        data_dir=data_dir,
    )
