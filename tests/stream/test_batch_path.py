"""The consumer's per-batch answer path (`StreamConsumer.handle`): real Redis and feature store, a
deterministic stand-in ranker, and in-memory Kafka message/producer/consumer objects (the broker itself
is exercised by test_stream.py and test_hardening.py). Fuzzed with hypothesis: any batch of any bytes
ends with every message either answered or dead-lettered with a reason, exactly once, and committed.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from types import SimpleNamespace

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops import schemas
from mlops.consumer.metrics import ConsumerMetrics
from mlops.consumer.processor import BatchProcessor
from mlops.consumer.reload import RankerHolder
from mlops.consumer.service import Stopped, StreamConsumer
from mlops.feature_store import RedisFeatureStore
from mlops.schemas import ScoreRequest, TopKRequest

pytestmark = pytest.mark.integration

POISON_MOVIE = 666


class Ranker:
    """Deterministic scores; raises on POISON_MOVIE (a request the model cannot answer)."""

    info = SimpleNamespace(model_version="1", feature_set="fs-test")

    live = False

    def __init__(self, broken: bool = False, error: type[Exception] = ValueError) -> None:
        self.broken, self.error = broken, error

    def users(self, online):
        return online.users

    def score_with_flags(self, users, movie_ids, observed=None):
        if self.broken or any(POISON_MOVIE in ids for ids in movie_ids):
            raise self.error("the model cannot score this")
        return [{m: (m % 97) / 97 for m in ids} for ids in movie_ids], [u is None for u in users]

    def recommend_with_flags(self, users, ks):
        if self.broken:
            raise ValueError("the model cannot score this")
        return [[(i, 1 / (i + 1)) for i in range(k)] for k in ks], [u is None for u in users]


class Message:
    def __init__(self, value: bytes | None, offset: int, partition: int = 0, key: bytes | None = b"1") -> None:
        self._value, self._offset, self._partition, self._key = value, offset, partition, key

    def value(self):
        return self._value

    def key(self):
        return self._key

    def topic(self):
        return "requests"

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def timestamp(self):
        return (1, 0)

    def error(self):
        return None


class Producer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic, value, key, on_delivery=None):
        self.records.append((topic, key, value))

    def flush(self, timeout=None):
        return 0

    def poll(self, timeout=None):
        return 0


class Consumer:
    def __init__(self) -> None:
        self.commits: list[dict[int, int]] = []

    def commit(self, offsets, asynchronous):
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def get_watermark_offsets(self, partition, cached=False):
        return -1, -1  # what the real client answers from its cache before any fetch: unknown


def make_consumer(settings_, ranker=None) -> tuple[StreamConsumer, Producer, Consumer]:
    store = RedisFeatureStore.from_settings(settings_)
    processor = BatchProcessor(store, redis.Redis.from_url(settings_.redis_url), 60)
    holder = RankerHolder()
    holder.ranker = ranker or Ranker()
    producer, consumer = Producer(), Consumer()
    topics = SimpleNamespace(requests="requests", predictions="predictions", dlq="dlq")
    service = StreamConsumer(consumer, producer, processor, holder, ConsumerMetrics(), 500, 5, topics=topics)
    service.permanent_retry_s = 0.05
    return service, producer, consumer


def outcome(producer: Producer) -> tuple[list[dict], list[dict]]:
    results = [json.loads(v) for t, _, v in producer.records if t == "predictions"]
    dead = [schemas.parse_dlq_record(v) for t, _, v in producer.records if t == "dlq"]
    return results, dead


def handle_until_stopped(service: StreamConsumer, batch: list) -> None:
    with contextlib.suppress(Stopped):  # what run() does with it: leave without committing
        service.handle(batch)


@pytest.fixture
def fresh(base_settings, redis_server):
    return lambda ranker=None: make_consumer(base_settings, ranker)


@pytest.mark.parametrize("error", [ValueError, FileNotFoundError])
def test_a_bad_message_and_a_poison_request_do_not_stop_the_batch(fresh, error):
    """FileNotFoundError is an OSError but not transient: it must not be retried forever either."""
    service, producer, consumer = fresh(Ranker(error=error))
    tag = uuid.uuid4().hex
    good = [ScoreRequest(f"{tag}-{i}", i, (1, 2, 3)) for i in range(5)]
    poison = ScoreRequest(f"{tag}-poison", 9, (1, POISON_MOVIE))
    batch = [Message(schemas.encode_request(r), i) for i, r in enumerate(good[:2])]
    batch += [Message(b"[" * 1100, 2), Message(None, 3), Message(schemas.encode_request(poison), 4)]
    batch += [Message(schemas.encode_request(r), 5 + i) for i, r in enumerate(good[2:])]
    service.canary = good[0]  # it has answered before: the model works
    service.handle(batch)
    results, dead = outcome(producer)
    assert sorted(r["request_id"] for r in results) == sorted(r.request_id for r in good)
    reasons = {d["source_offset"]: d["reason"] for d in dead}
    assert reasons == {2: schemas.TOO_DEEP, 3: schemas.NOT_JSON, 4: schemas.PROCESSING_ERROR}
    detail = next(d["detail"] for d in dead if d["source_offset"] == 4)
    assert f"{error.__name__}: the model cannot score this" in detail
    assert consumer.commits == [{0: 8}]
    assert service.halted is None


def test_a_reused_request_id_is_a_conflict_and_a_redelivery_republishes(fresh):
    """The second user's request under the first user's id must never get the first user's result."""
    service, producer, _ = fresh()
    rid = f"shared-{uuid.uuid4().hex}"
    first, other_user = ScoreRequest(rid, 1, (1, 2)), ScoreRequest(rid, 2, (1, 2))
    other_movies = ScoreRequest(rid, 1, (1, 3))
    service.handle([Message(schemas.encode_request(first), 0)])
    service.handle([Message(schemas.encode_request(first), 1)])  # redelivery: same bytes again
    service.handle([Message(schemas.encode_request(other_user), 2), Message(schemas.encode_request(other_movies), 3)])
    # ... and the same within one batch: first a new request, then a different one reusing its id
    rid2 = f"shared-{uuid.uuid4().hex}"
    service.handle([Message(schemas.encode_request(TopKRequest(rid2, 5, 3)), 4),
                    Message(schemas.encode_request(TopKRequest(rid2, 6, 3)), 5)])  # fmt: skip
    results, dead = outcome(producer)
    assert [r["request_id"] for r in results] == [rid, rid, rid2]
    assert results[0] == results[1] and results[0]["user_id"] == 1  # the stored result, republished
    assert results[2]["user_id"] == 5
    assert {d["source_offset"]: d["reason"] for d in dead} == {
        2: schemas.REQUEST_ID_CONFLICT,
        3: schemas.REQUEST_ID_CONFLICT,
        5: schemas.REQUEST_ID_CONFLICT,
    }
    assert all("already answered a different request" in d["detail"] for d in dead)
    assert service.metrics.dead_letters.labels(reason=schemas.REQUEST_ID_CONFLICT)._value.get() == 3


def test_a_model_that_fails_on_every_request_stops_consumption_instead_of_draining(fresh):
    """Systemic failure (the canary fails too): nothing dead-lettered, nothing committed, health 503."""
    service, producer, consumer = fresh(Ranker(broken=True))
    tag = uuid.uuid4().hex
    service.canary = ScoreRequest(f"{tag}-canary", 1, (1,))
    batch = [Message(schemas.encode_request(ScoreRequest(f"{tag}-{i}", i, (1, 2))), i) for i in range(3)]
    worker = threading.Thread(target=handle_until_stopped, args=(service, batch), daemon=True)
    worker.start()
    worker.join(1.0)
    assert worker.is_alive(), "the batch should be held while the model is broken"
    healthy, detail = service.health()
    assert not healthy and "stopped on a permanent model error" in detail["problem"] and detail["halted"]
    assert service.metrics.halted._value.get() == 1
    assert producer.records == [] and consumer.commits == []
    service.holder.ranker = Ranker()  # the cause is fixed (e.g. a new champion): consumption resumes
    worker.join(10)
    assert not worker.is_alive()
    results, dead = outcome(producer)
    assert len(results) == 3 and dead == [] and consumer.commits == [{0: 3}]
    assert service.health()[0] and service.metrics.halted._value.get() == 0


def test_without_a_canary_a_batch_where_every_request_fails_also_stops(fresh):
    service, producer, consumer = fresh(Ranker(broken=True))
    tag = uuid.uuid4().hex
    batch = [Message(schemas.encode_request(ScoreRequest(f"{tag}-{i}", i, (1, 2))), i) for i in range(3)]
    worker = threading.Thread(target=handle_until_stopped, args=(service, batch), daemon=True)
    worker.start()
    worker.join(1.0)
    assert worker.is_alive() and service.halted is not None and producer.records == []
    service.stop()  # SIGTERM while halted: leaves without committing
    worker.join(10)
    assert not worker.is_alive() and consumer.commits == []


def test_health_says_why(fresh):
    service, _, _ = fresh()
    assert service.health()[0]
    service.report("redis", "redis unavailable: ConnectionError: refused")
    healthy, detail = service.health()
    assert not healthy and detail["problem"] == "redis unavailable: ConnectionError: refused"
    service.report("redis", None)
    service.holder.ranker = None
    service.report("model", "cannot load the `champion` model: MlflowException: gone")
    healthy, detail = service.health()
    assert not healthy and "cannot load the `champion` model" in detail["problem"]
    assert "Traceback" not in json.dumps(detail)


def test_idle_probe_notices_an_unreachable_redis(base_settings, redis_server, free_port):
    service, _, _ = make_consumer(base_settings.replace(redis_port=free_port()))

    class Listing:
        def list_topics(self, topic, timeout):
            return SimpleNamespace(topics={topic: SimpleNamespace(error=None)})

    service.consumer = Listing()
    service._probe()
    healthy, detail = service.health()
    assert not healthy and detail["problem"].startswith("redis unavailable: ConnectionError")


# --- fuzz ----------------------------------------------------------------------------------------------------

VALID = st.builds(
    lambda user, movies, k, poison: (
        {"user_id": user, "movie_ids": [*movies, POISON_MOVIE] if poison else movies} if movies else
        {"user_id": user, "k": k}
    ),
    st.integers(min_value=0, max_value=50), st.lists(st.integers(min_value=0, max_value=500), max_size=5),
    st.integers(min_value=1, max_value=20), st.booleans(),
)  # fmt: skip
HOSTILE = st.binary(max_size=300) | st.sampled_from(
    [b"[" * 1100, b"{" * 5000, b'{"request_id": null}', b"\xff\xfe", b"", b"1e999", b'{"user_id": 1e999}']
) | st.none()  # fmt: skip


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(st.tuples(st.booleans(), VALID, HOSTILE, st.sampled_from(["a", "b", "c"])), min_size=1, max_size=30))
def test_fuzz_every_message_is_answered_or_dead_lettered_once(fresh, items):
    service, producer, consumer = fresh()
    tag = uuid.uuid4().hex
    service.canary = TopKRequest(f"{tag}-canary", 1, 1)
    batch = []
    for offset, (valid, doc, hostile, rid) in enumerate(items):
        if valid:
            raw = json.dumps({"request_id": f"{tag}-{rid}", **doc}).encode()
            batch.append(Message(raw, offset, partition=offset % 3))
        else:
            batch.append(Message(hostile, offset, partition=offset % 3))
    service.handle(batch)
    results, dead = outcome(producer)
    assert len(results) + len(dead) == len(batch)
    assert len({d["source_offset"] for d in dead}) == len(dead)
    assert all(d["reason"] in schemas.REASONS for d in dead)
    assert all(r["request_id"].startswith(tag) for r in results)
    # Each request id answers one request: every published result for it is the same bytes.
    by_id: dict[str, set] = {}
    for topic, _, value in producer.records:
        if topic == "predictions":
            by_id.setdefault(json.loads(value)["request_id"], set()).add(value)
    assert all(len(values) == 1 for values in by_id.values())
    partitions = {m.partition() for m in batch}
    assert consumer.commits == [{p: max(m.offset() for m in batch if m.partition() == p) + 1 for p in partitions}]
    assert service.halted is None
