"""Nothing is lost when the servers die: the broker killed -9 in the middle of a stream or stopped with a
backlog, the object store killed and restarted.

The broker here is the test's own Apache Kafka (same launch spec as local mode, its own port and data
dir), so killing it disturbs no other test; the consumer is the real `inference/queue_consumer.py`
process; the object store restarted is the session's, with the champion the stream tests use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from mlops import kafka_auth, schemas
from mlops.consumer.kafka import StreamTopics, ensure_topics, producer_config
from mlops.consumer.verify import make_requests
from mlops.feature_store import RedisFeatureStore
from mlops.schemas import encode_request, request_key
from mlops.services import health, process, provision, specs
from mlops.settings import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENTRY_POINT = PROJECT_ROOT / "inference" / "queue_consumer.py"


class Broker:
    """Local mode's Kafka launch spec on a port and data dir of the test's own."""

    def __init__(self, settings, data: Path, log: Path) -> None:
        self.settings, self.data, self.log = settings, data, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        launch = specs.kafka(self.settings, self.data)
        self.proc = process.start(launch, self.log, die_with_parent=True)
        process.wait_ready(launch, self.proc, self.log)
        provision.ensure_kafka_access(self.settings)  # as `up` does: the roles' credentials and ACLs

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """As `down` stops it: SIGTERM, a clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            process.stop(self.proc.pid, timeout_s=60)
            self.proc.wait(timeout=30)


@pytest.fixture
def broker(settings, tmp_path, free_port):
    own = Broker(
        settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"), tmp_path / "kafka", tmp_path / "kafka.log"
    )
    own.start()
    yield own
    own.stop()


class ConsumerProcess:
    """The platform's consumer entry point, on the test broker and a namespace of the test's own."""

    def __init__(self, broker: Broker, topics: StreamTopics, log: Path, port: int) -> None:
        self.port, self.log = port, log
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.settings.kafka_bootstrap_servers}
        self.proc = subprocess.Popen(
            [sys.executable, str(ENTRY_POINT), "--namespace", topics.requests.split(".", 1)[1],
             "--metrics-port", str(port), "--reload-interval", "5"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def wait_healthy(self, timeout: float = 300) -> None:  # loading the champion compiles its trees: slow under load
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"consumer exited early: {self.log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"consumer not healthy in {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _requests(settings, champion, n: int, tag: str) -> list:
    import random

    store = RedisFeatureStore.from_settings(settings)
    users = store.ids(champion.feature_set, "user")
    movies = store.ids(champion.feature_set, "item")
    return make_requests(users, movies, n, random.Random(11), tag)


class PacedProducer(threading.Thread):
    """Sends the requests at `rate` per second through an idempotent producer that outlives a broker outage
    (librdkafka buffers and retries); `failed` collects any delivery that did not make it."""

    def __init__(self, settings, topic: str, requests: list, rate: float) -> None:
        super().__init__(daemon=True)
        self.topic, self.requests, self.rate = topic, requests, rate
        config = producer_config(settings, role=kafka_auth.PLATFORM,
                                 **{"enable.idempotence": True, "message.timeout.ms": 180_000})  # fmt: skip
        self.producer = Producer(config)
        self.failed: list[str] = []

    def run(self) -> None:
        began = time.monotonic()
        for i, request in enumerate(self.requests):
            if (wait := began + i / self.rate - time.monotonic()) > 0:
                time.sleep(wait)
            self._produce(request)
        self.producer.flush(180)

    def _produce(self, request) -> None:
        def delivered(err, msg) -> None:
            if err is not None:
                self.failed.append(f"{request.request_id}: {err}")

        while True:
            try:
                self.producer.produce(self.topic, encode_request(request), request_key(request.user_id),
                                      on_delivery=delivered)  # fmt: skip
                self.producer.poll(0)
                return
            except BufferError:
                self.producer.poll(0.05)


def _wait_answered(settings, requests: list, timeout: float) -> dict[str, bytes]:
    client = redis.Redis.from_url(settings.redis_url)
    keys = [schemas.prediction_key(r.request_id) for r in requests]
    deadline = time.monotonic() + timeout
    while True:
        values = client.mget(keys)
        missing = sum(v is None for v in values)
        if missing == 0:
            return {r.request_id: v for r, v in zip(requests, values, strict=True)}
        assert time.monotonic() < deadline, f"{missing} of {len(requests)} requests unanswered after {timeout:.0f}s"
        time.sleep(1)


def _assert_answered_exactly_once(settings, requests: list, answers: dict[str, bytes], tag: str) -> None:
    """One result per request, for that request; no result for anything else under this tag."""
    for request in requests:
        result = json.loads(answers[request.request_id])
        assert result["request_id"] == request.request_id and result["user_id"] == request.user_id
    client = redis.Redis.from_url(settings.redis_url)
    assert len(list(client.scan_iter(match=schemas.prediction_key(f"{tag}-*"), count=5000))) == len(requests)


def _topic_values(settings, topic: str) -> list[bytes]:
    """Every record of the topic, from the beginning."""
    consumer = Consumer({**kafka_auth.client_config(settings, kafka_auth.PLATFORM),
                         "group.id": f"check-{uuid.uuid4().hex}", "enable.auto.commit": False})  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        values: list[bytes] = []
        position = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 60
        while any(position[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 1.0):
                if msg.error() is None:
                    values.append(msg.value())
                    position[msg.partition()] = msg.offset() + 1
        return values
    finally:
        consumer.close()


def test_broker_killed_mid_stream_loses_and_duplicates_no_answer(settings, champion, broker, tmp_path, free_port):
    """kill -9 of Kafka while 10,000 requests stream in, then the same launch spec again: each answered once."""
    topics = StreamTopics.namespaced(f"kill{uuid.uuid4().hex[:8]}")
    ensure_topics(broker.settings, topics)
    tag = f"kill-{uuid.uuid4().hex[:8]}"
    requests = _requests(settings, champion, 10_000, tag)
    consumer = ConsumerProcess(broker, topics, tmp_path / "consumer.log", free_port())
    try:
        consumer.wait_healthy()
        producer = PacedProducer(broker.settings, topics.requests, requests, rate=2000)
        producer.start()
        time.sleep(2.0)  # a few thousand sent, some answered, some in flight
        broker.kill()
        time.sleep(1.0)
        broker.start()
        producer.join(240)
        assert not producer.is_alive() and producer.failed == []
        answers = _wait_answered(settings, requests, timeout=180)
    finally:
        consumer.stop()
    _assert_answered_exactly_once(settings, requests, answers, tag)
    # At-least-once on the topic (a batch answered but not committed before the kill is answered again),
    # never two different results for one request.
    published = _topic_values(broker.settings, topics.predictions)
    by_id: dict[str, set[bytes]] = {}
    for value in published:
        by_id.setdefault(json.loads(value)["request_id"], set()).add(value)
    assert set(by_id) == {r.request_id for r in requests}
    assert all(len(v) == 1 for v in by_id.values()), "a request was answered with two different results"
    assert _topic_values(broker.settings, topics.dlq) == []
    print(f"republished after the kill: {sum(Counter(published).values()) - len(by_id)} of {len(requests)}")


def test_requests_left_unconsumed_at_down_are_answered_after_up(settings, champion, broker, tmp_path, free_port):
    """Requests produced while no consumer runs survive a broker stop/start (`down` then `up`)."""
    topics = StreamTopics.namespaced(f"down{uuid.uuid4().hex[:8]}")
    ensure_topics(broker.settings, topics)
    tag = f"down-{uuid.uuid4().hex[:8]}"
    requests = _requests(settings, champion, 2_000, tag)
    producer = PacedProducer(broker.settings, topics.requests, requests, rate=1e9)
    producer.run()
    assert producer.failed == []
    broker.stop()
    broker.start()
    consumer = ConsumerProcess(broker, topics, tmp_path / "consumer.log", free_port())
    try:
        consumer.wait_healthy()
        answers = _wait_answered(settings, requests, timeout=120)
    finally:
        consumer.stop()
    _assert_answered_exactly_once(settings, requests, answers, tag)


def s3_server_port(settings) -> int:
    return health.s3_address(settings)[1]


def test_object_store_restart_keeps_the_champion_and_every_run(settings, champion, s3_server, servers_root, request):
    """kill -9 of the S3 server and the same launch spec again: every object under runs/ and the model's
    artifacts are still there, byte for byte, and the champion loads."""
    from mlops.object_store import ObjectStore
    from mlops.serving import Ranker

    data = ObjectStore.from_settings(settings)
    artifacts = ObjectStore.from_settings(settings, settings.mlflow_artifact_bucket)

    def snapshot() -> dict[str, bytes]:
        runs = {key: data.get_bytes(key) for key in data.list_keys("runs/")}
        return runs | {f"mlflow:{key}": artifacts.get_bytes(key) for key in artifacts.list_keys("")}

    before = snapshot()
    assert any(key.startswith("runs/") for key in before) and any(key.startswith("mlflow:") for key in before)
    # The pid listening now: an earlier test (chaos) may have restarted the session's S3 server.
    owner = health.port_owner(s3_server_port(settings))
    pid = int(owner.split(",")[0].removeprefix("pid ")) if owner.startswith("pid ") else s3_server.pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while process.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    launch = specs.s3(settings, servers_root / "s3")
    log = servers_root / "logs" / "s3-restarted.log"
    proc = process.start(launch, log, die_with_parent=True)
    request.config.add_cleanup(lambda: process.stop(proc.pid))  # the session's later tests keep using it
    process.wait_ready(launch, proc, log)

    assert snapshot() == before
    store = RedisFeatureStore.from_settings(settings)
    assert Ranker.load(settings, store, alias="champion", compiled=False).info.model_version == champion.model_version
