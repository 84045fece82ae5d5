"""Send one request through the real stream and wait for its answer: the console's Try-it page and the
CLI verbs share this, so "what the stream answered" means the same everywhere.

The request goes on `inference-requests` (keyed by user id, as any client sends it); the answer is read
back from Redis (`prediction:{request_id}`), which a consumer writes before it publishes the result and
commits, so finding it there means the stream answered. Polled: one answer, milliseconds apart.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from mlops import kafka_auth
from mlops.schemas import (
    MAX_K,
    MIN_K,
    PLATFORM,
    Request,
    TopKRequest,
    encode_request,
    parse_result,
    prediction_key,
    request_key,
)
from mlops.settings import Settings
from mlops.topics import REQUESTS


class NoAnswer(RuntimeError):
    """The request was not delivered, or no answer came in time: the message says which and what to check."""


@dataclass(frozen=True)
class Answer:
    """A request and the stream's answer to it, as the caller saw it."""

    request: Request
    result: dict[str, Any]  # the result as the contract defines it (schemas.parse_result)
    latency_ms: float  # send to answer found, as this client saw it

    @property
    def recommendations(self) -> list[tuple[int, float]]:
        """(movie id, score) pairs of a top-k answer, best first; [] for a score answer."""
        return [(int(r["movie_id"]), float(r["score"])) for r in self.result.get("recommendations", [])]


def new_request_id(prefix: str) -> str:
    """Unique per request (a reused id with another request would be dead-lettered as a conflict)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def topk_request(user_id: int, k: int = 10, prefix: str = "console") -> TopKRequest:
    """A top-k request with a fresh id; a k outside MIN_K..MAX_K is refused here, not dead-lettered."""
    if not MIN_K <= k <= MAX_K:
        raise ValueError(f"k is {k}; it must be in {MIN_K}..{MAX_K}")
    return TopKRequest(new_request_id(prefix), user_id, k, PLATFORM)  # the console's and the CLI's: platform


def send(settings: Settings, request: Request, timeout_s: float = 10.0, role: str = kafka_auth.PLATFORM) -> None:
    """Produce the request, signed in as `role` (mlops.kafka_auth), and wait for the broker's acknowledgement."""
    from confluent_kafka import Producer

    from mlops.consumer.kafka import producer_config

    errors: list[str] = []
    config = producer_config(settings, role=role, **{"linger.ms": 0, "message.timeout.ms": int(timeout_s * 1000)})
    producer = Producer(config)
    producer.produce(REQUESTS, encode_request(request), request_key(request.user_id),
                     on_delivery=lambda err, _msg: errors.append(str(err)) if err is not None else None)  # fmt: skip
    if producer.flush(timeout_s) > 0 or errors:
        reason = errors[0] if errors else f"not acknowledged within {timeout_s:.0f}s"
        raise NoAnswer(f"could not send the request to {REQUESTS} on {settings.kafka_bootstrap_servers}: {reason}")


def wait_for_answer(settings: Settings, request_id: str, timeout_s: float = 15.0, poll_s: float = 0.02) -> dict:
    """The stored result of `request_id`, polled from Redis until it appears or `timeout_s` passes."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            raw = client.get(prediction_key(request_id))
            if raw is not None:
                return parse_result(raw)
            if time.monotonic() > deadline:
                raise NoAnswer(
                    f"no answer to request {request_id} within {timeout_s:.0f}s: is an inference consumer "
                    "running and serving a model? (./run.sh status)"
                )
            time.sleep(poll_s)
    finally:
        client.close()


def ask(settings: Settings, request: Request, timeout_s: float = 15.0, role: str = kafka_auth.PLATFORM) -> Answer:
    """Send `request` through the stream (as Kafka principal `role`) and return the answer the consumers stored."""
    started = time.perf_counter()
    send(settings, request, timeout_s=min(timeout_s, 10.0), role=role)
    result = wait_for_answer(settings, request.request_id, timeout_s)
    return Answer(request, result, (time.perf_counter() - started) * 1000)
