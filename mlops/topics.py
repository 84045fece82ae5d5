"""Kafka topics and the consumer group (names fixed by docs/contracts.md)."""

from __future__ import annotations

from dataclasses import dataclass

REQUESTS = "inference-requests"
PREDICTIONS = "inference-predictions"
DLQ = "inference-requests-dlq"
CONSUMER_GROUP = "inference-consumers"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


# Requests are keyed by user id; three partitions let up to three consumers share the load.
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(REQUESTS, 3),
    TopicSpec(PREDICTIONS, 3),
    TopicSpec(DLQ, 1),
)
