"""Hardening against the real broker, Redis and MLflow: hostile messages, permanent Redis errors, a
reused request id, a champion that cannot be loaded, and where the health server listens.

Consumers run on a private namespace of the topics (the `topics` fixture of test_stream.py).
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest
import redis
from test_stream import ConsumerProcess, InProcessConsumer, _port, _requests, _start_redis, topics  # noqa: F401

from mlops import kafka_auth, schemas
from mlops.consumer.client import exchange
from mlops.consumer.metrics import ConsumerMetrics, serve
from mlops.schemas import ScoreRequest, TopKRequest
from mlops.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def hostile_corpus(tag: str) -> list[tuple[bytes | None, str]]:
    """(message value, expected DLQ reason); each unique to this run, so its dead letter can be found."""

    def doc(**fields) -> bytes:
        return json.dumps({"request_id": f"{tag}-{uuid.uuid4().hex[:6]}", **fields}).encode()

    return [
        (b"[" * 1_100 + tag.encode(), schemas.TOO_DEEP),  # used to kill the consumer (RecursionError)
        (b"[" * 60_000 + tag.encode(), schemas.TOO_DEEP),
        (b'{"x": ' * 50 + tag.encode(), schemas.NOT_JSON),
        (doc(user_id=1, k=1, extra=[[[[[[[[[tag]]]]]]]]]), schemas.TOO_DEEP),
        (b"\xff\xfe" + tag.encode(), schemas.NOT_JSON),
        (b'{"request_id": "' + tag.encode() + b'\xc3\x28", "user_id": 1, "k": 1}', schemas.NOT_JSON),
        (doc(user_id=None, k=1), schemas.WRONG_TYPE),
        (doc(user_id=1, k=None), schemas.WRONG_TYPE),
        (doc(user_id=1, movie_ids=[1, None]), schemas.WRONG_TYPE),
        (doc(user_id=True, k=1), schemas.WRONG_TYPE),
        (doc(user_id=1, k=False), schemas.WRONG_TYPE),
        (doc(user_id=1.0, k=1), schemas.WRONG_TYPE),
        (doc(user_id=1, movie_ids=[2.5]), schemas.WRONG_TYPE),
        (doc(user_id=2**64, k=1), schemas.ID_OUT_OF_RANGE),
        (doc(user_id=1, movie_ids=[10**40]), schemas.ID_OUT_OF_RANGE),
        (doc(user_id=1, k=2**70), schemas.K_OUT_OF_RANGE),
        (b'{"request_id": "' + tag.encode() + b'-big", "user_id": ' + b"7" * 5000 + b', "k": 1}', schemas.NOT_JSON),
        (b'{"request_id": "' + tag.encode() + b'-nan", "user_id": NaN, "k": 1}', schemas.WRONG_TYPE),
        (json.dumps({"request_id": "\ud800" + tag, "user_id": 1, "k": 1}).encode(), schemas.BAD_REQUEST_ID),
        (json.dumps([tag]).encode(), schemas.NOT_OBJECT),
    ]


def test_hostile_corpus_then_ordinary_traffic(settings, champion, topics, tmp_path):  # noqa: F811
    """Two real consumer processes take a hostile corpus and then ordinary traffic: both stay alive and
    healthy, every hostile message is in the DLQ with its reason, every ordinary request is answered,
    and a request id reused by another user is a conflict, never the first user's result."""
    tag = f"hostile-{uuid.uuid4().hex[:8]}"
    corpus = hostile_corpus(tag)
    ordinary = _requests(settings, champion, 600)
    first = ordinary[0]
    stolen = ScoreRequest(first.request_id, first.user_id + 1, (1, 2, 3))  # someone else's id, another user
    members = [ConsumerProcess(topics, tmp_path / f"consumer-{i}.log", _port()) for i in range(2)]
    try:
        for member in members:
            member.wait_healthy(600)  # the first load of a version compiles its trees: slow on a busy machine
        with exchange(settings, topics) as ex:
            ex.sender.send(first)
            ex.sender.flush()
            assert ex.results.wait_for([first.request_id], 60) == set()
            for raw, _ in corpus:
                for key in (b"1", b"2", b"3"):  # on every partition, whoever owns it
                    ex.sender.send_raw(raw, key)
            ex.sender.send_raw(None, b"4")  # a tombstone
            ex.sender.send_raw(schemas.encode_request(stolen), schemas.request_key(stolen.user_id))
            for request in ordinary[1:]:
                ex.sender.send(request)
            ex.sender.flush()
            assert ex.results.wait_for([r.request_id for r in ordinary], 120) == set()
            hostile = [raw or b"" for raw, _ in corpus] + [b"", schemas.encode_request(stolen)]
            assert ex.dead.wait_for(hostile, 60) == set()
            time.sleep(1)  # anything more that would arrive (it must not)
        for member in members:
            assert member.proc.poll() is None, "a consumer died"
            status, detail = member.healthz()
            assert status == 200, detail
        for raw, reason in corpus:
            record = schemas.parse_dlq_record(ex.dead.received[raw][1])
            assert record["reason"] == reason, (raw[:80], record["detail"])
            assert record["source_topic"] == topics.requests
        assert schemas.parse_dlq_record(ex.dead.received[b""][1])["reason"] == schemas.NOT_JSON
        conflict = schemas.parse_dlq_record(ex.dead.received[schemas.encode_request(stolen)][1])
        assert conflict["reason"] == schemas.REQUEST_ID_CONFLICT
        # The first user's result is what Redis holds and the only result published under that id.
        stored = redis.Redis.from_url(settings.redis_url).get(schemas.prediction_key(first.request_id))
        assert json.loads(stored)["user_id"] == first.user_id
        assert ex.results.conflicts == []
        assert json.loads(ex.results.received[first.request_id][1])["user_id"] == first.user_id
        dead_lettered = ConsumerProcess.settled_counts(members, "dead_lettered", 3 * len(corpus) + 2)
        assert sum(dead_lettered) == 3 * len(corpus) + 2
    finally:
        for member in members:
            member.proc.send_signal(signal.SIGTERM)
        assert [member.proc.wait(30) for member in members] == [0, 0]


def _private_redis(settings: Settings, tmp_path, *extra: str) -> tuple[Settings, object, int, str]:
    """A private Redis holding a copy of the session's feature set (so it can be broken at will)."""
    port, password = _port(), "private-test"
    proc = _start_redis(port, password, tmp_path, *extra)
    private = settings.replace(redis_port=port, redis_password=password)
    source, target = redis.Redis.from_url(settings.redis_url), redis.Redis.from_url(private.redis_url)
    for key in source.scan_iter("fs:*", count=1000):
        target.restore(key, 0, source.dump(key), replace=True)
    return private, proc, port, password


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _halts_then_resumes(settings, champion, topics, private, break_it, fix_it, words):  # noqa: F811
    """Break Redis while requests flow: consumption stops uncommitted (no answer, no dead letter, health
    503 with the reason, `inference_halted` 1); fix it: every request is answered, none dead-lettered."""
    requests = _requests(settings, champion, 300)
    consumer = InProcessConsumer(private, topics)
    consumer.service.permanent_retry_s = 1.0
    try:
        with exchange(settings, topics) as ex:
            for request in requests[:50]:
                ex.sender.send(request)
            ex.sender.flush()
            assert ex.results.wait_for([r.request_id for r in requests[:50]], 60) == set()
            break_it()
            for request in requests[50:]:
                ex.sender.send(request)
            ex.sender.flush()
            _wait(lambda: consumer.service.halted is not None, 30, "the consumer to stop")
            answered = len(ex.results.received)
            healthy, detail = consumer.service.health()
            assert not healthy and detail["halted"]
            assert "stopped on a permanent redis error" in detail["problem"] and words in detail["problem"], detail
            assert consumer.service.metrics.halted._value.get() == 1
            time.sleep(2.5)  # two more attempts, still refused
            assert len(ex.results.received) == answered and ex.dead.received == {}
            fix_it()
            assert ex.results.wait_for([r.request_id for r in requests], 60) == set()
            assert ex.dead.received == {}, "a request was dead-lettered because of Redis"
            assert consumer.service.health()[0] and consumer.service.metrics.halted._value.get() == 0
    finally:
        consumer.stop()
    errors = consumer.service.metrics.retries.labels(reason="redis_permanent")._value.get()
    assert errors >= 2


def test_redis_out_of_memory_stops_consumption_instead_of_draining(settings, champion, topics, tmp_path):  # noqa: F811
    private, proc, _, _ = _private_redis(settings, tmp_path)
    admin = redis.Redis.from_url(private.redis_url)
    try:
        _halts_then_resumes(
            settings, champion, topics, private,
            break_it=lambda: admin.config_set("maxmemory", 1) and admin.config_set("maxmemory-policy", "noeviction"),
            fix_it=lambda: admin.config_set("maxmemory", 0), words="OutOfMemoryError",
        )  # fmt: skip
    finally:
        proc.terminate()


def test_a_wrong_redis_password_stops_consumption(settings, champion, topics, tmp_path):  # noqa: F811
    private, proc, port, password = _private_redis(settings, tmp_path)
    admin = redis.Redis(port=port, password=password)

    def break_it() -> None:
        admin.config_set("requirepass", "rotated")
        redis.Redis(port=port, password="rotated").client_kill_filter(_type="normal", skipme=False)

    def fix_it() -> None:
        redis.Redis(port=port, password="rotated").config_set("requirepass", password)

    try:
        _halts_then_resumes(settings, champion, topics, private, break_it, fix_it, words="AuthenticationError")
    finally:
        proc.terminate()


def test_a_redis_without_the_needed_command_stops_consumption(settings, champion, topics, tmp_path):  # noqa: F811
    """What an incompatible Redis looks like to the consumer: the command it needs is unknown."""
    private, proc, _, _ = _private_redis(
        settings, tmp_path, "--rename-command", "EVALSHA", "hidden-evalsha", "--rename-command", "EVAL", "hidden-eval"
    )
    requests = _requests(settings, champion, 20)
    consumer = InProcessConsumer(private, topics)
    consumer.service.permanent_retry_s = 1.0
    try:
        with exchange(settings, topics) as ex:
            for request in requests:
                ex.sender.send(request)
            ex.sender.flush()
            _wait(lambda: consumer.service.halted is not None, 30, "the consumer to stop")
            time.sleep(1.5)
            assert ex.results.received == {} and ex.dead.received == {}
        healthy, detail = consumer.service.health()
        assert not healthy and "unknown command" in detail["problem"]
    finally:
        consumer.stop()
        proc.terminate()


def test_health_reports_an_unloadable_champion_and_recovers_when_it_is_replaced(
    settings,
    champion,
    topics,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """A consumer whose champion cannot be loaded keeps retrying with backoff, says why on /healthz, and
    serves as soon as the alias points at a loadable version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    real = client.get_model_version(settings.model_name, str(champion.model_version))
    name = f"unloadable-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    broken = client.create_model_version(name, f"runs:/{real.run_id}/no-such-model", real.run_id, tags=real.tags)
    client.set_registered_model_alias(name, "champion", broken.version)
    monkeypatch.setenv("MODEL_NAME", name)
    proc = ConsumerProcess(topics, tmp_path / "consumer.log", _port())
    try:

        def says_why() -> bool:
            try:
                status, detail = proc.healthz()
            except OSError:
                return False
            return status == 503 and "cannot load the `champion` model" in (detail["problem"] or "")

        _wait(says_why, 300, "/healthz to report the unloadable champion")
        assert "Traceback" not in json.dumps(proc.healthz()[1])
        model_id = real.model_id or real.source.removeprefix("models:/")
        good = client.create_model_version(name, real.source, real.run_id, tags=real.tags, model_id=model_id)
        client.set_registered_model_alias(name, "champion", good.version)
        detail = proc.wait_healthy(600)
        assert detail["model_version"] == str(good.version)
        request = TopKRequest(f"after-{uuid.uuid4().hex[:6]}", 1, 3)
        with exchange(settings, topics) as ex:
            ex.sender.send(request)
            ex.sender.flush()
            assert ex.results.wait_for([request.request_id], 60) == set()
    finally:
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(30)


def test_metrics_and_health_bind_loopback_by_default(base_settings):
    assert base_settings.inference_metrics_host == "127.0.0.1"
    server = serve(0, ConsumerMetrics(), lambda: (True, {}))
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()


def _sized_records(tag: str, valid: bytes) -> list[tuple[bytes, bytes, list[tuple[str, bytes]], str | None]]:
    """(key, value, headers, expected DLQ reason or None for answered): key, value and headers each up to the
    broker's 1 MB limit, together just under it. A dead letter of any of them must fit under the limit too."""
    junk = (tag + "-").encode()

    def pad(n: int, head: bytes = junk) -> bytes:
        return (head * (n // len(head) + 1))[:n]

    return [
        (pad(990_000), b"not json " + junk, [], schemas.NOT_JSON),  # the record that used to halt the stream
        (pad(480_000), pad(480_000, b"[" + junk), [], schemas.OVERSIZED),
        (b"k", pad(990_000, b"x" + junk), [], schemas.OVERSIZED),
        (pad(300_000), b"\xff" + junk, [("h1", pad(300_000)), ("h2", pad(300_000))], schemas.NOT_JSON),
        (pad(990_000), valid, [("h", b"x")], None),  # a valid request under a huge key is answered
        *_random_sized(tag, 12),
    ]


def _random_sized(tag: str, n: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]], str]]:
    """Fuzz: `n` records of random junk whose key, value and headers share a random split of up to 990,000
    bytes (seeded by the tag, so a failure names a reproducible case)."""
    import random

    rng = random.Random(tag)
    out = []
    for i in range(n):
        total = rng.randrange(1_000, 990_000)
        cuts = sorted(rng.randrange(total) for _ in range(2))
        key, value, header = cuts[0], max(cuts[1] - cuts[0], 16), total - cuts[1]
        head = f"\x00{tag}-{i}-".encode()  # junk: never JSON, unique per record
        body = head + rng.randbytes(max(value - len(head), 0))
        reason = schemas.OVERSIZED if len(body) > schemas.MAX_MESSAGE_BYTES else schemas.NOT_JSON
        out.append((rng.randbytes(key), body, [("fuzz", rng.randbytes(header))] if header else [], reason))
    return out


def test_records_of_every_size_are_answered_or_dead_lettered_and_the_stream_goes_on(
    settings,
    champion,
    topics,  # noqa: F811
):
    """Issue 27: any record the broker accepts (key, value and headers up to its limit) is answered or
    dead-lettered, in the request and the feedback paths, and ordinary traffic behind them is answered."""
    import hashlib

    from confluent_kafka import Producer

    from mlops.consumer.client import TopicListener
    from mlops.consumer.kafka import producer_config
    from mlops.live_ratings import LiveRatings

    tag = f"sized-{uuid.uuid4().hex[:8]}"
    valid_request = _requests(settings, champion, 1)[0]
    records = _sized_records(tag, schemas.encode_request(valid_request))
    feedback_records = _sized_records(tag + "fb", b'{"request_id": null}')[:4] + _random_sized(tag + "fb", 6)
    ordinary = _requests(settings, champion, 200)
    digest = lambda raw: json.loads(raw)["original_sha256"]  # noqa: E731  (the DLQ keeps a digest of any size)
    consumer = InProcessConsumer(settings, topics, watch=False)
    producer = Producer(producer_config(settings, role=kafka_auth.PLATFORM, **{"message.max.bytes": 1_000_000}))
    feedback_dead = TopicListener(settings, topics.feedback_dlq, key_of=digest)
    feedback_dead.start()
    try:
        with exchange(settings, topics) as ex:
            dead = TopicListener(settings, topics.dlq, key_of=digest)
            dead.start()
            for key, value, headers, _ in records:
                producer.produce(topics.requests, value, key, headers=headers)
            for key, value, headers, _ in feedback_records:
                producer.produce(topics.feedback, value, key, headers=headers)
            assert producer.flush(60) == 0
            for request in ordinary:
                ex.sender.send(request)
            ex.sender.flush()
            assert ex.results.wait_for([r.request_id for r in [valid_request, *ordinary]], 120) == set()
            hostile = [hashlib.sha256(v).hexdigest() for _, v, _, reason in records if reason]
            assert dead.wait_for(hostile, 60) == set()
            dead.close()
        fed = [hashlib.sha256(v).hexdigest() for _, v, _, _ in feedback_records]
        assert feedback_dead.wait_for(fed, 60) == set()
        for (key, value, _, reason), sha in zip([r for r in records if r[3]], hostile, strict=True):
            letter = json.loads(dead.received[sha][1])
            assert letter["reason"] == reason and letter["original_size"] == len(value), letter["detail"]
            assert letter["original_key_size"] == len(key) and len(dead.received[sha][1]) < 500_000
        assert consumer.service.halted is None and consumer.thread.is_alive()
        # The feedback reader still applies ordinary ratings after them.
        user = valid_request.user_id
        LiveRatings(redis.Redis.from_url(settings.redis_url)).r.delete(f"live:u:{user}")
        event = schemas.Feedback(None, user, int(champion_movie(settings, champion)), 4.0, schemas.utc_now_iso())
        producer.produce(topics.feedback, schemas.encode_feedback(event), b"1")
        producer.flush(30)
        live = LiveRatings(redis.Redis.from_url(settings.redis_url))
        deadline = time.monotonic() + 30
        while not live.ratings([user]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live.ratings([user]), "the feedback reader stopped after the sized records"
        live.r.delete(f"live:u:{user}")
    finally:
        feedback_dead.close()
        consumer.stop()


def champion_movie(settings, champion) -> int:
    from mlops.feature_store import RedisFeatureStore

    return RedisFeatureStore.from_settings(settings).ids(champion.feature_set, "item")[0]
