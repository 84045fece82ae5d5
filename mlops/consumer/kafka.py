"""librdkafka configurations of the stream's clients, from the settings."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from mlops import kafka_auth
from mlops.settings import Settings
from mlops.topics import CONSUMER_GROUP, DLQ, FEEDBACK, FEEDBACK_DLQ, FEEDBACK_GROUP, PREDICTIONS, REQUESTS, TOPICS


@dataclass(frozen=True)
class StreamTopics:
    """The topics and group one consumer works with: the contract's names, or a private namespace of
    them (`namespaced`) so that a benchmark or a test can run a consumer without the stack's consumers
    taking its requests."""

    requests: str = REQUESTS
    predictions: str = PREDICTIONS
    dlq: str = DLQ
    group: str = CONSUMER_GROUP
    feedback: str = FEEDBACK
    feedback_dlq: str = FEEDBACK_DLQ
    feedback_group: str = FEEDBACK_GROUP

    @classmethod
    def namespaced(cls, namespace: str | None) -> StreamTopics:
        """Private topics and groups suffixed with `namespace` (a benchmark's or test's); the stack's without one."""
        if not namespace:
            return cls()
        return cls(f"{REQUESTS}.{namespace}", f"{PREDICTIONS}.{namespace}", f"{DLQ}.{namespace}",
                   f"{CONSUMER_GROUP}.{namespace}", f"{FEEDBACK}.{namespace}", f"{FEEDBACK_DLQ}.{namespace}",
                   f"{FEEDBACK_GROUP}.{namespace}")  # fmt: skip

    def partitions(self) -> dict[str, int]:
        """Partition count of each topic (the contract's counts)."""
        counts = {t.name: t.partitions for t in TOPICS}
        return {self.requests: counts[REQUESTS], self.predictions: counts[PREDICTIONS], self.dlq: counts[DLQ],
                self.feedback: counts[FEEDBACK], self.feedback_dlq: counts[FEEDBACK_DLQ]}  # fmt: skip


def ensure_topics(settings: Settings, topics: StreamTopics) -> None:
    """Create the namespace's topics if missing (the stack's own topics are provisioned by `up`)."""
    admin = AdminClient(kafka_auth.client_config(settings, kafka_auth.PLATFORM))
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(name, n, 1) for name, n in topics.partitions().items() if name not in existing]
    for future in admin.create_topics(wanted).values() if wanted else ():
        try:
            future.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    wait_for_topics(admin, topics.partitions())


def wait_for_topics(admin: AdminClient, partitions: dict[str, int], timeout: float = 30.0) -> None:
    """Block until the broker serves each topic with all its partitions led. Apache Kafka (KRaft) answers
    CreateTopics once the controller has committed them, a moment before the broker's metadata has them:
    a client asking in between gets UNKNOWN_TOPIC_OR_PART."""
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=10).topics
        pending = [
            name for name, count in partitions.items()
            if name not in meta or meta[name].error is not None or len(meta[name].partitions) < count
            or any(p.leader < 0 for p in meta[name].partitions.values())
        ]  # fmt: skip
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {pending} not served by the broker {timeout:.0f}s after their creation")
        time.sleep(0.1)


def delete_topics(settings: Settings, topics: StreamTopics) -> None:
    """Best-effort removal of a namespace's topics once its benchmark or test is done with them."""
    admin = AdminClient(kafka_auth.client_config(settings, kafka_auth.PLATFORM))
    for future in admin.delete_topics(list(topics.partitions())).values():
        with contextlib.suppress(Exception):  # best effort: a benchmark's leftovers are harmless
            future.result()


def consumer_config(settings: Settings, group: str = CONSUMER_GROUP, *, role: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits (offsets move only after results are written); a short session so a dead
    process's partitions move to the others quickly; fetches return as soon as data arrives. Signed in as
    `role` (mlops.kafka_auth)."""
    return {
        **kafka_auth.client_config(settings, role),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 10,
        "queued.max.messages.kbytes": 65536,
        **overrides,
    }


def producer_config(settings: Settings, *, role: str, **overrides: Any) -> dict[str, Any]:
    """acks=all and unlimited retries: a result is either on the topic or the batch is not committed.
    Signed in as `role` (mlops.kafka_auth)."""
    return {
        **kafka_auth.client_config(settings, role),
        "acks": "all",
        "linger.ms": 1,
        "message.timeout.ms": 30000,
        "queue.buffering.max.messages": 1_000_000,
        **overrides,
    }
