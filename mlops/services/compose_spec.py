"""What `docker-compose.yml` declares, read without an engine: its project name, published ports, services.

The file is the source of truth for Docker mode's names and host ports; the backend and the host-side
checks read them here instead of repeating them.
"""

from __future__ import annotations

import re
import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import yaml

from mlops.services.specs import settings_environ
from mlops.settings import PROJECT_ROOT, Settings
from mlops.spark_capacity import MIB, parse_size

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
MONITORING = "monitoring"  # the optional profile with Prometheus and Grafana
CONSUMER = "inference"
ONE_SHOT = ("minio-init", "kafka-init", "mlflow-init", "airflow-init")  # run to completion; exit 0 means done

# Settings a container does not receive (tests/docker checks every other field is passed).
HOST_ONLY_SETTINGS = {
    "LOCAL_DIR": "a host path; containers keep their state in named volumes under their own .local",
    "DATA_CACHE_DIR": "a host path; containers use the default under their own .local",
    "INFERENCE_CONSUMERS": "not read by a consumer: it is the replica count (`--scale inference=N`)",
    "POSTGRES_PASSWORD": "read by the postgres container; our services get it inside their database URLs",
    "GRAFANA_ADMIN_PASSWORD": "read by the grafana container (profile monitoring) only",
    "SPARK_WORKERS": "local mode's own standalone cluster; Docker runs the spark-master/worker services",
    "SPARK_MASTER_UI_URL": "the local master's UI for `status`; Docker publishes spark-master's UI itself",
    "SPARK_LOCAL_DIR": "a host path; containers keep Spark's scratch in their own .local",
}

# The URL settings whose host ports compose publishes literally: (setting, service, container port).
PUBLISHED_URLS = (
    ("airflow_url", "airflow-apiserver", 8080),
    ("mlflow_tracking_uri", "mlflow", 5000),
    ("s3_endpoint_url", "minio", 9000),
    ("console_url", "console", 8501),
)
LOOPBACK = ("127.0.0.1", "localhost")


def compose_spec(path: Path = COMPOSE_FILE) -> dict:
    """docker-compose.yml as written (before interpolation): enough for literal ports and service names."""
    return yaml.safe_load(path.read_text())


@cache
def project_name(path: Path = COMPOSE_FILE) -> str:
    """The file's top-level `name:`: the project of every container, whoever runs `docker compose up`."""
    return compose_spec(path)["name"]


def published_port(spec: dict, service: str, container_port: int) -> tuple[str, str] | None:
    """(host address, host port) that `service` publishes for `container_port`, as written in the file."""
    for entry in spec["services"][service].get("ports", []):
        parts = str(entry).rsplit(":", 2)
        if len(parts) == 3 and parts[2] == str(container_port):
            return parts[0], parts[1]
    return None


def endpoint_mismatches(settings: Settings, spec: dict) -> list[str]:
    """Where the host-side settings would miss what compose publishes (ports bound to 127.0.0.1)."""
    problems = []
    for setting, service, container_port in PUBLISHED_URLS:
        url = urlparse(getattr(settings, setting))
        published = published_port(spec, service, container_port)
        if published is None:
            problems.append(f"docker-compose.yml: {service} publishes no port for {container_port}")
        elif url.hostname not in LOOPBACK or str(url.port) != published[1]:
            problems.append(f"{setting.upper()}={getattr(settings, setting)} but {service} is published on "
                            f"{published[0]}:{published[1]}")  # fmt: skip
    if settings.redis_host not in LOOPBACK:
        problems.append(f"REDIS_HOST={settings.redis_host}: Docker mode publishes Redis on 127.0.0.1")
    # Compose publishes the broker at exactly this address and advertises it: one IPv4 host:port.
    if not re.fullmatch(r"127\.0\.0\.1:\d+", settings.kafka_bootstrap_servers):
        servers = settings.kafka_bootstrap_servers
        problems.append(f"KAFKA_BOOTSTRAP_SERVERS={servers}: Docker mode needs 127.0.0.1:<port>")
    return problems


def host_ports(spec: dict, settings: Settings, services: set[str]) -> list[tuple[str, str, int]]:
    """(service, host address, host port) of every fixed port `services` publish, `${VAR}` filled from settings
    (ports Docker picks, `127.0.0.1::9108`, are left out: they cannot collide)."""
    values = settings_environ(settings)
    out = []
    for name in sorted(services):
        for entry in spec["services"][name].get("ports", []):
            text = re.sub(r"\$\{(\w+)(?:[:?-][^}]*)?\}", lambda m: values.get(m.group(1), ""), str(entry))
            parts = text.rsplit(":", 2)
            if len(parts) == 3 and parts[1]:
                out.append((name, parts[0], int(parts[1])))
    return out


def taken_ports(ports: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The entries of `ports` on which something already accepts connections."""
    taken = []
    for service, host, port in ports:
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex((host, port)) == 0:
                taken.append((service, host, port))
    return taken


def mebibytes(size: str, where: str) -> int:
    """A JVM/Docker size ("1536m", "1g") in MiB, read as Spark's capacity check reads one; `where` names it."""
    return parse_size(str(size), where) // MIB


def spark_overhead(heap_mib: int) -> int:
    """What a Spark JVM needs beyond its heap: spark.{driver,executor}.memoryOverhead's default, max(384m, 10%)."""
    return max(384, heap_mib // 10)


AIRFLOW_SCHEDULER_OWN_MIB = 1024  # the scheduler, its task runner and the training of the largest step


def spark_sizing_problems(spec: dict) -> list[str]:
    """Where the compose file's Spark sizes contradict each other: an executor larger than the worker offers
    never starts (every Spark step waits for resources until its timeout); a JVM larger than its container's
    limit is killed. Checked at `up`, before anything is built."""
    services, env = spec["services"], spec["x-mlops-env"]
    executor = mebibytes(env["SPARK_EXECUTOR_MEMORY"], "SPARK_EXECUTOR_MEMORY")
    driver = mebibytes(env["SPARK_DRIVER_MEMORY"], "SPARK_DRIVER_MEMORY")
    command = [str(part) for part in services["spark-worker"]["command"]]
    offer = mebibytes(command[command.index("--memory") + 1], "spark-worker --memory")
    worker_limit = mebibytes(services["spark-worker"]["mem_limit"], "spark-worker mem_limit")
    daemon = mebibytes(services["spark-worker"]["environment"].get("SPARK_DAEMON_MEMORY", "1g"), "SPARK_DAEMON_MEMORY")
    scheduler_limit = mebibytes(services["airflow-scheduler"]["mem_limit"], "airflow-scheduler mem_limit")
    problems = []
    if executor > offer:
        problems.append(f"SPARK_EXECUTOR_MEMORY {executor}m exceeds what spark-worker offers (--memory {offer}m): "
                        "no executor would start")  # fmt: skip
    executors = max(1, offer // executor)  # as many as the offer holds, each with its heap and overhead
    needed = executors * (executor + spark_overhead(executor)) + daemon
    if needed > worker_limit:
        problems.append(f"spark-worker's {executors} executor(s) of SPARK_EXECUTOR_MEMORY {executor}m (+"
                        f"{spark_overhead(executor)}m overhead each) and its {daemon}m daemon need {needed}m, over "
                        f"its mem_limit {worker_limit}m")  # fmt: skip
    if driver + spark_overhead(driver) + AIRFLOW_SCHEDULER_OWN_MIB > scheduler_limit:
        problems.append(
            f"SPARK_DRIVER_MEMORY {driver}m (+{spark_overhead(driver)}m overhead) and the scheduler's "
            f"own {AIRFLOW_SCHEDULER_OWN_MIB}m exceed airflow-scheduler's mem_limit {scheduler_limit}m"
        )
    return problems
