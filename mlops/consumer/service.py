"""The stream consumer: micro-batches from `inference-requests`, results to Redis and `inference-predictions`.

Per batch, in this order: validate (invalid -> DLQ), predict and store idempotently (processor), publish
results and dead letters and wait for the broker's acknowledgement, and only then commit the offsets.
A crash anywhere before the commit means redelivery, which the idempotent store makes harmless (at
least once, never two different results). Redis or the broker down: the batch is retried with backoff
and nothing after it is consumed, so nothing is skipped. SIGTERM: the batch in hand is finished and
committed, then the process leaves the group and exits 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from mlops.consumer.kafka import StreamTopics
from mlops.consumer.metrics import ConsumerMetrics
from mlops.consumer.processor import Answer, BatchProcessor
from mlops.consumer.reload import RankerHolder
from mlops.schemas import PROCESSING_ERROR, InvalidRequest, Request, dlq_record, parse_request, request_key

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, OSError)
"""Failures that waiting cures (Redis restarting, network): retried forever, never dead-lettered."""
MAX_BACKOFF_S = 5.0
HEARTBEAT_STALE_S = 60.0


class Stopped(Exception):
    """Shutdown was requested while a dependency was down: the batch stays uncommitted (redelivered later)."""


class StreamConsumer:
    """One member of the consumer group; `run()` loops until `stop()` (or SIGTERM via the entry point)."""

    def __init__(
        self, consumer: Consumer, producer: Producer, processor: BatchProcessor, holder: RankerHolder,
        metrics: ConsumerMetrics, batch_size: int, batch_timeout_ms: int, name: str = "inference-0",
        topics: StreamTopics | None = None,
    ) -> None:  # fmt: skip
        self.consumer, self.producer, self.processor = consumer, producer, processor
        self.holder, self.metrics, self.name = holder, metrics, name
        self.topics = topics or StreamTopics()
        self.batch_size = max(1, batch_size)
        self.batch_timeout_s = batch_timeout_ms / 1000
        self.stopping = threading.Event()
        self.heartbeat = time.time()
        self.problem: str | None = None
        self.answered = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        self.stopping.set()

    # -- loop -------------------------------------------------------------------------------------------------

    def run(self) -> int:
        self.consumer.subscribe([self.topics.requests])
        log.info("%s consuming %s (batch %d, timeout %.0f ms)", self.name, self.topics.requests, self.batch_size,
                 self.batch_timeout_s * 1000)  # fmt: skip
        try:
            while not self.stopping.is_set():
                batch = self._next_batch()
                self.heartbeat = time.time()
                if batch:
                    self.handle(batch)
        except Stopped:
            log.warning("stopped while a dependency was down: the batch in hand stays uncommitted and is redelivered")
        finally:
            self.consumer.close()  # leaves the group: the partitions move to the other members at once
            self.producer.flush(10)
            log.info("%s stopped: %d answered, %d dead-lettered", self.name, self.answered, self.dead_lettered)
        return 0

    def _next_batch(self) -> list[Message]:
        """Block briefly for the first message, then gather up to a batch within the batch timeout."""
        first = self.consumer.poll(0.5)
        if first is None:
            return []
        messages = [first]
        if self.batch_size > 1:
            messages += self.consumer.consume(self.batch_size - 1, self.batch_timeout_s)
        good = []
        for message in messages:
            if message.error() is not None:
                log.warning("consumer error: %s", message.error())
                self.metrics.errors.labels(reason="kafka_consume").inc()
            else:
                good.append(message)
        return good

    # -- one batch --------------------------------------------------------------------------------------------

    def handle(self, batch: list[Message]) -> None:
        """Validate, answer, publish, commit: the order that makes delivery at-least-once and lossless."""
        started = time.perf_counter()
        self.metrics.batch_size.observe(len(batch))
        requests: list[Request] = []
        sources: list[Message] = []
        dead: list[tuple[Message, bytes]] = []
        for message in batch:
            try:
                requests.append(parse_request(message.value()))
                sources.append(message)
            except InvalidRequest as exc:
                dead.append(self._dead_letter(message, exc.reason, str(exc)))
        answers = self._answer(requests, sources, dead) if requests else []
        records = [
            (self.topics.predictions, request_key(request.user_id), answer.payload)
            for request, answer in zip(requests, answers, strict=True)
            if answer is not None
        ]
        records += [(self.topics.dlq, message.key(), record) for message, record in dead]
        self._publish(records)
        self._commit(batch)

        now = time.time()
        done = [(r, m, a) for r, m, a in zip(requests, sources, answers, strict=True) if a is not None]
        for kind, count in Counter(r.kind for r, _, _ in done).items():
            self.metrics.requests.labels(type=kind).inc(count)
        self.metrics.fallbacks.inc(sum(a.fallback for _, _, a in done))
        self.metrics.redelivered.inc(sum(a.redelivered for _, _, a in done))
        for _, message, _ in done:
            _, ts_ms = message.timestamp()
            if ts_ms > 0:
                self.metrics.latency.observe(max(0.0, now - ts_ms / 1000))
        self.answered += len(done)
        self.dead_lettered += len(dead)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.last_batch.set(now)

    def _dead_letter(self, message: Message, reason: str, detail: str) -> tuple[Message, bytes]:
        self.metrics.errors.labels(reason=reason).inc()
        log.info("dead-lettering %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), detail)
        record = dlq_record(message.value(), message.key(), reason, detail, message.topic(), message.partition(),
                            message.offset())  # fmt: skip
        return message, record

    def _answer(self, requests: list[Request], sources: list[Message], dead: list) -> list[Answer | None]:
        """Answers in order; a request that makes the model fail (not a transient error) is dead-lettered
        alone, found by answering the batch one request at a time, so it never blocks its partition."""
        ranker = self.holder.ranker
        try:
            return self._retrying(lambda: self.processor.answer(requests, ranker), "redis")
        except (Stopped, KafkaException):
            raise
        except Exception:
            log.exception("batch of %d failed; answering it one request at a time", len(requests))
        answers: list[Answer | None] = []
        for request, message in zip(requests, sources, strict=True):
            try:
                answers.append(self._retrying(lambda r=request: self.processor.answer([r], ranker)[0], "redis"))
            except Stopped:
                raise
            except Exception as exc:
                answers.append(None)
                dead.append(self._dead_letter(message, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
        return answers

    def _retrying(self, operation: Callable[[], T], dependency: str) -> T:
        """Run `operation`, retrying transient failures with exponential backoff until it works or we stop."""
        delay = 0.05
        while True:
            try:
                result = operation()
                if self.problem is not None:
                    log.info("%s is back", dependency)
                    self.problem = None
                return result
            except TRANSIENT as exc:
                if self.problem is None:
                    log.warning("%s unavailable (%s): retrying with backoff; nothing is skipped", dependency, exc)
                self.problem = f"{dependency} unavailable: {exc}"
                self.metrics.errors.labels(reason=f"{dependency}_unavailable").inc()
                self.heartbeat = time.time()
                if self.stopping.wait(delay):
                    raise Stopped from exc
                delay = min(delay * 2, MAX_BACKOFF_S)

    def _publish(self, records: list[tuple[str, bytes | None, bytes]]) -> None:
        """Produce and wait for every acknowledgement; failed deliveries are produced again with backoff."""
        delay = 0.05
        pending = records
        while pending:
            failed: list[tuple[str, bytes | None, bytes]] = []

            def on_delivery(err: Any, msg: Message, failed: list = failed) -> None:
                if err is not None:
                    failed.append((msg.topic(), msg.key(), msg.value()))

            for topic, key, value in pending:
                while True:
                    try:
                        self.producer.produce(topic, value, key, on_delivery=on_delivery)
                        break
                    except BufferError:  # local queue full: let deliveries drain
                        self.producer.poll(0.05)
                    except KafkaException as exc:  # e.g. the topic is missing: retried like a failed delivery
                        log.warning("cannot produce to %s: %s", topic, exc)
                        failed.append((topic, key, value))
                        break
            while self.producer.flush(0.5) > 0:  # each message ends acknowledged or failed (message.timeout.ms)
                self.heartbeat = time.time()
            if not failed:
                if self.problem is not None and self.problem.startswith("kafka"):
                    log.info("kafka is back")
                    self.problem = None
                return
            self.problem = f"kafka unavailable: {len(failed)} deliveries failed"
            log.warning("%d of %d deliveries failed: producing them again in %.2fs", len(failed), len(pending), delay)
            self.metrics.errors.labels(reason="kafka_unavailable").inc(len(failed))
            if self.stopping.wait(delay):
                raise Stopped
            delay = min(delay * 2, MAX_BACKOFF_S)
            pending = failed

    def _commit(self, batch: list[Message]) -> None:
        """Commit the next offset of each partition in the batch, synchronously, after the results are out."""
        offsets: dict[tuple[str, int], int] = {}
        for m in batch:
            key = (m.topic(), m.partition())
            offsets[key] = max(offsets.get(key, -1), m.offset() + 1)
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        for attempt in range(5):
            try:
                self.consumer.commit(offsets=partitions, asynchronous=False)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or attempt == 4:
                    # A rebalance took the partitions, or the broker is gone: whoever consumes them next
                    # gets this batch again and republishes the results already stored in Redis.
                    log.warning("offset commit failed (%s): the batch will be redelivered, answered from Redis", error)
                    self.metrics.errors.labels(reason="commit_failed").inc()
                    return
                time.sleep(0.1 * (attempt + 1))

    # -- health -----------------------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        ranker = self.holder.ranker
        stale = time.time() - self.heartbeat > HEARTBEAT_STALE_S
        healthy = ranker is not None and not stale and self.problem is None and not self.stopping.is_set()
        detail = {
            "status": "ok" if healthy else "unhealthy",
            "consumer": self.name,
            "model_version": None if ranker is None else str(ranker.info.model_version),
            "feature_set": None if ranker is None else str(ranker.info.feature_set),
            "problem": self.problem or ("no model loaded yet" if ranker is None else None)
            or ("consumer loop stalled" if stale else None),
            "answered": self.answered,
            "dead_lettered": self.dead_lettered,
        }
        return healthy, detail
