"""The client side of the stream, shared by the verifier, the benchmark and the tests.

`TopicListener` reads a topic from its current end (positions taken before anything is sent, so no
answer can slip past it) and records when each message arrived; `Sender` produces requests and keeps
the time each was sent and where it landed; `exchange` sets up both for one namespace of topics.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from mlops import kafka_auth
from mlops.consumer.kafka import StreamTopics, producer_config
from mlops.kafka_auth import PLATFORM
from mlops.schemas import Request, encode_request, parse_dlq_record, request_key
from mlops.settings import Settings

_NOT_SERVED_YET = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                   KafkaError.UNKNOWN_TOPIC_OR_PART)  # fmt: skip


class TopicListener(threading.Thread):
    """Collects `key_of(value) -> (arrival time, value)` for every message appended to `topic` from now on."""

    def __init__(self, settings: Settings, topic: str, key_of: Callable[[bytes], Any] | None = None,
                 role: str = PLATFORM) -> None:  # fmt: skip
        super().__init__(name=f"listen:{topic}", daemon=True)
        self.topic = topic
        self.key_of = key_of or (lambda value: json.loads(value)["request_id"])
        self.received: dict[Any, tuple[float, bytes]] = {}
        self.duplicates = 0  # the same key again (at-least-once redelivery), with the same value
        self.conflicts: list[Any] = []  # the same key again with a different value: must never happen
        self._stopping = threading.Event()
        self._consumer = Consumer({
            **kafka_auth.client_config(settings, role),
            "group.id": f"inference-listener-{uuid.uuid4().hex}",  # never commits; the platform role's prefix
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        })  # fmt: skip
        metadata = self._consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"topic {topic}: {metadata.error}")
        assignment = []
        for partition in sorted(metadata.partitions):
            high = self._end_offset(TopicPartition(topic, partition))
            assignment.append(TopicPartition(topic, partition, high))
        self._consumer.assign(assignment)

    def _end_offset(self, partition: TopicPartition, timeout: float = 15.0) -> int:
        """The partition's end. A topic created a moment ago can be in the metadata with a leader that does not
        serve it yet (NOT_LEADER_FOR_PARTITION): retriable errors are asked again until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._consumer.get_watermark_offsets(partition, timeout=10)[1]
            except KafkaException as exc:
                error = exc.args[0]
                if not (error.retriable() or error.code() in _NOT_SERVED_YET) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def run(self) -> None:
        """Record every message as it arrives (arrival time taken at once) until `close`."""
        try:
            while not self._stopping.is_set():
                # Block for the first message only, then take what is already there: `consume(n, t)` waits
                # for n messages or the whole of t, and that wait would count as latency.
                first = self._consumer.poll(0.05)
                if first is None:
                    continue
                for message in (first, *self._consumer.consume(1000, 0)):
                    if message.error() is None:
                        self._record(message)
        finally:
            self._consumer.close()

    def _record(self, message: Message) -> None:
        now = time.time()
        try:
            key = self.key_of(message.value())
        except (ValueError, KeyError, TypeError):
            return
        if key in self.received:
            self.duplicates += 1
            if self.received[key][1] != message.value():
                self.conflicts.append(key)
        else:
            self.received[key] = (now, message.value())

    def wait_for(self, keys: Iterable[Any], timeout: float, progress: Callable[[int, int], None] | None = None) -> set:
        """Block until every key arrived or the timeout passed; returns the keys still missing."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        while True:
            missing = wanted - self.received.keys()
            if not missing or time.monotonic() > deadline:
                return missing
            if progress is not None and time.monotonic() - last_report > 2:
                last_report = time.monotonic()
                progress(len(wanted) - len(missing), len(wanted))
            time.sleep(0.02)

    def close(self) -> None:
        """Stop listening and let the thread close its consumer (waits up to 5s)."""
        self._stopping.set()
        self.join(timeout=5)


class Sender:
    """Produces requests (keyed by user id); `sent[request_id]` is the send time, `placed` where it landed."""

    def __init__(self, settings: Settings, topic: str, role: str = PLATFORM) -> None:
        self.topic = topic
        self.producer = Producer(producer_config(settings, role=role, **{"linger.ms": 0}))
        self.sent: dict[str, float] = {}
        self.placed: dict[bytes, tuple[int, int]] = {}  # raw value -> (partition, offset), for raw sends

    def send(self, request: Request) -> None:
        """Produce one request keyed by its user and note when it was sent, to measure its latency."""
        self._produce(encode_request(request), request_key(request.user_id))
        self.sent[request.request_id] = time.time()

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """A message as given (the verifier's malformed ones); its partition and offset land in `placed`."""

        def placed(err: Any, msg: Message) -> None:
            if err is None:
                self.placed[msg.value()] = (msg.partition(), msg.offset())

        self._produce(value, key, placed)

    def _produce(self, value: bytes, key: bytes | None, on_delivery: Callable | None = None) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value, key, on_delivery=on_delivery)
                self.producer.poll(0)
                return
            except BufferError:
                self.producer.poll(0.05)

    def flush(self) -> None:
        """Wait until every produced message is delivered; raise if the broker did not take them within 30s."""
        if self.producer.flush(30) > 0:
            raise RuntimeError(f"could not deliver every request to {self.topic} within 30s (broker down?)")


def dead_letter_original(value: bytes) -> bytes:
    """Key of a DLQ listener: the original bytes of the dead-lettered message."""
    return parse_dlq_record(value)["original"]


@dataclass
class Exchange:
    """Listeners on a namespace's predictions (by request id) and DLQ (by original bytes), and a sender."""

    results: TopicListener
    dead: TopicListener
    sender: Sender


@contextlib.contextmanager
def exchange(settings: Settings, topics: StreamTopics) -> Iterator[Exchange]:
    """Listen to the results and dead letters of `topics` from now on, send to its requests topic; the
    listeners are closed on the way out (what the verifier, the benchmark and the tests all need)."""
    results = TopicListener(settings, topics.predictions)
    dead = TopicListener(settings, topics.dlq, key_of=dead_letter_original)
    results.start()
    dead.start()
    try:
        yield Exchange(results, dead, Sender(settings, topics.requests))
    finally:
        results.close()
        dead.close()
