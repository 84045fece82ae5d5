"""The Stream page's data: a sampling thread (consumers' `/metrics` + broker offsets) and, when
PROMETHEUS_URL answers, Prometheus' own history of the consumer-side series.

Broker figures (requests coming in, lag per partition, DLQ growth) always come from the broker itself:
it is the truth whatever scrapes it. Consumer figures (answers per second, p50/p99 end-to-end latency)
come from Prometheus when it runs (it has the longer history), else from the samples kept here.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

import requests

from mlops import kafka_auth
from mlops.console import samples
from mlops.console.samples import Ring, Sample
from mlops.services import health
from mlops.settings import Settings
from mlops.topics import CONSUMER_GROUP, DLQ, REQUESTS

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 2.0
WINDOW_S = 600.0
TIMEOUT_S = 2.0


def consumer_metric_urls(settings: Settings, consumers_host: str | None = None) -> list[str]:
    """Local mode: INFERENCE_METRICS_PORT + i on 127.0.0.1. Docker mode: every address the replicas'
    service name resolves to (compose DNS), each on INFERENCE_METRICS_PORT."""
    port = settings.inference_metrics_port
    if consumers_host:
        try:
            infos = socket.getaddrinfo(consumers_host, port, type=socket.SOCK_STREAM)
        except OSError:
            return []
        return sorted({f"http://{info[4][0]}:{port}/metrics" for info in infos})
    return [f"http://127.0.0.1:{port + i}/metrics" for i in range(settings.inference_consumers)]


class BrokerReader:
    """A long-lived broker client for the samples: end offsets and the consumer group's commits."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer = None

    def _client(self):
        from confluent_kafka import Consumer

        if self._consumer is None:
            self._consumer = Consumer({
                **kafka_auth.client_config(self.settings, kafka_auth.CONSOLE),
                "group.id": CONSUMER_GROUP,  # never subscribes: only reads the group's committed offsets
                "enable.auto.commit": False,
                "socket.timeout.ms": int(TIMEOUT_S * 1000),
                "log_level": 0,
            })  # fmt: skip
        return self._consumer

    def read(self) -> tuple[dict[int, int], dict[int, int], int | None]:
        """(end offsets, committed offsets) of the requests topic, and the DLQ's total end offset."""
        from confluent_kafka import TopicPartition

        from mlops.services.health import bootstrap_address, tcp_open

        if not tcp_open(*bootstrap_address(self.settings)):
            raise ConnectionError(f"nothing listens on {self.settings.kafka_bootstrap_servers}")
        consumer = self._client()
        metadata = consumer.list_topics(timeout=TIMEOUT_S)
        ends: dict[int, int] = {}
        committed: dict[int, int] = {}
        dlq_end = None
        if REQUESTS in metadata.topics:
            parts = sorted(metadata.topics[REQUESTS].partitions)
            for p in parts:
                ends[p] = consumer.get_watermark_offsets(TopicPartition(REQUESTS, p), timeout=TIMEOUT_S)[1]
            tps = consumer.committed([TopicPartition(REQUESTS, p) for p in parts], timeout=TIMEOUT_S)
            committed = {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
        if DLQ in metadata.topics:
            dlq_end = sum(
                consumer.get_watermark_offsets(TopicPartition(DLQ, p), timeout=TIMEOUT_S)[1]
                for p in metadata.topics[DLQ].partitions
            )
        return ends, committed, dlq_end

    def close(self) -> None:
        """Drop the client, so the next read reconnects (after a broker failure, or on stop)."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def scrape(urls: list[str]) -> list[samples.ConsumerCounters]:
    """The counters of each consumer that answers on its `/metrics`; one that does not is left out."""
    out = []
    for url in urls:
        try:
            response = requests.get(url, timeout=TIMEOUT_S)
            response.raise_for_status()
            out.append(samples.parse_metrics(response.text))
        except (requests.RequestException, ValueError):
            continue
    return out


class Sampler(threading.Thread):
    """Takes a sample every SAMPLE_EVERY_S into `ring`; a source that fails leaves its part empty."""

    def __init__(self, settings: Settings, consumers_host: str | None = None) -> None:
        super().__init__(name="console-sampler", daemon=True)
        self.settings = settings
        self.consumers_host = consumers_host
        self.ring = Ring(int(WINDOW_S / SAMPLE_EVERY_S) + 1)
        self.broker = BrokerReader(settings)
        self.broker_problem: str | None = None
        self._stop = threading.Event()

    def sample_once(self) -> Sample:
        """Take one sample into the ring and return it; a broker failure goes to `broker_problem`."""
        urls = consumer_metric_urls(self.settings, self.consumers_host)
        scraped = scrape(urls)
        try:
            ends, committed, dlq_end = self.broker.read()
            self.broker_problem = None
        except Exception as exc:  # any broker failure: the page says so, the thread goes on
            self.broker.close()
            ends, committed, dlq_end = {}, {}, None
            self.broker_problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        sample = Sample(time.time(), samples.merge(scraped) if scraped else None, len(scraped), ends, committed,
                        dlq_end)  # fmt: skip
        self.ring.add(sample)
        return sample

    def run(self) -> None:
        """The thread: a sample every SAMPLE_EVERY_S until `stop`; a failed sample is logged, not fatal."""
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                log.exception("console sampler: sample failed")
            self._stop.wait(SAMPLE_EVERY_S)
        self.broker.close()

    def stop(self) -> None:
        """End the loop after the current sample (the thread closes the broker client itself)."""
        self._stop.set()


# --- Prometheus -------------------------------------------------------------------------------------------

PROMQL = {
    "answered_per_s": f"sum(rate({samples.REQUESTS_METRIC}_total[1m]))",
    "p50_ms": f"1000 * histogram_quantile(0.5, sum by (le) (rate({samples.LATENCY_METRIC}_bucket[1m])))",
    "p99_ms": f"1000 * histogram_quantile(0.99, sum by (le) (rate({samples.LATENCY_METRIC}_bucket[1m])))",
}


def prometheus_answers(settings: Settings) -> bool:
    """Whether Prometheus is configured and ready, i.e. whether its longer history can be used."""
    if not settings.prometheus_url:
        return False
    try:
        health.http_ok(health.prometheus_ready_url(settings))
        return True
    except requests.RequestException:
        return False


def matrix_points(doc: dict) -> list[tuple[float, float | None]]:
    """(time, value) of the first series of a `query_range` answer; NaN (no data in the step) as None."""
    result = (doc.get("data") or {}).get("result") or []
    if not result:
        return []
    points = []
    for t, v in result[0].get("values", []):
        value = float(v)
        points.append((float(t), None if value != value else value))
    return points


def prometheus_series(settings: Settings, seconds: float = WINDOW_S, step_s: float = 5) -> dict[str, list]:
    """The consumer-side series from Prometheus over the last `seconds`: name -> [(time, value)]."""
    end = time.time()
    out = {}
    for name, query in PROMQL.items():
        response = requests.get(
            settings.prometheus_url.rstrip("/") + "/api/v1/query_range",
            params={"query": query, "start": end - seconds, "end": end, "step": step_s},
            timeout=TIMEOUT_S,
        )
        response.raise_for_status()
        out[name] = matrix_points(response.json())
    return out


@dataclass(frozen=True)
class StreamView:
    """What the Stream page shows."""

    source: str  # where the consumer-side figures came from, in words
    window: samples.Window
    consumer_series: dict[str, list[tuple[float, float | None]]]
    lag: dict[int, int]
    consumers_answering: int
    consumers_expected: int
    broker_problem: str | None


def view(sampler: Sampler, settings: Settings) -> StreamView:
    """The page's figures: the sampler's window, with Prometheus' consumer series when it answers."""
    snapshot = sampler.ring.snapshot()
    win = samples.window(snapshot)
    consumer_series = {
        "answered_per_s": list(zip(win.times, win.answered_per_s, strict=True)),
        "p50_ms": list(zip(win.times, win.p50_ms, strict=True)),
        "p99_ms": list(zip(win.times, win.p99_ms, strict=True)),
    }
    source = f"sampled from the consumers' /metrics every {SAMPLE_EVERY_S:.0f}s by the console"
    if prometheus_answers(settings):
        try:
            consumer_series = prometheus_series(settings)
            source = f"Prometheus at {settings.prometheus_url}"
        except (requests.RequestException, ValueError) as exc:
            source += f" (Prometheus at {settings.prometheus_url} failed: {type(exc).__name__})"
    latest = snapshot[-1] if snapshot else None
    expected = len(consumer_metric_urls(settings, sampler.consumers_host))
    return StreamView(
        source=source,
        window=win,
        consumer_series=consumer_series,
        lag=samples.lag_per_partition(latest) if latest else {},
        consumers_answering=latest.consumers_answering if latest else 0,
        consumers_expected=expected,
        broker_problem=sampler.broker_problem,
    )
