"""The third-party images, which cannot be pulled here, checked against their documented interfaces.

Each test pins a finding of the review of docker-compose.yml against the images' own documentation and
source: where the image comes from, what its entrypoint does with the command, which JVM settings a
healthcheck inherits.
"""

from __future__ import annotations

import re
import shlex

import pytest

# Repositories that no longer serve images: a pull fails and compose aborts before anything starts.
WITHDRAWN = {
    "minio/minio": "MinIO left Docker Hub; it publishes images only as quay.io/minio/minio",
    "docker.io/minio/minio": "MinIO left Docker Hub; it publishes images only as quay.io/minio/minio",
}
MINIO_RELEASE = re.compile(r"^quay\.io/minio/minio:RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z$")


def test_no_image_comes_from_a_withdrawn_repository(resolved: dict) -> None:
    for name, svc in resolved["services"].items():
        repository = svc["image"].rpartition(":")[0]
        assert repository not in WITHDRAWN, f"{name}: {svc['image']}: {WITHDRAWN.get(repository)}"


def test_minio_is_a_pinned_release_from_its_own_registry(resolved: dict) -> None:
    minio = resolved["services"]["minio"]
    assert MINIO_RELEASE.match(minio["image"]), f"minio: {minio['image']} is not a pinned quay.io RELEASE tag"
    # Documented interface of that image: root credentials by these variables; `mc` ships in it for the
    # `mc ready` healthcheck.
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} <= set(minio["environment"])
    assert minio["healthcheck"]["test"][:3] == ["CMD", "mc", "ready"]


def redis_entrypoint_drops_root(command: list[str]) -> bool:
    """Whether the redis image's docker-entrypoint.sh steps down from root to the `redis` user for this command.

    The entrypoint (docker-library/redis) chowns the data directory and re-executes itself as `redis` only
    when its first argument is `redis-server` (an option or a `.conf` file gets `redis-server` put in front);
    anything else, such as `sh -c ...`, it executes unchanged as root. A shell command counts when it hands
    over to the entrypoint again with `redis-server` first.
    """
    first = command[0]
    if first == "redis-server" or first.startswith("-") or first.endswith(".conf"):
        return True
    if first in ("sh", "/bin/sh") and len(command) > 2 and command[1] == "-c":
        words = shlex.split(command[2])
        words = words[1:] if words[:1] == ["exec"] else words
        return words[:2] in (["docker-entrypoint.sh", "redis-server"], ["/usr/local/bin/docker-entrypoint.sh",
                                                                          "redis-server"])  # fmt: skip
    return False


@pytest.mark.parametrize(
    ("command", "drops"),
    [
        (["redis-server", "--appendonly", "yes"], True),
        (["--appendonly", "yes"], True),
        (["sh", "-c", 'exec redis-server --requirepass "$REDIS_PASSWORD"'], False),  # the review's finding
        (["sh", "-c", 'exec docker-entrypoint.sh redis-server --requirepass "$REDIS_PASSWORD"'], True),
        (["redis-cli", "ping"], False),
    ],
)
def test_the_entrypoint_rule(command: list[str], drops: bool) -> None:
    assert redis_entrypoint_drops_root(command) is drops


def test_redis_does_not_run_as_root(resolved: dict) -> None:
    redis = resolved["services"]["redis"]
    assert "entrypoint" not in redis, "the image's entrypoint is what drops root: keep it"
    assert redis.get("user") in (None, "redis", "999"), f"redis: user {redis.get('user')}"
    command = [str(part) for part in redis["command"]]
    assert redis.get("user") or redis_entrypoint_drops_root(command), (
        f"redis would run as root: {command} bypasses the entrypoint's step-down to the redis user"
    )
    # The password still reaches redis-server: from the environment, at run time, not written in the file,
    # and as configuration on stdin, not as an argument any process list would show.
    assert re.search(r'requirepass "\$+REDIS_PASSWORD"', command[-1]) and "--requirepass" not in command[-1]
    assert shlex.split(command[-1].split("<<")[0])[-1] == "-", "redis-server reads its configuration from stdin"


def test_no_password_is_on_a_compose_command_line(resolved: dict) -> None:
    """Every password reaches its service through the environment or a file, never the command (`ps` shows it)."""
    for name, service in resolved["services"].items():
        for part in map(str, service.get("command") or []):
            for variable in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "S3_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD"):
                assert f"${variable}" not in part.split("<<")[0], f"{name}: {variable} on the command line"
    mlflow = resolved["services"]["mlflow"]
    assert "postgresql" in str(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"])


def heap_mb(opts: str) -> int:
    match = re.search(r"-Xmx(\d+)([mMgG])", opts)
    assert match, f"no -Xmx in {opts!r}"
    return int(match.group(1)) * (1024 if match.group(2) in "gG" else 1)


def test_kafka_healthcheck_jvm_has_its_own_small_heap(resolved: dict) -> None:
    """kafka-run-class.sh uses KAFKA_HEAP_OPTS when set: a healthcheck exec'd in the broker's container
    inherits the broker's 512 MiB heap unless its command sets its own."""
    kafka = resolved["services"]["kafka"]
    broker = heap_mb(kafka["environment"]["KAFKA_HEAP_OPTS"])
    test = " ".join(kafka["healthcheck"]["test"][1:])
    assert "kafka-broker-api-versions.sh" in test
    own = re.search(r"KAFKA_HEAP_OPTS=(['\"]?)([^'\"]*)\1\s", test)
    assert own, f"kafka healthcheck inherits the broker's heap ({broker} MiB): {test}"
    check = heap_mb(own.group(2))
    assert check <= 128, f"the healthcheck's heap {check} MiB is more than a version probe needs"
    limit_mb = int(kafka["mem_limit"]) // 2**20  # compose v2 resolves limits to bytes
    # Two JVMs' heaps plus their non-heap memory (metaspace, threads, page cache of the log) under the limit.
    assert broker + check <= limit_mb * 0.7, f"heaps {broker}+{check} MiB leave too little of {limit_mb} MiB"


def _megabytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([mMgG])", size).groups()
    return int(number) * (1024 if unit in "gG" else 1)


def test_an_executor_fits_in_the_workers_offer(resolved: dict) -> None:
    """The containers' executors ask no more than spark-worker offers: otherwise no executor ever starts and
    `split` waits for resources until its timeout (issue 28's second defect)."""
    worker = [str(p) for p in resolved["services"]["spark-worker"]["command"]]
    offer = _megabytes(worker[worker.index("--memory") + 1])
    for name in ("airflow-scheduler", "inference"):
        asked = resolved["services"][name]["environment"]["SPARK_EXECUTOR_MEMORY"]
        assert _megabytes(str(asked)) <= offer, (name, asked, offer)


def test_mlflow_runs_no_job_runner_in_its_memory_limit(resolved: dict) -> None:
    assert resolved["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
