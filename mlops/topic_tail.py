"""Read the newest records of a topic without joining a consumer group: what `dlq`, `status` and the console
show. Partitions are assigned by hand and nothing is committed, so reading never moves the consumers' offsets.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from mlops import kafka_auth
from mlops.settings import Settings


@dataclass(frozen=True)
class Record:
    """One record as read, raw bytes: decoding is the caller's (the DLQ, results and requests differ)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def reader(settings: Settings, timeout_s: float, role: str = kafka_auth.PLATFORM) -> Any:
    """A consumer for reading by hand-assigned partitions, signed in as `role`: never joins a group, never commits."""
    from confluent_kafka import Consumer

    return Consumer({
        **kafka_auth.client_config(settings, role),
        "group.id": f"inference-reader-{uuid.uuid4().hex}",  # assigned partitions only: never joins, never commits
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "socket.timeout.ms": int(timeout_s * 1000),
        "log_level": 0,
    })  # fmt: skip


def tail(settings: Settings, topic: str, per_partition: int, timeout_s: float, read_s: float,
         role: str = kafka_auth.PLATFORM) -> list[Record]:  # fmt: skip
    """The last `per_partition` records of every partition of `topic` (unordered); reading stops at each
    partition's end or after `read_s` seconds. A missing topic raises LookupError."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer = reader(settings, timeout_s, role)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise LookupError(f"topic {topic!r} does not exist on {settings.kafka_bootstrap_servers} (./run.sh up)")
        assignment = []
        for p in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                assignment.append(TopicPartition(topic, p, max(low, high - per_partition)))
        if not assignment:
            return []
        consumer.assign(assignment)
        pending = {tp.partition for tp in assignment}
        records: list[Record] = []
        deadline = time.monotonic() + read_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                continue
            records.append(Record(msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value()))
        return records
    finally:
        consumer.close()
