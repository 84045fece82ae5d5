"""Chaos: 20,000 requests while Redis, the broker, the object store and MLflow are restarted one after
another (the session's own servers, stopped and started again from their launch specs on the same ports
and data directories). Every request must be answered, with one result only, equal to the champion's
direct prediction; the figures go to stdout and, as JSON, to the test's tmp_path and $CHAOS_FIGURES when
set, for docs/benchmarks/reliability.md.

Every server keeps its data on disk (Apache Kafka's log dirs, S3Proxy's filesystem backend, Redis's
append-only file, MLflow's SQLite), so each comes back with what it held: nothing is restored by the test.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass

import pytest
import redis
from confluent_kafka import Producer
from test_stream import ConsumerProcess, _port, _requests, topics  # noqa: F401

from mlops import kafka_auth, schemas
from mlops.consumer.client import exchange
from mlops.consumer.kafka import producer_config
from mlops.consumer.verify import compare, expected_results
from mlops.feature_store import RedisFeatureStore
from mlops.services import health, process, provision, specs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 20_000
RATE = 400  # requests/s offered: about 50 s of traffic
FAULT_EVERY_S = 9.0
DOWN_S = 3.0  # how long each server stays down


@dataclass
class Fault:
    service: str
    down_s: float = 0.0  # stop requested -> ready again
    recover_s: float | None = None  # ready again -> a probe request sent then is answered


def _pid_on(port: int) -> int:
    owner = health.port_owner(port)
    assert owner.startswith("pid "), f"nothing found listening on {port}"
    return int(owner.split(",")[0].removeprefix("pid "))


def test_every_request_answered_once_through_restarts_of_every_server(
    settings,
    champion,
    redis_server,
    s3_server,
    mlflow_server,
    topics,  # noqa: F811
    servers_root,
    tmp_path,
):
    from mlops.serving import Ranker

    root = servers_root
    launches = {
        "redis": specs.redis(settings, root / "redis"),
        "mlflow": specs.mlflow(settings, root / "mlflow"),
        "s3": specs.s3(settings, root / "s3"),
        "kafka": specs.kafka(settings, root / "kafka"),
    }
    pids = {"redis": redis_server.pid, "mlflow": mlflow_server.pid, "s3": s3_server.pid,
            "kafka": _pid_on(launches["kafka"].port)}  # fmt: skip
    store = RedisFeatureStore.from_settings(settings)
    reference = Ranker.load(settings, store, alias="champion", compiled=False)  # before anything breaks
    requests = _requests(settings, champion, REQUESTS, seed=11)
    expected = expected_results(reference, store, requests)

    members = [ConsumerProcess(topics, tmp_path / f"consumer-{i}.log", _port()) for i in range(2)]
    faults = [Fault(name) for name in launches]
    sent_at: dict[str, float] = {}
    try:
        for member in members:
            member.wait_healthy(600)
        with exchange(settings, topics) as ex:
            # The load generator outlasts a broker restart: a request is never dropped by its own timeout.
            ex.sender.producer = Producer(
                producer_config(settings, role=kafka_auth.PLATFORM, **{"linger.ms": 0, "message.timeout.ms": 600_000})
            )

            def send() -> None:
                started = time.monotonic()
                for i, request in enumerate(requests):
                    delay = started + i / RATE - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    ex.sender.send(request)
                    sent_at[request.request_id] = time.monotonic()
                ex.sender.flush()

            traffic = threading.Thread(target=send, name="chaos-traffic")
            traffic.start()
            for fault in faults:
                time.sleep(FAULT_EVERY_S)
                _inject(fault, launches[fault.service], pids[fault.service], settings, root, ex)
            traffic.join(300)
            assert not traffic.is_alive(), "the sender did not finish"
            started = time.monotonic()
            missing = ex.results.wait_for([r.request_id for r in requests], 300)
            drained_s = time.monotonic() - started
            received = dict(ex.results.received)
            duplicates, conflicts, dead = ex.results.duplicates, list(ex.results.conflicts), dict(ex.dead.received)
        for member in members:
            assert member.proc.poll() is None, f"a consumer died: {member.log.read_text()[-2000:]}"
    finally:
        for member in members:
            if member.proc.poll() is None:
                member.proc.send_signal(signal.SIGTERM)
        for member in members:
            member.proc.wait(60)

    stored = redis.Redis.from_url(settings.redis_url).mget([schemas.prediction_key(r.request_id) for r in requests])
    mismatched = []
    for request, in_redis in zip(requests, stored, strict=True):
        if request.request_id in missing:
            continue
        published = received[request.request_id][1]
        problem = (
            "Redis and the topic differ"
            if in_redis != published
            else compare(schemas.parse_result(published), expected[request.request_id], request, reference.info)
        )
        if problem:
            mismatched.append((request.request_id, problem))
    figures = {
        "requests_sent": len(sent_at),
        "answered": len(requests) - len(missing),
        "duplicated": duplicates,
        "conflicting": len(conflicts),
        "dead_lettered": len(dead),
        "mismatched": len(mismatched),
        "drain_after_last_send_s": round(drained_s, 1),
        "faults": [
            {"service": f.service, "down_s": round(f.down_s, 1),
             "recover_s": None if f.recover_s is None else round(f.recover_s, 1)}
            for f in faults
        ],
    }  # fmt: skip
    print("chaos figures:", json.dumps(figures))
    for path in (tmp_path / "figures.json", os.environ.get("CHAOS_FIGURES")):
        if path:
            with open(path, "w") as out:
                json.dump(figures, out, indent=2)
    assert len(sent_at) == REQUESTS
    assert not missing, f"{len(missing)} requests never answered"
    assert conflicts == [], "a request was published with two different results"
    assert not mismatched, mismatched[:5]
    assert dead == {}, "a valid request was dead-lettered"
    assert all(f.recover_s is not None for f in faults)


def _inject(fault: Fault, launch: specs.Launch, pid: int, settings, root, ex) -> None:
    """Stop the server, keep it down DOWN_S, start it again from its spec; time its return and recovery."""
    began = time.monotonic()
    process.stop(pid)
    time.sleep(DOWN_S)
    log = root / "logs" / f"{launch.name}.log"
    proc = process.start(launch, log, die_with_parent=True)
    process.wait_ready(launch, proc, log)
    if fault.service == "kafka":
        provision.ensure_topics(settings)
    ready = time.monotonic()
    fault.down_s = ready - began
    # Recovered: a request sent once the server is back has been answered (behind the backlog, if any).
    probe = schemas.TopKRequest(f"probe-{fault.service}-{uuid.uuid4().hex[:6]}", 1, 5)
    ex.sender.send(probe)
    if not ex.results.wait_for([probe.request_id], 120):
        fault.recover_s = time.monotonic() - ready
