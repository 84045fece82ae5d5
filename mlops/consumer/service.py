"""The stream consumer: micro-batches from `inference-requests`, results to Redis and `inference-predictions`.

Per batch, in this order: validate (invalid -> DLQ), predict and store idempotently (processor), publish
results and dead letters and wait for the broker's acknowledgement, and only then commit the offsets.
A crash anywhere before the commit means redelivery, which the idempotent store makes harmless (at
least once, never two different results). Failures are handled by what they mean (`failures`):
- transient (Redis or the broker down, LOADING, a failover): the batch is retried with backoff and
  nothing after it is consumed, so nothing is skipped;
- permanent (Redis out of memory, too old, a wrong password; a model that fails on every request):
  consumption stops with the batch uncommitted, `/healthz` answers 503 with the reason and
  `inference_halted` is 1; the batch is retried every PERMANENT_RETRY_S, so fixing the cause resumes it;
- tied to one message (unparseable, or the model raising on that request alone): that message is
  dead-lettered and the batch goes on.
SIGTERM: the batch in hand is finished and committed, then the process leaves the group and exits 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from mlops.consumer.failures import PERMANENT_KAFKA_CODES, Kind, classify, describe, kafka_kind
from mlops.consumer.kafka import StreamTopics
from mlops.consumer.metrics import SCORE_KIND, ConsumerMetrics
from mlops.consumer.processor import Answer, BatchProcessor
from mlops.consumer.reload import RankerHolder
from mlops.schemas import (
    PROCESSING_ERROR,
    REQUEST_ID_CONFLICT,
    UNPUBLISHABLE,
    InvalidRequest,
    Request,
    dlq_key,
    dlq_record,
    parse_request,
    request_key,
    unpublishable_record,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BACKOFF_S = 5.0
PERMANENT_RETRY_S = 30.0
KAFKA_REFUSES = "kafka refuses this consumer"
"""While stopped on a permanent error, the batch in hand is tried again this often (fixing the cause resumes)."""
HEARTBEAT_STALE_S = 60.0
PROBE_INTERVAL_S = 5.0
"""When idle, Redis and the broker are probed this often, so /healthz notices an outage without traffic."""


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
        self.problems: dict[str, str] = {}
        """Why the consumer cannot answer right now, by dependency (`redis`, `kafka`, `model`)."""
        self.halted: str | None = None
        """The permanent error consumption is stopped on, if any."""
        self.canary: Request | None = None
        """A request answered successfully: answering it again tells a broken request from a broken model."""
        self.last_probe = 0.0
        self.permanent_retry_s = PERMANENT_RETRY_S
        self.answered = 0
        self.dead_lettered = 0
        self.companions: list[threading.Thread] = []
        """Threads that live as long as the loop (the feedback reader), started by `run`, stopped by `stop`."""

    def stop(self) -> None:
        """Ask the loop to finish (signal handlers call it): the batch in hand completes, then it exits."""
        self.stopping.set()

    def report(self, dependency: str, problem: str | None) -> None:
        """Record (or clear, with None) why `dependency` keeps the consumer from answering."""
        if problem is None:
            if self.problems.pop(dependency, None) is not None:
                log.info("%s is back", dependency)
        else:
            self.problems[dependency] = problem

    def client_error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors (its `error_cb`). A refusal (credentials revoked or wrong, an ACL
        withdrawn) is what `/healthz` says until requests flow again; nothing is consumed or committed meanwhile,
        so no request is skipped. Other errors (a broker down) are librdkafka's to retry."""
        if error.code() in PERMANENT_KAFKA_CODES:
            self.report("kafka", f"{KAFKA_REFUSES}: {error.str()}")

    # -- loop -------------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Consume, answer and commit request batches until `stop`; then leave the group and flush. Exit code."""
        for companion in self.companions:
            companion.start()
        self.consumer.subscribe([self.topics.requests])
        log.info("%s consuming %s (batch %d, timeout %.0f ms)", self.name, self.topics.requests, self.batch_size,
                 self.batch_timeout_s * 1000)  # fmt: skip
        try:
            while not self.stopping.is_set():
                batch = self._next_batch()
                self.heartbeat = time.time()
                if batch:
                    self.handle(batch)
                elif self.heartbeat - self.last_probe > PROBE_INTERVAL_S:
                    self._probe()
        except Stopped:
            log.warning("stopped while a dependency was down: the batch in hand stays uncommitted and is redelivered")
        finally:
            self.consumer.close()  # leaves the group: the partitions move to the other members at once
            self.producer.flush(10)
            for companion in self.companions:
                companion.join(10)
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
                self.metrics.retries.labels(reason="kafka_consume").inc()
                self.client_error(message.error())
            else:
                good.append(message)
        if good:
            self.report("kafka", None)
        return good

    def _probe(self) -> None:
        """Idle: check that Redis and the broker answer, so that health tells the truth without traffic."""
        self.last_probe = time.time()
        try:
            self.processor.redis.ping()
            self.report("redis", None)
        except Exception as exc:
            self.report("redis", f"redis unavailable: {describe(exc)}")
        try:
            metadata = self.consumer.list_topics(self.topics.requests, timeout=2)
            error = metadata.topics[self.topics.requests].error
            self.report("kafka", None if error is None else f"kafka: topic {self.topics.requests}: {error.str()}")
        except Exception as exc:
            if not self.problems.get("kafka", "").startswith(KAFKA_REFUSES):  # the refusal says more than this
                self.report("kafka", f"kafka unavailable: {describe(exc)}")

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
            except Exception as exc:  # a bug in the parser: never a reason to stop the stream
                dead.append(self._dead_letter(message, PROCESSING_ERROR, describe(exc)))
        answers = self._answer(requests, sources, dead) if requests else []
        for i, (answer, message) in enumerate(zip(answers, sources, strict=True)):
            if answer is not None and answer.conflict:
                answers[i] = None
                detail = f"request_id {requests[i].request_id!r} already answered a different request"
                dead.append(self._dead_letter(message, REQUEST_ID_CONFLICT, detail))
        records = [
            (self.topics.predictions, request_key(request.user_id), answer.payload)
            for request, answer in zip(requests, answers, strict=True)
            if answer is not None
        ]
        records += [(self.topics.dlq, dlq_key(message.key()), record) for message, record in dead]
        self._publish(records)
        self._commit(batch)

        now = time.time()
        done = [(r, m, a) for r, m, a in zip(requests, sources, answers, strict=True) if a is not None]
        for (kind, variant), count in Counter((r.kind, a.variant) for r, _, a in done).items():
            self.metrics.requests.labels(type=kind, kind=SCORE_KIND.get(kind, kind), variant=variant).inc(count)
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
        self.metrics.dead_letters.labels(reason=reason).inc()
        log.info("dead-lettering %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), detail)
        record = dlq_record(message.value(), message.key(), reason, detail, message.topic(), message.partition(),
                            message.offset())  # fmt: skip
        return message, record

    def _answer(self, requests: list[Request], sources: list[Message], dead: list) -> list[Answer | None]:
        """Answers in order. When the batch fails on something tied to requests (not a dependency), it is
        answered one request at a time: a request that fails alone is dead-lettered, so it never blocks its
        partition; when the model fails on every request, consumption stops instead (nothing is drained)."""
        ranker, challenger = self.holder.ranker, self.holder.challenger
        try:
            answered = self._retrying(lambda: self.processor.answer(requests, ranker, challenger), "redis")
            answers: list[Answer | None] = list(answered)
            self.canary = requests[0]
            return answers
        except Stopped:
            raise
        except Exception as exc:
            log.warning("batch of %d failed (%s); answering it one request at a time", len(requests), describe(exc))
        while True:
            answers, failed = [], []
            for request, message in zip(requests, sources, strict=True):
                try:
                    answer = self._retrying(
                        lambda r=request, m=ranker: self.processor.answer([r], m, challenger)[0], "redis"
                    )
                    answers.append(answer)
                    self.canary = request
                except Stopped:
                    raise
                except Exception as exc:
                    answers.append(None)
                    failed.append((message, exc))
            systemic = self._systemic(failed, len(requests), ranker) if failed else None
            if systemic is None:
                self._resume()
                dead += [self._dead_letter(m, PROCESSING_ERROR, describe(exc)) for m, exc in failed]
                return answers
            self._halt("model", f"the model fails on every request: {systemic}")
            ranker = self.holder.ranker  # a new champion may have arrived meanwhile

    def _systemic(self, failed: list[tuple[Message, Exception]], total: int, ranker: Any) -> str | None:
        """Why the failures are not the requests' fault, or None when they are. A request answered before
        (the canary) is answered again: if that fails too, the model or its inputs are broken, not the
        requests. Without a canary yet, a batch of several where every request fails counts as broken."""
        if self.canary is not None:
            canary = self.canary
            try:
                self._retrying(lambda: self.processor.predict([canary], ranker), "redis")
                return None
            except Stopped:
                raise
            except Exception as exc:
                return describe(exc)
        if total > 1 and len(failed) == total:
            return describe(failed[0][1])
        return None

    def _retrying(self, operation: Callable[[], T], dependency: str) -> T:
        """Run `operation`: transient failures are retried with exponential backoff, permanent ones halt
        consumption (retried every PERMANENT_RETRY_S), failures tied to the request are raised."""
        delay = 0.05
        while True:
            try:
                result = operation()
                self.report(dependency, None)
                self._resume()
                return result
            except Exception as exc:
                kind = classify(exc)
                if kind is Kind.REQUEST:
                    raise
                if kind is Kind.PERMANENT:
                    self._halt(dependency, describe(exc))
                    continue
                if dependency not in self.problems:
                    log.warning("%s unavailable (%s): retrying with backoff; nothing is skipped", dependency,
                                describe(exc))  # fmt: skip
                self.report(dependency, f"{dependency} unavailable: {describe(exc)}")
                self.metrics.retries.labels(reason=f"{dependency}_unavailable").inc()
                self.heartbeat = time.time()
                if self.stopping.wait(delay):
                    raise Stopped from exc
                delay = min(delay * 2, MAX_BACKOFF_S)

    def _halt(self, dependency: str, reason: str) -> None:
        """Stop consuming on a permanent error (the caller retries the batch in hand after a long wait)."""
        if self.halted is None:
            log.error("stopped on a permanent %s error, nothing committed: %s (retrying every %.0fs)", dependency,
                      reason, self.permanent_retry_s)  # fmt: skip
        self.halted = f"stopped on a permanent {dependency} error: {reason}"
        self.metrics.halted.set(1)
        self.metrics.retries.labels(reason=f"{dependency}_permanent").inc()
        self.heartbeat = time.time()
        if self.stopping.wait(self.permanent_retry_s):
            raise Stopped

    def _resume(self) -> None:
        if self.halted is not None:
            log.warning("resuming: the permanent error is gone (%s)", self.halted)
            self.halted = None
            self.metrics.halted.set(0)

    def _publish(self, records: list[tuple[str, bytes | None, bytes]]) -> None:
        """Produce and wait for every acknowledgement; failed deliveries are produced again with backoff
        (transient) or after a long wait with consumption stopped (permanent). A record the broker refuses for
        itself (too large, invalid) is replaced by a minimal dead letter, which is dropped, counted, if refused
        too: one record never stops the partition."""
        delay = 0.05
        pending = records
        stand_ins: set[bytes] = set()
        while pending:
            failed: list[tuple[str, bytes | None, bytes]] = []
            errors: list[KafkaError] = []

            def on_delivery(err: Any, msg: Message, failed: list = failed, errors: list = errors) -> None:
                if err is not None:
                    failed.append((msg.topic(), msg.key(), msg.value()))
                    errors.append(err)

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
                        errors.append(exc.args[0])
                        break
            while self.producer.flush(0.5) > 0:  # each message ends acknowledged or failed (message.timeout.ms)
                self.heartbeat = time.time()
            outcome = [(record, e, kafka_kind(e) is Kind.REQUEST) for record, e in zip(failed, errors, strict=True)]
            refused = [(record, e) for record, e, alone in outcome if alone]
            if refused:
                failed[:], errors[:] = [r for r, _, alone in outcome if not alone], [e for _, e, a in outcome if not a]
                failed += self._stand_ins(refused, stand_ins)
                if failed and not errors:  # only stand-ins to produce: no dependency is failing
                    pending = failed
                    continue
            if not failed:
                self.report("kafka", None)
                self._resume()
                return
            permanent = [e for e in errors if kafka_kind(e) is Kind.PERMANENT]
            if permanent:
                self._halt("kafka", f"{len(failed)} deliveries failed: {permanent[0].str()}")
            else:
                self.report("kafka", f"kafka unavailable: {len(failed)} deliveries failed ({errors[0].str()})")
                log.warning("%d of %d deliveries failed: producing them again in %.2fs", len(failed), len(pending),
                            delay)  # fmt: skip
                self.metrics.retries.labels(reason="kafka_unavailable").inc(len(failed))
                if self.stopping.wait(delay):
                    raise Stopped
                delay = min(delay * 2, MAX_BACKOFF_S)
            pending = failed

    def _stand_ins(self, refused: list[tuple[tuple[str, bytes | None, bytes], KafkaError]],
                   stand_ins: set[bytes]) -> list[tuple[str, bytes | None, bytes]]:  # fmt: skip
        """A minimal dead letter for each refused record; a refused stand-in is dropped (logged and counted)."""
        out = []
        for (topic, key, value), error in refused:
            if value in stand_ins:
                log.error("dropping a dead letter the broker refuses even without the original: %s", error.str())
                self.metrics.dropped.labels(topic=topic).inc()
                continue
            log.warning("%s refused a record of %d bytes (%s): dead-lettered as %s", topic, len(value), error.str(),
                        UNPUBLISHABLE)  # fmt: skip
            stand_in = unpublishable_record(topic, key, value, error.str())
            stand_ins.add(stand_in)
            self.metrics.dead_letters.labels(reason=UNPUBLISHABLE).inc()
            out.append((self.topics.dlq, dlq_key(key), stand_in))
        return out

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
                self._record_lag(partitions)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or attempt == 4:
                    # A rebalance took the partitions, or the broker is gone: whoever consumes them next
                    # gets this batch again and republishes the results already stored in Redis.
                    log.warning("offset commit failed (%s): the batch will be redelivered, answered from Redis", error)
                    self.metrics.retries.labels(reason="commit_failed").inc()
                    return
                time.sleep(0.1 * (attempt + 1))

    def _record_lag(self, committed: list[TopicPartition]) -> None:
        """inference_consumer_lag per partition: the high watermark the last fetch saw minus the commit
        (cached by the client: no broker round trip on the answer path)."""
        for tp in committed:
            _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                self.metrics.lag.labels(partition=str(tp.partition)).set(max(0, high - tp.offset))

    # -- health -----------------------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """200 only while this consumer can answer: a model loaded, Redis and the broker reachable, not
        stopped on a permanent error, the loop alive. The body says why not, in one line (no traceback)."""
        ranker, challenger = self.holder.ranker, self.holder.challenger
        stale = time.time() - self.heartbeat > HEARTBEAT_STALE_S
        reasons = [self.halted] if self.halted else []
        reasons += [text for dep, text in sorted(self.problems.items()) if ranker is None or dep != "model"]
        if ranker is None and "model" not in self.problems:
            reasons.append("no model loaded yet")
        if stale:
            reasons.append("consumer loop stalled")
        if self.stopping.is_set():
            reasons.append("shutting down")
        healthy = not reasons
        detail = {
            "status": "ok" if healthy else "unhealthy",
            "consumer": self.name,
            "model_version": None if ranker is None else str(ranker.info.model_version),
            "feature_set": None if ranker is None else str(ranker.info.feature_set),
            "challenger_version": None if challenger is None else str(challenger.info.model_version),
            "problem": "; ".join(reasons) or None,
            "halted": self.halted is not None,
            "answered": self.answered,
            "dead_lettered": self.dead_lettered,
        }
        return healthy, detail
