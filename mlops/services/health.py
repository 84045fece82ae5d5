"""Protocol-level health checks: an open port is not enough, each check speaks the service's protocol.

Every check raises on failure (with the client's own message) and returns a short description on success.
"""

from __future__ import annotations

import socket
import subprocess
from urllib.parse import urlparse

import requests

from mlops import kafka_auth
from mlops.settings import Settings

TIMEOUT_S = 3.0
REDIS_MIN_VERSION = (7, 0)
"""The consumer's idempotent write is `SET key value NX GET`, which Redis accepts from 7.0 on."""


class Incompatible(RuntimeError):
    """The server answers, but it is a version the platform cannot use: waiting will not help."""


def require_redis_version(version: str) -> None:
    """Refuse a Redis older than REDIS_MIN_VERSION, saying which version was found and why it matters."""
    found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if found < REDIS_MIN_VERSION:
        need = ".".join(map(str, REDIS_MIN_VERSION))
        raise Incompatible(
            f"redis {version} is too old: the inference consumer needs {need} or newer (SET ... NX GET); "
            f"install a newer redis-server"
        )


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def bootstrap_address(settings: Settings) -> tuple[str, int]:
    """Host and port of the first Kafka bootstrap server."""
    first = settings.kafka_bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def s3_address(settings: Settings) -> tuple[str, int]:
    """Host and port of S3_ENDPOINT_URL (80 or 443 when it names none), to probe before speaking S3."""
    parsed = urlparse(settings.s3_endpoint_url)
    return parsed.hostname or "127.0.0.1", parsed.port or (443 if parsed.scheme == "https" else 80)


def redis_ping(settings: Settings) -> str:
    """PING with the password, then the version, which must be new enough for the consumer (`require_redis_version`)."""
    import redis

    client = redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
    )
    try:
        client.ping()
        version = str(client.info("server")["redis_version"])
        require_redis_version(version)
        return f"PING ok, redis {version}"
    finally:
        client.close()


def kafka_metadata(settings: Settings) -> str:
    """A metadata request answered: the broker takes client requests, not only TCP connections."""
    from confluent_kafka.admin import AdminClient

    host, port = bootstrap_address(settings)
    if not tcp_open(host, port):
        raise ConnectionError(f"nothing listens on {host}:{port}")
    admin = AdminClient({**kafka_auth.client_config(settings, kafka_auth.ADMIN), "socket.timeout.ms": 3000,
                         "log_level": 0})  # fmt: skip
    meta = admin.list_topics(timeout=TIMEOUT_S)
    return f"metadata ok, {len(meta.brokers)} broker(s), {len(meta.topics)} topic(s)"


def s3_client(settings: Settings):
    """A minio SDK client for the configured endpoint, configured as every batch step's (`ObjectStore`)."""
    from mlops.object_store import ObjectStore

    return ObjectStore.from_settings(settings).client


def s3_list_buckets(settings: Settings) -> str:
    """An authenticated S3 call answered: the endpoint accepts the configured keys."""
    buckets = s3_client(settings).list_buckets()
    return f"list-buckets ok, {len(buckets)} bucket(s)"


def http_ok(url: str) -> str:
    """A 2xx answer to GET `url`; an error status or no answer raises."""
    response = requests.get(url, timeout=TIMEOUT_S)
    response.raise_for_status()
    return f"GET {urlparse(url).path} {response.status_code}"


def prometheus_ready_url(settings: Settings) -> str:
    """Prometheus' readiness endpoint: 200 once it has loaded its rules and can answer queries."""
    return settings.prometheus_url.rstrip("/") + "/-/ready"


def mlflow_health(settings: Settings) -> str:
    """The tracking server's own `/health` answers."""
    return http_ok(settings.mlflow_tracking_uri.rstrip("/") + "/health")


def airflow_health(settings: Settings) -> str:
    """The API server answers its monitor endpoint (it needs no login)."""
    return http_ok(settings.airflow_url.rstrip("/") + "/api/v2/monitor/health")


def airflow_component(settings: Settings, component: str) -> str:
    """A scheduler/dag-processor/triggerer is ready when the API server reports its heartbeat healthy."""
    response = requests.get(settings.airflow_url.rstrip("/") + "/api/v2/monitor/health", timeout=TIMEOUT_S)
    response.raise_for_status()
    status = (response.json().get(component) or {}).get("status")
    if status != "healthy":
        raise RuntimeError(f"API server reports {component} {status or 'unknown'}")
    return f"{component} healthy"


def consumer_metrics(port: int) -> str:
    """A consumer is up when it serves its metrics; `/healthz` stays 503 until a champion model exists."""
    return http_ok(f"http://127.0.0.1:{port}/metrics")


def consumer_health(port: int) -> str:
    """What a consumer's `/healthz` says, in a few words (for `status`); never raises."""
    try:
        detail = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_S).json()
    except (requests.RequestException, ValueError) as exc:
        return f"/healthz unreadable ({type(exc).__name__})"
    if detail.get("status") == "ok":
        return f"healthy, model v{detail.get('model_version')}, feature set {detail.get('feature_set')}"
    return f"not serving: {detail.get('problem') or 'unhealthy'}"


def port_owner(port: int) -> str:
    """Who listens on `port` (pid and command), when `ss` can tell: makes the port-taken error actionable."""
    try:
        out = subprocess.run(
            ["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in out.splitlines():
        if "pid=" in line:
            users = line[line.index("users:") :]
            name = users.split('"')[1] if '"' in users else "?"
            pid = users.split("pid=")[1].split(",")[0]
            return f"pid {pid}, {name}"
    return ""
