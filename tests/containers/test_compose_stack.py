"""Docker mode end to end on a real Docker Engine: `./run.sh --docker --yes` from a fresh clone, then the faults.

The engine is Debian's dockerd on a private socket (docker_engine.py); the project's images are built by
`./run.sh` itself from the Dockerfiles on the debootstrap stand-in base, and the third-party images are the
stand-ins of standins/ (third_party.py), tagged with the compose file's names: docker-compose.yml is used as
it is, and nothing is pulled. The phases share one stack, so they are one test, timed phase by phase; the
times and each container's peak memory are printed at the end of the session (docs/benchmarks/pipeline.md
quotes them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_engine import DOCKER_INSTALL_HINT, Docker, PrivateDockerd, missing_engine
from harness import TIMINGS, base_image, our_images
from third_party import build_third_party

from mlops import kafka_auth
from mlops.schemas import PLATFORM, ScoreRequest, encode_request, prediction_key, request_key
from mlops.settings import PROJECT_ROOT, Settings, load_settings
from mlops.topics import REQUESTS

pytestmark = pytest.mark.containers

DATASET = Path(os.environ.get("MLOPS_TEST_ML100K", PROJECT_ROOT.parent / "shared" / "datasets" / "ml-100k"))
PEAKS = TIMINGS.peaks
MEMORY_BUDGET_MIB = 8 * 1024


@pytest.fixture(scope="module")
def engine() -> Iterator[PrivateDockerd]:
    missing = missing_engine()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: {DOCKER_INSTALL_HINT}")
    if not (DATASET / "u.data").is_file():
        pytest.skip(f"no ml-100k at {DATASET} (set MLOPS_TEST_ML100K)")
    dockerd = PrivateDockerd()
    dockerd.start()
    try:
        docker = Docker(dockerd)
        logs = dockerd.root / "logs"
        logs.mkdir(exist_ok=True)
        for base in sorted({base_image(PROJECT_ROOT / dockerfile) for dockerfile in our_images()}):
            TIMINGS.builds[f"docker stand-in {base}"] = docker.standin(base, logs)
        for image, seconds in build_third_party(docker, dockerd.root / "standins", logs).items():
            TIMINGS.builds[f"docker stand-in {image}"] = seconds
        yield dockerd
    finally:
        dockerd.stop()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the commit under test: what a new user has (no .env, no .venv, no images)."""
    target = tmp_path_factory.mktemp("fresh") / "mlops-platform"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(target)], check=True)
    return target


def run_sh(clone: Path, engine: PrivateDockerd, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**engine.env, "DATASET": str(DATASET), "INFERENCE_CONSUMERS": "2"}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(PROJECT_ROOT)))
    started = time.monotonic()
    proc = subprocess.run(["./run.sh", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip
    TIMINGS.runs[f"./run.sh {' '.join(args)}"] = time.monotonic() - started
    (clone / f"run-{'-'.join(a.strip('-') for a in args)}.log").write_text(proc.stdout + proc.stderr)
    return proc


def docker(engine: PrivateDockerd, *args: str) -> str:
    return subprocess.run(["docker", *args], env=engine.env, capture_output=True, text=True, check=True).stdout


def record_peaks(engine: PrivateDockerd) -> None:
    """Each running container's peak memory so far, from its cgroup (v1, cgroupfs: memory.max_usage_in_bytes)."""
    for line in docker(engine, "ps", "--format", "{{.ID}} {{.Names}}").splitlines():
        short, name = line.split()
        full = docker(engine, "inspect", "--format", "{{.Id}}", short).strip()
        path = Path(f"/sys/fs/cgroup/memory/docker/{full}/memory.max_usage_in_bytes")
        if path.exists():
            PEAKS[name] = max(PEAKS.get(name, 0.0), int(path.read_text()) / 2**20)


def settings_of(clone: Path) -> Settings:
    return load_settings(clone / ".env", environ={"DATASET": str(DATASET)})


def send_scores(settings: Settings, count: int, prefix: str) -> list[str]:
    """`count` score requests for real users through the broker (acks=all); their ids."""
    from confluent_kafka import Producer

    from mlops.consumer.kafka import producer_config

    producer = Producer(producer_config(settings, role=kafka_auth.PLATFORM, **{"linger.ms": 5}))
    ids, failed = [], []
    for i in range(count):
        request = ScoreRequest(f"{prefix}-{uuid.uuid4().hex}", 1 + i % 943, (1 + i % 1682,), PLATFORM)
        producer.produce(REQUESTS, encode_request(request), request_key(request.user_id),
                         on_delivery=lambda err, _m: failed.append(str(err)) if err else None)  # fmt: skip
        producer.poll(0)
        ids.append(request.request_id)
    assert producer.flush(120) == 0 and not failed, f"requests not acknowledged: {failed[:3]}"
    return ids


def unanswered(settings: Settings, ids: list[str], timeout: float) -> list[str]:
    """The ids with no stored answer after waiting up to `timeout` seconds for all of them."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + timeout
    missing = list(ids)
    while missing and time.monotonic() < deadline:
        found = client.mget([prediction_key(i) for i in missing])
        missing = [i for i, value in zip(missing, found, strict=True) if value is None]
        time.sleep(1)
    client.close()
    return missing


def test_docker_mode_from_a_fresh_clone_survives_restarts_and_killed_containers(
    engine: PrivateDockerd, clone: Path
) -> None:
    # 1. A new user's first run: images built, stack up, the DAG on ml-100k, verify green.
    first = run_sh(clone, engine, "--docker", "--yes", timeout=5400)
    record_peaks(engine)
    assert first.returncode == 0, f"./run.sh --docker --yes exited {first.returncode}:\n{first.stdout[-4000:]}"
    status = run_sh(clone, engine, "status", "--docker", timeout=120)
    assert status.returncode == 0, status.stdout[-3000:]
    for service in ("kafka", "redis", "minio", "postgres", "mlflow", "airflow-scheduler", "inference", "console"):
        assert f"mlops-{service}-1" in status.stdout, f"status does not list {service}:\n{status.stdout}"
    assert "inference-1" in status.stdout and "(no consumer running)" not in status.stdout
    import requests

    settings = settings_of(clone)
    assert requests.get(f"{settings.console_url}/healthz", timeout=10).status_code == 200

    # 2. down and up with the volumes kept: the champion still serves, requests sent while no consumer ran are
    #    answered once it is back.
    docker(engine, "stop", *[n for n in docker(engine, "ps", "--format", "{{.Names}}").split() if "inference" in n])
    waiting = send_scores(settings, 300, "while-down")
    assert run_sh(clone, engine, "down", "--docker", timeout=600).returncode == 0
    again = run_sh(clone, engine, "up", "--docker", timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:]
    assert unanswered(settings, waiting, timeout=600) == [], "requests sent before down were not answered"

    # 3. One consumer and the broker killed mid-stream: every request is answered (restart: unless-stopped).
    flowing = send_scores(settings, 1000, "before-kill")
    docker(engine, "kill", "mlops-inference-1")
    docker(engine, "kill", "mlops-kafka-1")
    time.sleep(5)
    record_peaks(engine)
    missing = unanswered(settings, flowing, timeout=900)
    assert missing == [], f"{len(missing)} of {len(flowing)} requests lost after the kills"
    after = send_scores(settings, 300, "after-kill")
    assert unanswered(settings, after, timeout=600) == []
    record_peaks(engine)

    # Memory: every container's peak together within a laptop's 8 GiB.
    total = sum(PEAKS.values())
    (clone / "peaks.json").write_text(json.dumps(PEAKS, indent=1))
    assert total <= MEMORY_BUDGET_MIB, f"containers peaked at {total:.0f} MiB together: {PEAKS}"

    # 4. down --purge: containers and volumes gone.
    assert run_sh(clone, engine, "down", "--purge", "--docker", timeout=600).returncode == 0
    assert docker(engine, "ps", "-aq", "--filter", "label=com.docker.compose.project=mlops").strip() == ""
    assert "mlops_" not in docker(engine, "volume", "ls", "--format", "{{.Name}}")
    shutil.rmtree(clone, ignore_errors=True)
