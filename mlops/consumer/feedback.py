"""The feedback reader: `inference-feedback` joined to what each variant served, counted in Redis.

It runs inside each inference consumer process, as a thread with a Kafka consumer of its own in a group of
its own (`inference-feedback-consumers`), rather than as another service: feedback is a trickle next to
the requests, it needs the same Redis and settings, and a thread adds no service for `up`, `status`,
Docker and the process manager to start, watch and restart. Its own group keeps its offsets apart from
the requests', and nothing it does (a bad event, Redis down) ever blocks or slows the requests' loop: it
only shares the process.

Per batch: validate (malformed -> `inference-feedback-dlq` with its reason, like a request dead letter; a
movie the serving catalog lacks -> `unknown_movie`), read the stored results of the named requests (one MGET),
join (`mlops.feedback.credit`: unknown or null request id -> organic; a result for another user -> dead letter
`user_mismatch`), record (idempotent, one script call), apply each rating to the user's live history
(`mlops.live_ratings`: the next request of that user is answered with it; idempotent per event), publish the
dead letters, then commit. Redis or the broker down: the batch is retried with backoff, uncommitted; a
redelivery counts nothing twice and applies nothing twice. A user the feature set does not know is no error:
the stream starts a profile from their ratings alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, Message, Producer

from mlops.consumer.failures import Kind, describe, kafka_kind
from mlops.consumer.kafka import StreamTopics
from mlops.consumer.metrics import ConsumerMetrics
from mlops.feedback import Credit, FeedbackStore, credit, organic_reason
from mlops.live_ratings import LiveRating, LiveRatings
from mlops.schemas import (
    BAD_TIMESTAMP,
    PROCESSING_ERROR,
    UNKNOWN_MOVIE,
    UNPUBLISHABLE,
    Feedback,
    InvalidRequest,
    dlq_key,
    dlq_record,
    parse_feedback,
    unpublishable_record,
)

if TYPE_CHECKING:
    from mlops.model.ranking import Catalog

log = logging.getLogger(__name__)

BATCH = 500
MAX_CLOCK_SKEW_S = 300.0
"""An event dated further ahead than this is dead-lettered `bad_timestamp`."""
MAX_BACKOFF_S = 5.0


class FeedbackReader(threading.Thread):
    """Consumes feedback until `stop` is set; never raises out of `run` (the requests' loop is unaffected)."""

    def __init__(
        self, consumer: Consumer, producer: Producer, store: FeedbackStore, metrics: ConsumerMetrics,
        topics: StreamTopics, stop: threading.Event, live: LiveRatings, catalog: Callable[[], Catalog | None],
    ) -> None:  # fmt: skip
        """`catalog()`: the serving champion's catalog (None before one is loaded: no movie is refused then)."""
        super().__init__(name="feedback-reader", daemon=True)
        self.consumer, self.producer, self.store, self.metrics = consumer, producer, store, metrics
        self.topics, self.stop, self.live, self.catalog = topics, stop, live, catalog
        self.problem: str | None = None
        self.handled = 0

    def run(self) -> None:
        """Read feedback in batches and credit it, with retries, until `stop`; closes the consumer on exit."""
        self.consumer.subscribe([self.topics.feedback])
        log.info("reading feedback from %s (group %s)", self.topics.feedback, self.topics.feedback_group)
        try:
            while not self.stop.is_set():
                first = self.consumer.poll(0.5)
                if first is None:
                    continue
                batch = [m for m in (first, *self.consumer.consume(BATCH - 1, 0.05)) if self._usable(m)]
                if batch:
                    self._with_retries(lambda b=batch: self.handle(b))
        except Exception:  # a bug here must not take the process (and its requests) down
            log.exception("feedback reader stopped on an unexpected error; requests are still answered")
        finally:
            self.consumer.close()

    def _usable(self, message: Message) -> bool:
        if message.error() is None:
            return True
        log.warning("feedback consumer error: %s", message.error())
        return False

    def _with_retries(self, operation: Any) -> None:
        delay = 0.1
        while not self.stop.is_set():
            try:
                operation()
                if self.problem is not None:
                    log.info("feedback: recovered (%s)", self.problem)
                self.problem = None
                return
            except Exception as exc:
                if self.problem is None:
                    log.warning("feedback batch failed (%s): retrying with backoff, uncommitted", describe(exc))
                self.problem = describe(exc)
                self.stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    def handle(self, batch: list[Message]) -> None:
        """Validate, join, record, apply to live histories, dead-letter, commit, in that order (module docstring)."""
        events: list[tuple[Message, Feedback]] = []
        dead: list[tuple[Message, str, str]] = []
        catalog = self.catalog()
        latest = time.time() + MAX_CLOCK_SKEW_S
        for message in batch:
            try:
                event = parse_feedback(message.value())
                if catalog is not None and event.movie_id not in catalog.position:
                    raise InvalidRequest(UNKNOWN_MOVIE, f"movie_id {event.movie_id} is not in the serving catalog")
                if event.epoch() > latest:  # it would hold the movie's entry against every real later rating
                    raise InvalidRequest(BAD_TIMESTAMP, f"field 'ts' is {event.ts[:40]!r}, in the future")
                events.append((message, event))
            except InvalidRequest as exc:
                dead.append((message, exc.reason, str(exc)))
            except Exception as exc:  # a bug in the parser: dead-lettered, never a stopped reader
                dead.append((message, PROCESSING_ERROR, describe(exc)))
        stored = self.store.results([event for _, event in events])
        credits: list[Credit] = []
        organic: Counter[str] = Counter()
        for (message, event), result in zip(events, stored, strict=True):
            try:
                joined = credit(event, result)
            except InvalidRequest as exc:
                dead.append((message, exc.reason, str(exc)))
                continue
            if joined is None:
                organic[organic_reason(event, result)] += 1
            else:
                credits.append(joined)
        fresh = self.store.record(credits, organic)
        refused = {id(m) for m, _, _ in dead}  # a dead-lettered event changes no history
        ratings = [LiveRating(e.user_id, e.movie_id, e.rating, e.epoch()) for m, e in events if id(m) not in refused]
        applied = self.live.apply(ratings)
        self._publish(dead)
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:  # partitions moved (a rebalance): the next reader credits nothing twice
            log.warning("feedback offset commit failed (%s): the batch will be read again", exc.args[0])
        by_variant = Counter(c.variant for c in credits)
        for variant, count in by_variant.items():
            self.metrics.feedback.labels(outcome="credited", variant=variant).inc(count)
        if len(credits) > fresh:
            self.metrics.feedback.labels(outcome="duplicate", variant="").inc(len(credits) - fresh)
        if organic:
            self.metrics.feedback.labels(outcome="organic", variant="").inc(sum(organic.values()))
        for _, reason, _ in dead:
            self.metrics.feedback_dead_letters.labels(reason=reason).inc()
        self.metrics.live_ratings.inc(applied)
        self.handled += len(batch)

    def _publish(self, dead: list[tuple[Message, str, str]]) -> None:
        """Dead letters to the feedback DLQ, acknowledged before the commit (a failure raises: retried). One the
        broker refuses for itself gets a minimal stand-in (size and digest only), dropped if refused too."""
        records: list[tuple[bytes | None, bytes, bool]] = []
        for message, reason, detail in dead:
            log.info("dead-lettering feedback %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(),
                     detail)  # fmt: skip
            record = dlq_record(message.value(), message.key(), reason, detail, message.topic(), message.partition(),
                                message.offset())  # fmt: skip
            records.append((dlq_key(message.key()), record, False))
        while records:
            outcomes: list[Any] = [None] * len(records)  # each record's delivery error, None when acknowledged
            for i, (key, record, _) in enumerate(records):
                try:
                    self.producer.produce(
                        self.topics.feedback_dlq,
                        record,
                        key,
                        on_delivery=lambda err, _m, i=i, out=outcomes: out.__setitem__(i, err),
                    )
                except KafkaException as exc:
                    outcomes[i] = exc.args[0]
            remaining = self.producer.flush(30)
            errors = [e for e in outcomes if e is not None and kafka_kind(e) is not Kind.REQUEST]
            if remaining or errors:
                raise RuntimeError(f"feedback dead letters not acknowledged: {errors[0] if errors else remaining}")
            refused = [(*r, e) for r, e in zip(records, outcomes, strict=True) if e is not None]
            records = []
            for key, record, stand_in, err in refused:
                if stand_in:
                    log.error("dropping a feedback dead letter the broker refuses even without the original: %s",
                              err.str())  # fmt: skip
                    self.metrics.dropped.labels(topic=self.topics.feedback_dlq).inc()
                    continue
                self.metrics.feedback_dead_letters.labels(reason=UNPUBLISHABLE).inc()
                records.append((key, unpublishable_record(self.topics.feedback_dlq, key, record, err.str()), True))
