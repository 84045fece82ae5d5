"""Session fixtures: throwaway REAL servers (Redis, Apache Kafka, S3Proxy or MinIO, MLflow) on free ports.

They are launched by the same definitions as local mode's `up` (`mlops.services.specs`), so tests and
the running stack cannot drift. Each server starts only when a test asks for it (MLflow is slow) and
stops at the end of the session. The environment of the test process is pointed at these servers for
the whole session, so code that reads `get_settings()`, and any subprocess, never touches a developer's
running stack.

Use in tests: `settings` (Redis, broker with the topics, S3 with the buckets, all started) and, when
MLflow is needed, `mlflow_server` as well (`settings.mlflow_tracking_uri` points at it).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops import kafka_auth
from mlops import settings as settings_module
from mlops.services import mlflow_auth, process, provision, specs
from mlops.settings import Settings, load_settings


def free_port() -> int:
    """A port nothing listens on, picked at random below the kernel's ephemeral range.

    Not `bind(0)`: that hands out ephemeral ports, which outgoing connections and other test sessions
    running in parallel also draw from, and the servers bind their ports only when first needed.
    """
    low, _high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, min(low, 32768) - 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port + 1 not in _handed_out and port not in _handed_out:  # +1: MinIO's console, KRaft's controller
            _handed_out.update((port, port + 1))
            return port
    raise RuntimeError("no free port found in 20000-32767")


_handed_out: set[int] = set()


@dataclass(frozen=True)
class Server:
    """A running fixture server: what to connect to, and where its log is when a test fails."""

    name: str
    url: str
    pid: int
    log: Path


def _test_environ(root: Path) -> dict[str, str]:
    return {
        "DATASET": "synthetic",
        "SYNTHETIC_RATINGS": "20000",
        # One trial (the default parameters) keeps the pipelines' search path exercised at the cost of one fit;
        # tests/ml/test_tuning.py covers the search itself.
        "TUNING_TRIALS": "1",
        "DATA_CACHE_DIR": str(root / "downloads"),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
        "REDIS_PASSWORD": "test-redis-password",
        # Results outlive a whole stream session (tests read results written by the session's first verify);
        # a low rate keeps the budget within Redis's memory, as `up` requires (1,100 B x 100 x 3,600 s: 378 MiB).
        "PREDICTION_TTL_SECONDS": "3600",
        "PREDICTION_BUDGET_RPS": "100",
        "REDIS_MAXMEMORY_MB": "1024",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        **{setting.upper(): f"test-kafka-{role}" for role, setting in kafka_auth.PASSWORD_SETTING.items()},
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "S3_ACCESS_KEY": "test-access",
        "S3_SECRET_KEY": "test-secret-key",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_TRACKING_PASSWORD": "test-mlflow-platform",
        "MLFLOW_ADMIN_PASSWORD": "test-mlflow-admin-pw",
        "SPARK_MASTER": "local[2]",
        # 2g: the feature step's third pass (the serving set) made 1g tight; under the whole suite's load a
        # broadcast join of the ml-100k run failed to grow its hash map (2026-12-07). Users get 4g by default.
        "SPARK_DRIVER_MEMORY": "2g",
        "AIRFLOW_URL": f"http://127.0.0.1:{free_port()}",
        "INFERENCE_METRICS_PORT": str(free_port()),
        "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "LOCAL_DIR": str(root / "local"),
    }


@pytest.fixture(scope="session", name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """`free_port()` for tests that start servers of their own (conftest cannot be imported by name)."""
    return free_port


@pytest.fixture(scope="session")
def servers_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session", autouse=True)
def base_settings(servers_root: Path) -> Iterator[Settings]:
    """Settings with free ports and temp dirs; no server started. Also exported to os.environ.

    Built from an explicit environment (never the developer's `.env`), then exported so that
    `get_settings()` and child processes see the same values.
    """
    explicit = _test_environ(servers_root)
    settings = load_settings(env_file=servers_root / "no.env", environ=explicit)
    saved = dict(os.environ)
    os.environ.update(specs.settings_environ(settings))
    settings_module.get_settings.cache_clear()
    yield settings
    os.environ.clear()
    os.environ.update(saved)
    settings_module.get_settings.cache_clear()


def _serve(launch: specs.Launch, log: Path) -> Iterator[Server]:
    proc = process.start(launch, log, die_with_parent=True)
    try:
        process.wait_ready(launch, proc, log)
        yield Server(launch.name, launch.url, proc.pid, log)
    finally:
        process.stop(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_server(base_settings: Settings, servers_root: Path) -> Iterator[Server]:
    yield from _serve(specs.redis(base_settings, servers_root / "redis"), servers_root / "logs" / "redis.log")


@pytest.fixture(scope="session")
def kafka_broker(base_settings: Settings, servers_root: Path) -> Iterator[str]:
    """The bootstrap servers string of a running broker that holds the platform's topics."""
    launch = specs.kafka(base_settings, servers_root / "kafka")
    for _server in _serve(launch, servers_root / "logs" / "kafka.log"):
        provision.ensure_topics(base_settings)
        provision.ensure_kafka_access(base_settings)
        yield base_settings.kafka_bootstrap_servers


@pytest.fixture(scope="session")
def s3_server(base_settings: Settings, servers_root: Path) -> Iterator[Server]:
    """An S3-API server (MinIO if on PATH, else S3Proxy on disk) holding the data and MLflow-artifact buckets."""
    for server in _serve(specs.s3(base_settings, servers_root / "s3"), servers_root / "logs" / "s3.log"):
        provision.ensure_buckets(base_settings)
        yield server


@pytest.fixture(scope="session")
def mlflow_server(base_settings: Settings, s3_server: Server, servers_root: Path) -> Iterator[Server]:
    """MLflow tracking server (SQLite in tmp, artifacts in the S3 server's bucket). Slow: ask only if needed.

    The artifact-store environment (MLFLOW_S3_ENDPOINT_URL, AWS_*) is exported too, so a client that
    writes artifacts directly also lands in the test bucket.
    """
    os.environ.update(specs.s3_client_environ(base_settings))
    for server in _serve(specs.mlflow(base_settings, servers_root / "mlflow"), servers_root / "logs" / "mlflow.log"):
        mlflow_auth.ensure_platform_user(base_settings)
        yield server


@pytest.fixture(scope="session")
def settings(base_settings: Settings, redis_server: Server, kafka_broker: str, s3_server: Server) -> Settings:
    """Settings whose endpoints point at running throwaway Redis, broker and S3 (MLflow: add `mlflow_server`)."""
    return base_settings


@pytest.fixture(autouse=True)
def _spark_cache_cleared(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the shared in-process Spark session leaves no cached tables behind: the feature step
    caches its frames (its own process exits in production), and a few ml-100k runs' caches fill the
    test JVM's heap until a later test's tiny broadcast fails for memory."""
    yield
    if "spark" in request.fixturenames:
        request.getfixturevalue("spark").catalog.clearCache()
