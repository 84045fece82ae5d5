"""librdkafka configurations of the stream's clients, from the settings."""

from __future__ import annotations

from typing import Any

from mlops.settings import Settings
from mlops.topics import CONSUMER_GROUP


def consumer_config(settings: Settings, group: str = CONSUMER_GROUP, **overrides: Any) -> dict[str, Any]:
    """Manual commits (offsets move only after results are written); a short session so a dead
    process's partitions move to the others quickly; fetches return as soon as data arrives."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 10,
        "queued.max.messages.kbytes": 65536,
        **overrides,
    }


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """acks=all and unlimited retries: a result is either on the topic or the batch is not committed."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "acks": "all",
        "linger.ms": 1,
        "message.timeout.ms": 30000,
        "queue.buffering.max.messages": 1_000_000,
        **overrides,
    }
