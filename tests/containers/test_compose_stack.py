"""Docker mode end to end on a real Docker Engine: `./run.sh --docker --yes` from a fresh clone, then the faults.

The engine is Debian's dockerd on a private socket (docker_engine.py); the project's images are built by
`./run.sh` itself from the Dockerfiles on the debootstrap stand-in base, and the third-party images are the
stand-ins of standins/ (third_party.py), tagged with the compose file's names: docker-compose.yml is used as
it is, and nothing is pulled. The phases share one stack, so they are one test, timed phase by phase; the
times and each container's peak memory (`docker stats`) are printed at the end of the session
(docs/benchmarks/pipeline.md quotes them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_engine import DOCKER_INSTALL_HINT, Docker, PrivateDockerd, missing_engine
from harness import TIMINGS, base_image, our_images
from third_party import build_third_party

from mlops.kafka_auth import PLATFORM as PLATFORM_ROLE
from mlops.schemas import PLATFORM, ScoreRequest, encode_request, prediction_key, request_key
from mlops.settings import PROJECT_ROOT, Settings, env_names, load_settings
from mlops.topics import REQUESTS

pytestmark = [pytest.mark.containers, pytest.mark.integration, pytest.mark.timeout(7200)]

DATASET = Path(os.environ.get("MLOPS_TEST_ML100K", PROJECT_ROOT.parent / "shared" / "datasets" / "ml-100k"))
PEAKS = TIMINGS.peaks  # container name -> peak MiB (docker stats)
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
    # A user's shell: the machine's environment (proxy, CA bundles) without this session's settings (they would
    # override the clone's .env), MLflow, Airflow or AWS variables, or our venv.
    session = set(env_names()) | {"VIRTUAL_ENV", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in session and not k.startswith(("MLFLOW_", "AIRFLOW_"))}
    ours = str(PROJECT_ROOT)
    env["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(ours))
    env.update({name: engine.env[name] for name in ("DOCKER_HOST", "DOCKER_CONFIG")})
    env.update(DATASET=str(DATASET), INFERENCE_CONSUMERS="2")
    started = time.monotonic()
    proc = subprocess.run(["./run.sh", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip
    TIMINGS.runs[f"./run.sh {' '.join(args)}"] = time.monotonic() - started
    # Kept with the engine's logs: the clone is removed when the test passes.
    log = engine.root / "logs" / f"stack-run-{'-'.join(a.strip('-') for a in args)}.log"
    log.write_text(proc.stdout + proc.stderr)
    return proc


def docker(engine: PrivateDockerd, *args: str) -> str:
    return subprocess.run(["docker", *args], env=engine.env, capture_output=True, text=True, check=True).stdout


def mib(text: str) -> float:
    """`docker stats` sizes ("2.065GiB", "461.8MiB", "17kB") in MiB."""
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMG]i?B|kB|B)", text.strip()).groups()
    return float(number) * {"B": 2**-20, "kB": 1e3 / 2**20, "KiB": 2**-10, "KB": 1e3 / 2**20, "MiB": 1.0,
                            "MB": 1e6 / 2**20, "GiB": 1024.0, "GB": 1e9 / 2**20}[unit]  # fmt: skip


class MemorySampler(threading.Thread):
    """`docker stats` every few seconds: each container's peak (memory as Docker counts it, page cache
    excluded) and the peak of all containers together at one sample."""

    def __init__(self, engine: PrivateDockerd, every_s: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.engine, self.every_s, self.together = engine, every_s, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            proc = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}"],
                                  env=self.engine.env, capture_output=True, text=True, check=False)  # fmt: skip
            now = 0.0
            for line in proc.stdout.splitlines():
                name, _, usage = line.partition("\t")
                if name in ("", "--") or "/" not in usage:  # a container starting or gone between two calls
                    continue
                used = mib(usage.split("/")[0])
                PEAKS[name] = max(PEAKS.get(name, 0.0), used)
                now += used
            self.together = max(self.together, now)


def crash(engine: PrivateDockerd, name: str) -> None:
    """SIGKILL to the container's first process, as a crash or the kernel's OOM killer would."""
    os.kill(int(docker(engine, "inspect", "--format", "{{.State.Pid}}", name)), signal.SIGKILL)


def settings_of(clone: Path) -> Settings:
    return load_settings(clone / ".env", environ={"DATASET": str(DATASET)})


def send_scores(settings: Settings, count: int, prefix: str) -> list[str]:
    """`count` score requests for real users through the broker (acks=all); their ids."""
    from confluent_kafka import Producer

    from mlops.consumer.kafka import producer_config

    producer = Producer(producer_config(settings, role=PLATFORM_ROLE, **{"linger.ms": 5}))
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
    sampler = MemorySampler(engine)
    sampler.start()
    # 1. A new user's first run: images built, stack up, the DAG on ml-100k, verify green.
    first = run_sh(clone, engine, "--docker", "--yes", timeout=5400)
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
    started = time.monotonic()
    assert unanswered(settings, waiting, timeout=600) == [], "requests sent before down were not answered"
    TIMINGS.runs["300 requests sent while down: all answered after up"] = time.monotonic() - started

    # 3. One consumer and the broker crash mid-stream (SIGKILL to their processes from the host: `docker kill`
    #    counts as a deliberate stop, which restart policies ignore): Docker restarts them, every request is
    #    answered.
    flowing = send_scores(settings, 1000, "before-kill")
    crash(engine, "mlops-inference-1")
    crash(engine, "mlops-kafka-1")
    started = time.monotonic()
    missing = unanswered(settings, flowing, timeout=900)
    TIMINGS.runs["1,000 requests, consumer and broker crashed: all answered"] = time.monotonic() - started
    assert missing == [], f"{len(missing)} of {len(flowing)} requests lost after the kills"
    after = send_scores(settings, 300, "after-kill")
    assert unanswered(settings, after, timeout=600) == []
    sampler.done.set()
    sampler.join()

    # Memory: all containers together, at their highest sample, within a laptop's 8 GiB.
    TIMINGS.together = sampler.together
    (engine.root / "logs" / "stack-peaks.json").write_text(json.dumps(PEAKS, indent=1))
    assert 0 < sampler.together <= MEMORY_BUDGET_MIB, f"containers used {sampler.together:.0f} MiB together: {PEAKS}"

    # 4. down --purge: containers and volumes gone.
    assert run_sh(clone, engine, "down", "--purge", "--docker", timeout=600).returncode == 0
    assert docker(engine, "ps", "-aq", "--filter", "label=com.docker.compose.project=mlops").strip() == ""
    assert "mlops_" not in docker(engine, "volume", "ls", "--format", "{{.Name}}")
    shutil.rmtree(clone, ignore_errors=True)
