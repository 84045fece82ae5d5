"""The Kafka page's data: topics, partitions, end offsets, the consumer group's lag, the latest messages
of a topic and the DLQ decoded. Read-only: the clients here never join a group nor commit an offset.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlops import schemas
from mlops.kafka_auth import CONSOLE
from mlops.settings import Settings
from mlops.status import TopicOffsets, topic_offsets
from mlops.topic_tail import reader, tail
from mlops.topics import DLQ

TIMEOUT_S = 3.0
MAX_MESSAGES = 200


@dataclass(frozen=True)
class TopicRow:
    """One topic on the Kafka page: partitions, end offsets, and the inference group's lag where known."""

    name: str
    partitions: int
    end_offsets: dict[int, int]
    lag: int | None  # of the inference consumer group; None: the group never committed there


@dataclass(frozen=True)
class Message:
    """One record decoded for display: UTC time, key and value as text."""

    partition: int
    offset: int
    timestamp: str
    key: str
    value: str


def _require_broker(settings: Settings) -> None:
    """Fail in words at once when the broker is down (the Kafka client would retry for its whole timeout)."""
    from mlops.services.health import bootstrap_address, tcp_open

    if not tcp_open(*bootstrap_address(settings)):
        raise ConnectionError(f"the broker at {settings.kafka_bootstrap_servers} is not reachable")


def _consumer(settings: Settings):
    _require_broker(settings)
    return reader(settings, TIMEOUT_S, CONSOLE)


def topics(settings: Settings) -> list[TopicRow]:
    """Every topic of the broker (internal ones aside), the platform's with the group's lag."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(settings)
    try:
        platform = {t.name: t for t in topic_offsets(settings, CONSOLE)}
        metadata = consumer.list_topics(timeout=TIMEOUT_S)
        rows = []
        for name in sorted(metadata.topics):
            if name.startswith("__"):
                continue
            known: TopicOffsets | None = platform.get(name)
            if known is not None:
                rows.append(TopicRow(name, len(known.end_offsets), dict(known.end_offsets), known.lag))
                continue
            parts = sorted(metadata.topics[name].partitions)
            ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=TIMEOUT_S)[1] for p in parts}
            rows.append(TopicRow(name, len(parts), ends, None))
        return rows
    finally:
        consumer.close()


def latest(settings: Settings, topic: str, n: int = 20) -> list[tuple[int, int, int, bytes | None, bytes | None]]:
    """The last `n` records of `topic` over all partitions, newest first: (partition, offset, ms, key, value).

    Each partition is read from n before its end up to its end, so at most n per partition.
    """
    n = max(1, min(n, MAX_MESSAGES))
    _require_broker(settings)
    records = tail(settings, topic, n, TIMEOUT_S, TIMEOUT_S, CONSOLE)
    records.sort(key=lambda r: (r.timestamp_ms, r.offset), reverse=True)
    return [(r.partition, r.offset, r.timestamp_ms, r.key, r.value) for r in records[:n]]


def text(raw: bytes | None, limit: int = 2000) -> str:
    """Bytes as readable text: UTF-8 where it decodes, escapes where it does not, cut at `limit` chars."""
    if raw is None:
        return "(none)"
    shown = raw.decode("utf-8", errors="backslashreplace")
    return shown if len(shown) <= limit else shown[:limit] + f"… ({len(raw)} bytes)"


def when(ms: int) -> str:
    """A record timestamp (ms) as UTC text; '-' for a record without one."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms > 0 else "-"


def messages(settings: Settings, topic: str, n: int = 20) -> list[Message]:
    """The latest `n` records of `topic`, decoded for the Kafka page."""
    return [Message(p, o, when(ms), text(k), text(v)) for p, o, ms, k, v in latest(settings, topic, n)]


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record for the DLQ page: why it failed, where it came from, the original message."""

    offset: int
    reason: str
    detail: str
    source: str  # topic/partition@offset
    failed_at: str
    original: str  # decoded text of the original message
    original_size: int
    key: str


def decode_dead_letter(offset: int, raw: bytes | None) -> DeadLetter:
    """One DLQ record for display; a record that is not the DLQ format is shown as such, not raised."""
    try:
        doc: dict[str, Any] = schemas.parse_dlq_record(raw or b"")
    except (ValueError, KeyError, TypeError) as exc:
        return DeadLetter(offset, "(unreadable record)", f"{type(exc).__name__}: {exc}", "-", "-", text(raw), 0, "")
    key = doc.get("original_key")
    return DeadLetter(
        offset=offset,
        reason=str(doc.get("reason")),
        detail=str(doc.get("detail")),
        source=f"{doc.get('source_topic')} p{doc.get('source_partition')}@{doc.get('source_offset')}",
        failed_at=str(doc.get("failed_at", "-")),
        original=text(doc["original"]),
        original_size=int(doc.get("original_size", len(doc["original"]))),
        key=text(base64.b64decode(key)) if key else "(none)",
    )


def dead_letters(settings: Settings, n: int = 50, reason: str | None = None) -> list[DeadLetter]:
    """The latest `n` DLQ records decoded; `reason` filters among those `n`, not the whole topic."""
    records = [decode_dead_letter(o, v) for _, o, _, _, v in latest(settings, DLQ, n)]
    return [r for r in records if reason in (None, "", r.reason)]
