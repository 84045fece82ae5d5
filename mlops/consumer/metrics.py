"""Prometheus metrics and the health endpoint of one consumer process (`/metrics`, `/healthz`).

Each process has its own registry (several consumers may live in one test process) and serves it on
INFERENCE_METRICS_PORT + its index, so N local processes never collide. The server binds
INFERENCE_METRICS_HOST: 127.0.0.1 by default like every local service, 0.0.0.0 in Docker (where
Prometheus scrapes it from another container). `/healthz` answers a one-line reason, never a traceback.

Names and labels are part of the contract (docs/contracts.md, "Consumer metrics"). No `_created` series:
they double every counter's output and nothing reads them. A failure is counted once, as what happened to
it: dead-lettered (`inference_dead_letters_total{reason}`, the DLQ record's reason) or retried
(`inference_retries_total{reason}`, `<dependency>_unavailable` / `_permanent`, `commit_failed`, ...). The
answers' `kind` label says what their scores mean: `p_like` = P(rating >= 4) in score answers,
`rank_score` = the model family's ranking score in top-k answers; their `variant` label, who answered (`champion` or
`challenger`, see `mlops.variants`). The feedback reader's counts are here too (`inference_feedback_*`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from mlops.schemas import SCORE, TOPK
from mlops.variants import CHAMPION

log = logging.getLogger(__name__)

disable_created_metrics()

# What the score in an answer of each request type means (the `kind` label of inference_requests_total).
SCORE_KIND = {SCORE: "p_like", TOPK: "rank_score"}

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000)


class ConsumerMetrics:
    """The consumer's instruments, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inference_requests",
            "Requests answered, by type; kind = what the scores mean (p_like: P(rating >= 4), rank_score: "
            "the model family's order, higher first); variant = who answered (champion, challenger)",
            ["type", "kind", "variant"],
            registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "inference_dead_letters", "Requests dead-lettered, by the DLQ record's reason", ["reason"], registry=r
        )
        self.retries = Counter(
            "inference_retries", "Failures retried (nothing skipped), by cause", ["reason"], registry=r
        )
        self.lag = Gauge(
            "inference_consumer_lag", "Requests behind this consumer's last commit, per partition it consumes",
            ["partition"], registry=r,
        )  # fmt: skip
        self.model_load_seconds = Gauge(
            "inference_model_load_seconds", "Time the last model load took (registry to ready to serve)", registry=r
        )
        self.fallbacks = Counter("inference_fallbacks", "Answers from the cold-start popularity fallback", registry=r)
        self.redelivered = Counter(
            "inference_redelivered", "Requests already answered: the stored result was republished", registry=r
        )
        self.batch_size = Histogram("inference_batch_size", "Messages per micro-batch", buckets=_BATCH_BUCKETS,
                                    registry=r)  # fmt: skip
        self.batch_seconds = Histogram(
            "inference_batch_seconds", "Time to process one micro-batch (validate to commit)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "inference_end_to_end_seconds", "Request message timestamp to result published and committed",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "inference_model_info", "The models serving (1 = current), by variant",
            ["model_version", "feature_set", "variant"], registry=r,
        )  # fmt: skip
        self._serving: dict[str, tuple[str, str, str]] = {}
        self.challenger_share = Gauge(
            "inference_challenger_share", "Share of users the challenger serves now (0: none loaded, or off)",
            registry=r,
        )  # fmt: skip
        self.feedback = Counter(
            "inference_feedback", "Feedback events read, by outcome: credited to a variant, organic (no or "
            "unknown request id), duplicate (credited before), dead_lettered", ["outcome", "variant"], registry=r,
        )  # fmt: skip
        self.feedback_dead_letters = Counter(
            "inference_feedback_dead_letters", "Feedback events dead-lettered, by reason", ["reason"], registry=r
        )
        self.live_ratings = Counter(
            "inference_live_ratings", "Rating events applied to users' live history (mlops.live_ratings)", registry=r
        )
        self.dropped = Counter("inference_dropped_records", "Records the broker refused even as a minimal dead "
                               "letter (dropped, logged)", ["topic"], registry=r)  # fmt: skip
        self.reloads = Counter("inference_model_reloads", "Hot swaps of the model", registry=r)
        self.last_batch = Gauge("inference_last_batch_timestamp_seconds", "When the last batch committed", registry=r)
        self.halted = Gauge(
            "inference_halted", "1 while consumption is stopped on a permanent error (see /healthz)", registry=r
        )

    def set_model(self, model_version: str | None, feature_set: str | None, variant: str = CHAMPION) -> None:
        """The model `variant` serves now (None: that variant serves nobody)."""
        previous = self._serving.pop(variant, None)
        if previous is not None:
            self.model_info.remove(*previous)
        if model_version is not None:
            labels = (model_version, str(feature_set), variant)
            self.model_info.labels(*labels).set(1)
            self._serving[variant] = labels


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.metrics.registry))
        elif self.path.startswith("/healthz"):
            try:
                healthy, detail = self.server.health()
            except Exception as exc:  # the reason in one line; the traceback goes to the log only
                log.exception("health check failed")
                problem = f"health check failed: {type(exc).__name__}"
                healthy, detail = False, {"status": "unhealthy", "problem": problem}
            self._send(200 if healthy else 503, "application/json", json.dumps(detail).encode())
        else:
            self._send(404, "text/plain", b"try /metrics or /healthz\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: keep the log quiet
        pass


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, metrics: ConsumerMetrics, health: Callable[[], tuple[bool, dict]]) -> None:
        super().__init__((host, port), _Handler)
        self.metrics = metrics
        self.health = health


def serve(
    port: int, metrics: ConsumerMetrics, health: Callable[[], tuple[bool, dict]], host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz in a daemon thread; a taken port fails here, naming it."""
    try:
        server = _MetricsServer(host, port, metrics, health)
    except OSError as exc:
        raise OSError(f"inference metrics port {host}:{port} is taken ({exc}); pass --index or --metrics-port") from exc
    threading.Thread(target=server.serve_forever, name=f"metrics:{port}", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /healthz", host, server.server_address[1])
    return server
