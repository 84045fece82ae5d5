"""The stream against real Redis, broker, S3 and MLflow, with the registered champion model.

Each test runs consumers on a private namespace of the topics (`StreamTopics.namespaced`), so tests
never see each other's messages; the feature set and the champion are the session's (conftest).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from mlops import kafka_auth, schemas
from mlops.consumer import app
from mlops.consumer.client import Sender, TopicListener
from mlops.consumer.kafka import StreamTopics, consumer_config, delete_topics, ensure_topics
from mlops.consumer.processor import BatchProcessor
from mlops.consumer.verify import expected_results, make_requests, verify
from mlops.feature_store import RedisFeatureStore
from mlops.schemas import ScoreRequest
from mlops.settings import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENTRY_POINT = PROJECT_ROOT / "inference" / "queue_consumer.py"


@pytest.fixture
def topics(settings, champion):
    names = StreamTopics.namespaced(f"t{uuid.uuid4().hex[:10]}")
    ensure_topics(settings, names)
    yield names
    delete_topics(settings, names)


class InProcessConsumer:
    """The real service (app.build: real Ranker from the registry, real store) in a thread."""

    def __init__(
        self, settings, topics: StreamTopics, reload_interval: float = 10.0, wrap=None, watch: bool = True
    ) -> None:
        self.service, self.watcher = app.build(settings, 0, topics)
        self.watcher.interval = reload_interval
        assert app.wait_for_model(self.watcher, self.service)
        if wrap is not None:
            self.watcher.holder.ranker = wrap(self.watcher.holder.ranker)
        elif watch:
            self.watcher.start()
        self.thread = threading.Thread(target=self.service.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


class ConsumerProcess:
    """`python inference/queue_consumer.py` as the platform starts it, on the test's namespace."""

    def __init__(self, topics: StreamTopics, log: Path, port: int) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(ENTRY_POINT), "--namespace", topics.requests.split(".", 1)[1],
             "--metrics-port", str(port), "--reload-interval", "2"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip

    def healthz(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_healthy(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"consumer exited early: {self.log.read_text()[-2000:]}"
            try:
                status, detail = self.healthz()
                if status == 200:
                    return detail
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"consumer not healthy in {timeout}s: {self.log.read_text()[-2000:]}")

    @staticmethod
    def settled_counts(members: list[ConsumerProcess], field: str, expected: int, timeout: float = 30) -> list[int]:
        """Each member's /healthz `field` once they add up to `expected` (or at the deadline): a member
        publishes a batch's results, commits its offsets, and only then counts them, so the topic runs ahead."""
        deadline = time.monotonic() + timeout
        while True:
            counts = [member.healthz()[1][field] for member in members]
            if sum(counts) >= expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
            return response.read().decode()


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _requests(settings, champion, n: int, seed: int = 7, topk_share: float = 0.3) -> list:
    import random

    store = RedisFeatureStore.from_settings(settings)
    users = store.ids(champion.feature_set, "user")
    movies = store.ids(champion.feature_set, "item")
    return make_requests(users, movies, n, random.Random(seed), f"req-{uuid.uuid4().hex[:8]}", topk_share=topk_share)


def _assert_redis_matches_topic(settings, requests, listener: TopicListener) -> None:
    stored = redis.Redis.from_url(settings.redis_url).mget([schemas.prediction_key(r.request_id) for r in requests])
    for request, value in zip(requests, stored, strict=True):
        assert value is not None, f"no result in Redis for {request.request_id}"
        assert value == listener.received[request.request_id][1], f"Redis and topic differ for {request.request_id}"
    assert listener.conflicts == [], "a request was published with two different results"


def test_verify_passes_end_to_end_and_results_match_the_champion(settings, champion, topics):
    """verify_streaming's own check: every result present, equal to a direct prediction, DLQ reasons right."""
    consumer = InProcessConsumer(settings, topics)
    try:
        assert verify(settings, 300, 120, seed=3, topics=topics) == 0
    finally:
        consumer.stop()
    assert consumer.service.metrics.fallbacks._value.get() >= 1  # the unknown users were answered by fallback


def test_poison_messages_go_to_the_dlq_and_the_rest_flow(settings, champion, topics):
    """Poison in the middle of one partition (same key): it is dead-lettered, everything around it answered."""
    requests = _requests(settings, champion, 60)
    requests = [ScoreRequest(r.request_id, 1, getattr(r, "movie_ids", (1, 2))) for r in requests]  # one key
    poison = [b"{broken json", json.dumps({"request_id": "p", "user_id": 1, "k": 1000}).encode()]
    results = TopicListener(settings, topics.predictions)
    dead = TopicListener(settings, topics.dlq, key_of=lambda v: schemas.parse_dlq_record(v)["original"])
    results.start()
    dead.start()
    sender = Sender(settings, topics.requests)
    for request in requests[:30]:
        sender.send(request)
    for raw in poison:
        sender.send_raw(raw, b"1")
    for request in requests[30:]:
        sender.send(request)
    sender.flush()
    consumer = InProcessConsumer(settings, topics)
    try:
        assert results.wait_for([r.request_id for r in requests], 60) == set()
        assert dead.wait_for(poison, 30) == set()
    finally:
        consumer.stop()
        results.close()
        dead.close()
    records = {raw: schemas.parse_dlq_record(dead.received[raw][1]) for raw in poison}
    assert records[poison[0]]["reason"] == schemas.NOT_JSON
    assert records[poison[1]]["reason"] == schemas.K_OUT_OF_RANGE
    for raw, record in records.items():
        assert record["source_topic"] == topics.requests
        assert (record["source_partition"], record["source_offset"]) == sender.placed[raw]
    _assert_redis_matches_topic(settings, requests, results)


def test_redelivery_after_a_crash_republishes_the_stored_result(settings, champion, topics):
    """A first delivery wrote its results and crashed before committing: the redelivery must publish
    exactly what was stored (same bytes, same created_at), never a second, different result."""
    from mlops.serving import Ranker

    requests = _requests(settings, champion, 80)
    sender = Sender(settings, topics.requests)
    for request in requests:
        sender.send(request)
    sender.flush()

    # First delivery: consume in the group, predict and store, then die without committing.
    store = RedisFeatureStore.from_settings(settings)
    ranker = Ranker.load(settings, store)
    processor = BatchProcessor(store, redis.Redis.from_url(settings.redis_url), settings.prediction_ttl_seconds)
    crashed = Consumer(consumer_config(settings, topics.group, role=kafka_auth.INFERENCE))
    crashed.subscribe([topics.requests])
    seen: list = []
    deadline = time.monotonic() + 60
    while len(seen) < len(requests) and time.monotonic() < deadline:
        seen += [m for m in crashed.consume(500, 1.0) if m.error() is None]
    assert len(seen) == len(requests)
    first = processor.answer([schemas.parse_request(m.value()) for m in seen], ranker)
    assert not any(a.redelivered for a in first)
    crashed.close()  # leaves the group without a commit: the messages will be delivered again
    stored_before = {json.loads(a.payload)["request_id"]: a.payload for a in first}

    time.sleep(0.05)  # any new result would carry a later created_at
    results = TopicListener(settings, topics.predictions)
    results.start()
    consumer = InProcessConsumer(settings, topics)
    try:
        assert results.wait_for(stored_before, 60) == set()
    finally:
        consumer.stop()
        results.close()
    for request_id, payload in stored_before.items():
        assert results.received[request_id][1] == payload
    assert consumer.service.metrics.redelivered._value.get() == len(requests)
    _assert_redis_matches_topic(settings, requests, results)


def test_kill_9_mid_stream_then_restart_answers_every_request(settings, champion, topics, tmp_path):
    requests = _requests(settings, champion, 3000)
    results = TopicListener(settings, topics.predictions)
    results.start()
    port = _port()
    first = ConsumerProcess(topics, tmp_path / "consumer-1.log", port)
    try:
        first.wait_healthy()
        sender = Sender(settings, topics.requests)
        for request in requests:
            sender.send(request)
        sender.flush()
        deadline = time.monotonic() + 60
        while len(results.received) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(results.received) >= 300
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        answered_before_kill = len(results.received)
        assert answered_before_kill < len(requests), "the consumer finished before it could be killed"

        second = ConsumerProcess(topics, tmp_path / "consumer-2.log", port)
        try:
            second.wait_healthy()
            assert results.wait_for([r.request_id for r in requests], 120) == set()
            metrics = second.metrics()
            assert 'inference_requests_total{kind="p_like",type="score",variant="champion"}' in metrics
            assert "inference_end_to_end_seconds_bucket" in metrics
            assert "inference_model_info{" in metrics
        finally:
            second.proc.send_signal(signal.SIGTERM)
            assert second.proc.wait(30) == 0
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
        results.close()
    _assert_redis_matches_topic(settings, requests, results)


def test_sigterm_finishes_the_batch_commits_and_exits_0(settings, champion, topics, tmp_path):
    requests = _requests(settings, champion, 3000, topk_share=0.0)
    results = TopicListener(settings, topics.predictions)
    results.start()
    proc = ConsumerProcess(topics, tmp_path / "consumer.log", _port())
    try:
        detail = proc.wait_healthy()
        assert detail["model_version"] == str(champion.model_version)
        sender = Sender(settings, topics.requests)
        placed: dict[str, tuple[int, int]] = {}
        for request in requests:
            sender.send(request)
        sender.flush()
        while len(results.received) < 200:
            time.sleep(0.01)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
        time.sleep(0.5)
        results.close()

    # Whatever the group committed was answered (results written before the commit), and nothing more
    # than what was answered was committed.
    reader = Consumer(consumer_config(settings, topics.group, role=kafka_auth.INFERENCE))
    parts = reader.list_topics(topics.requests, timeout=10).topics[topics.requests].partitions
    committed = reader.committed([TopicPartition(topics.requests, p) for p in parts], timeout=10)
    by_partition = {tp.partition: tp.offset for tp in committed}
    assert sum(max(0, o) for o in by_partition.values()) >= 1
    probe = Consumer(consumer_config(settings, f"inference-probe-{uuid.uuid4().hex}", role=kafka_auth.PLATFORM))
    probe.assign([TopicPartition(topics.requests, p, 0) for p in parts])
    count = 0
    deadline = time.monotonic() + 30
    while count < len(requests) and time.monotonic() < deadline:
        for message in probe.consume(1000, 0.5):
            if message.error() is None:
                count += 1
                placed[json.loads(message.value())["request_id"]] = (message.partition(), message.offset())
    probe.close()
    reader.close()
    committed_ids = [rid for rid, (p, o) in placed.items() if o < by_partition.get(p, -1)]
    assert committed_ids, "SIGTERM exited without committing anything"
    stored = redis.Redis.from_url(settings.redis_url).mget([schemas.prediction_key(r) for r in committed_ids])
    assert all(v is not None for v in stored), "a committed request has no result"
    assert len(committed_ids) == len(results.received), "the last batch was answered but not committed (or the reverse)"


def test_champion_swap_mid_stream_fails_no_request(settings, champion, topics):
    """Move `champion` to a new version while requests flow: every request is answered, by the old
    version before the swap and the new one after, and each result names its version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    old = client.get_model_version(settings.model_name, str(champion.model_version))
    requests = _requests(settings, champion, 2400)
    results = TopicListener(settings, topics.predictions)
    results.start()
    consumer = InProcessConsumer(settings, topics, reload_interval=0.3)
    new_version = None
    try:
        sender = Sender(settings, topics.requests)
        for i, request in enumerate(requests):
            sender.send(request)
            if i == 800:
                sender.flush()
                model_id = old.model_id or old.source.removeprefix("models:/")  # MLflow 3 logged-model id
                new_version = client.create_model_version(
                    settings.model_name, old.source, old.run_id, tags=old.tags, model_id=model_id
                ).version
                client.set_registered_model_alias(settings.model_name, "champion", new_version)
            time.sleep(0.004)
        sender.flush()
        assert results.wait_for([r.request_id for r in requests], 120) == set()
        # Read before the alias is set back below: the watcher (0.3 s) may load the old version again
        # while the consumer stops, and that third load is the clean-up's, not the test's.
        reloads = consumer.service.metrics.reloads._value.get()
    finally:
        client.set_registered_model_alias(settings.model_name, "champion", str(champion.model_version))
        consumer.stop()
        results.close()
    versions = [json.loads(results.received[r.request_id][1])["model_version"] for r in requests]
    assert set(versions) == {str(champion.model_version), str(new_version)}
    assert versions[0] == str(champion.model_version) and versions[-1] == str(new_version)
    assert reloads == 2  # the first load, then the swap
    _assert_redis_matches_topic(settings, requests, results)
    # The new version is the same artifact, so every result equals a direct prediction of the serving model.
    store = RedisFeatureStore.from_settings(settings)
    expected = expected_results(consumer.watcher.holder.ranker, store, requests[:50])
    for request in requests[:50]:
        got = json.loads(results.received[request.request_id][1])
        if "scores" in got:
            assert got["scores"] == pytest.approx(expected[request.request_id]["scores"], abs=1e-9)


def _start_redis(port: int, password: str, data_dir: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
         "--appendonly", "yes", "--save", "", "--dir", str(data_dir), *extra],
        stdout=(data_dir / "redis.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis(port=port, password=password)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("private redis-server did not start")


def test_redis_outage_mid_stream_loses_and_skips_nothing(settings, champion, topics, tmp_path):
    """A private Redis (a copy of the feature set) is shut down mid-stream and brought back: the consumer
    backs off and retries the batch, and every request is answered exactly once, in Redis and on the topic."""
    port, password = _port(), "outage-test"
    proc = _start_redis(port, password, tmp_path)
    private = settings.replace(redis_port=port, redis_password=password)
    source, target = redis.Redis.from_url(settings.redis_url), redis.Redis.from_url(private.redis_url)
    for key in source.scan_iter("fs:*", count=1000):
        target.restore(key, 0, source.dump(key), replace=True)
    requests = _requests(settings, champion, 2000)
    results = TopicListener(settings, topics.predictions)
    results.start()
    consumer = InProcessConsumer(private, topics)
    sender = Sender(settings, topics.requests)

    def send_steadily() -> None:  # about 4 s of traffic at 500 requests/s, spanning the outage
        for request in requests:
            sender.send(request)
            time.sleep(0.002)
        sender.flush()

    traffic = threading.Thread(target=send_steadily)
    try:
        traffic.start()
        while len(results.received) < 200:
            time.sleep(0.01)
        target.shutdown(save=True)  # AOF on disk: the restarted server has every result written so far
        proc.wait(10)
        time.sleep(1.0)
        answered_while_down = len(results.received)
        time.sleep(1.0)
        assert len(results.received) == answered_while_down, "answers kept coming with Redis down"
        assert consumer.service.health()[0] is False
        assert "redis unavailable" in consumer.service.health()[1]["problem"]
        proc = _start_redis(port, password, tmp_path)
        traffic.join(60)
        assert results.wait_for([r.request_id for r in requests], 120) == set()
    finally:
        consumer.stop()
        results.close()
        proc.terminate()
    assert consumer.service.metrics.retries.labels(reason="redis_unavailable")._value.get() > 0
    _assert_redis_matches_topic(private, requests, results)


def test_two_processes_share_the_partitions(settings, champion, topics, tmp_path):
    """Two members of one group split the partitions: both answer, nothing is answered twice differently."""
    requests = _requests(settings, champion, 2000)
    results = TopicListener(settings, topics.predictions)
    results.start()
    members = [ConsumerProcess(topics, tmp_path / f"consumer-{i}.log", _port()) for i in range(2)]
    try:
        for member in members:
            member.wait_healthy()
        time.sleep(8)  # both joined: the group rebalanced over the 3 partitions
        sender = Sender(settings, topics.requests)
        for request in requests:
            sender.send(request)
        sender.flush()
        assert results.wait_for([r.request_id for r in requests], 120) == set()
        answered = ConsumerProcess.settled_counts(members, "answered", len(requests))
    finally:
        for member in members:
            member.proc.send_signal(signal.SIGTERM)
        codes = [member.proc.wait(30) for member in members]
        results.close()
    assert codes == [0, 0]
    assert all(n > 0 for n in answered), f"one member did nothing: {answered}"
    assert sum(answered) >= len(requests)
    _assert_redis_matches_topic(settings, requests, results)


POISON_MOVIE = 999_999_999


class FailsOnOneMovie:
    """Fault injection around the real champion: any call that includes POISON_MOVIE raises."""

    def __init__(self, ranker) -> None:
        self.ranker, self.info, self.live, self.users = ranker, ranker.info, ranker.live, ranker.users

    def score_with_flags(self, users, movie_ids, observed=None):
        if any(POISON_MOVIE in ids for ids in movie_ids):
            raise ValueError("the model cannot score this movie")
        return self.ranker.score_with_flags(users, movie_ids, observed)

    def recommend_with_flags(self, users, ks):
        return self.ranker.recommend_with_flags(users, ks)


def test_revoked_kafka_credentials_halt_the_consumer_with_the_reason_and_skip_nothing(settings, champion, topics):
    """The consumer's SCRAM credentials deleted on the broker: within the re-authentication interval its sign-in
    is refused, `/healthz` says so, and it neither crashes nor loops nor answers or commits anything; once `up`
    provisions the credentials again, every request sent meanwhile is answered."""
    from confluent_kafka.admin import AdminClient, ScramMechanism, UserScramCredentialDeletion

    from mlops.services import provision, specs

    admin = AdminClient(kafka_auth.client_config(settings, kafka_auth.ADMIN))
    consumer = InProcessConsumer(settings, topics, watch=False)
    results = TopicListener(settings, topics.predictions)
    results.start()
    sender = Sender(settings, topics.requests)
    try:
        before = _requests(settings, champion, 20, seed=21)
        for request in before:
            sender.send(request)
        sender.flush()
        assert not results.wait_for([r.request_id for r in before], 120)
        deletion = UserScramCredentialDeletion(kafka_auth.INFERENCE, ScramMechanism.SCRAM_SHA_512)
        admin.alter_user_scram_credentials([deletion])[kafka_auth.INFERENCE].result(timeout=15)
        deadline = time.monotonic() + specs.KAFKA_REAUTH_MS / 1000 + 60
        while "kafka refuses this consumer" not in (consumer.service.health()[1]["problem"] or ""):
            assert time.monotonic() < deadline, f"no refusal reported: {consumer.service.health()}"
            time.sleep(0.5)
        healthy, detail = consumer.service.health()
        assert not healthy and "authentication" in detail["problem"].lower(), detail
        during = _requests(settings, champion, 30, seed=22)
        for request in during:
            sender.send(request)
        sender.flush()
        time.sleep(5)
        assert not [r for r in during if r.request_id in results.received]  # nothing answered while refused
        assert consumer.thread.is_alive()  # halted, not crashed
        provision.ensure_kafka_access(settings)
        assert not results.wait_for([r.request_id for r in during], 240)  # nothing skipped
        deadline = time.monotonic() + 60
        while not consumer.service.health()[0]:
            assert time.monotonic() < deadline, f"still unhealthy: {consumer.service.health()}"
            time.sleep(0.5)
    finally:
        provision.ensure_kafka_access(settings)  # the session's other tests need the role
        results.close()
        consumer.stop()


def test_a_request_the_model_fails_on_is_dead_lettered_alone(settings, champion, topics):
    """A valid request that makes the model raise must not block its partition or fail its batch."""
    requests = _requests(settings, champion, 200)
    bad = ScoreRequest(f"bad-{uuid.uuid4().hex[:6]}", requests[0].user_id, (1, POISON_MOVIE))
    results = TopicListener(settings, topics.predictions)
    dead = TopicListener(settings, topics.dlq, key_of=lambda v: schemas.parse_dlq_record(v)["original"])
    results.start()
    dead.start()
    sender = Sender(settings, topics.requests)
    for request in [*requests[:100], bad, *requests[100:]]:
        sender.send(request)
    sender.flush()
    consumer = InProcessConsumer(settings, topics, wrap=FailsOnOneMovie)
    try:
        assert results.wait_for([r.request_id for r in requests], 60) == set()
        assert dead.wait_for([schemas.encode_request(bad)], 30) == set()
    finally:
        consumer.stop()
        results.close()
        dead.close()
    record = schemas.parse_dlq_record(dead.received[schemas.encode_request(bad)][1])
    assert record["reason"] == schemas.PROCESSING_ERROR
    assert "cannot score this movie" in record["detail"]
    assert bad.request_id not in results.received
    _assert_redis_matches_topic(settings, requests, results)
