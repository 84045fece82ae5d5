"""Kafka topics and the consumer group (names fixed by docs/contracts.md)."""

from __future__ import annotations

from dataclasses import dataclass

REQUESTS = "inference-requests"
PREDICTIONS = "inference-predictions"
DLQ = "inference-requests-dlq"
CONSUMER_GROUP = "inference-consumers"
FEEDBACK = "inference-feedback"
FEEDBACK_DLQ = "inference-feedback-dlq"
FEEDBACK_GROUP = "inference-feedback-consumers"
"""Feedback is read by every consumer process in a group of its own: its offsets never mix with the requests'."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the platform creates, with its partition count (the most consumers that can share it)."""

    name: str
    partitions: int


# Requests are keyed by user id; three partitions let up to three consumers share the load.
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(REQUESTS, 3),
    TopicSpec(PREDICTIONS, 3),
    TopicSpec(DLQ, 1),
    TopicSpec(FEEDBACK, 3),  # keyed by user id, like the requests
    TopicSpec(FEEDBACK_DLQ, 1),
)
