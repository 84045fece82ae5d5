"""`./run.sh status`: the services table plus what flows through them, for either backend.

Each item is read on its own and shown as "-" (service unreachable) or "none yet" (reachable, nothing
there yet): a fresh or half-started stack gives a readable report, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlops.feature_store import CURRENT
from mlops.registry import champion_version
from mlops.settings import Settings
from mlops.topics import CONSUMER_GROUP, DLQ, TOPICS

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ServiceRow:
    name: str
    state: str  # "up", "down", "unhealthy"
    pid: int | None
    url: str
    note: str = ""


@dataclass(frozen=True)
class TopicOffsets:
    name: str
    end_offsets: dict[int, int]
    start_offsets: dict[int, int]
    committed: dict[int, int] | None = None  # of CONSUMER_GROUP; None when the group never committed

    @property
    def size(self) -> int:
        return sum(self.end_offsets[p] - self.start_offsets.get(p, 0) for p in self.end_offsets)

    @property
    def lag(self) -> int | None:
        """Records of the topic the group has not committed past (a partition never committed: from its start)."""
        if self.committed is None:
            return None
        return sum(self.end_offsets[p] - self.committed.get(p, self.start_offsets.get(p, 0)) for p in self.end_offsets)


def topic_offsets(settings: Settings) -> list[TopicOffsets]:
    """End offsets per partition of the platform's topics and the consumer group's lag on each."""
    from confluent_kafka import Consumer, TopicPartition

    from mlops.services.health import bootstrap_address, tcp_open

    if not tcp_open(*bootstrap_address(settings)):
        raise ConnectionError(f"nothing listens on {settings.kafka_bootstrap_servers}")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": CONSUMER_GROUP,
            "enable.auto.commit": False,
            "socket.timeout.ms": int(TIMEOUT_S * 1000),
            "log_level": 0,  # a report, not a log: failures surface as "-" below
        }
    )
    result: list[TopicOffsets] = []
    try:
        metadata = consumer.list_topics(timeout=TIMEOUT_S)
        for spec in TOPICS:
            if spec.name not in metadata.topics:
                continue
            partitions = sorted(metadata.topics[spec.name].partitions)
            low, high = {}, {}
            for p in partitions:
                low[p], high[p] = consumer.get_watermark_offsets(TopicPartition(spec.name, p), timeout=TIMEOUT_S)
            committed = consumer.committed([TopicPartition(spec.name, p) for p in partitions], timeout=TIMEOUT_S)
            offsets = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
            result.append(TopicOffsets(spec.name, high, low, offsets or None))
    finally:
        consumer.close()
    true_ends = _probe_ends(settings, {(t.name, p): end for t in result for p, end in t.end_offsets.items()})
    for topic in result:
        topic.end_offsets.update({p: true_ends[(topic.name, p)] for p in topic.end_offsets})
    return result


def _probe_ends(settings: Settings, reported: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """The real end offsets: the reported high watermark, or one past the last record found from there.

    Tansu reports the high watermark as the last *batch's* base offset + 1, not the last record's offset
    + 1; reading the tail of each partition once gives the true end (on Apache Kafka it changes nothing).
    """
    from confluent_kafka import Consumer, TopicPartition

    ends = dict(reported)
    tails = [TopicPartition(topic, p, end - 1) for (topic, p), end in reported.items() if end > 0]
    if not tails:
        return ends
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "mlops-status-probe",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        consumer.assign(tails)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                break
            if msg.error() is None:
                key = (msg.topic(), msg.partition())
                ends[key] = max(ends[key], msg.offset() + 1)
    finally:
        consumer.close()
    return ends


def feature_set_version(settings: Settings) -> str | None:
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        value = client.get(CURRENT)
    finally:
        client.close()
    return value.decode() if value else None


def _read(fn: Callable[[], object]) -> tuple[object, str | None]:
    import redis
    import requests

    try:
        return fn(), None
    except (ConnectionError, redis.ConnectionError, requests.ConnectionError):
        return None, "not reachable"
    except Exception as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:120]


def services_table(rows: list[ServiceRow]) -> str:
    header = ("service", "state", "pid", "url", "")
    lines = [header] + [(r.name, r.state, str(r.pid or "-"), r.url or "-", r.note) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(line)).rstrip() for line in lines
    )


def stream_report(settings: Settings) -> str:
    out = []
    offsets, error = _read(lambda: topic_offsets(settings))
    if error:
        out.append(f"topics: -  (broker {error})")
        out.append("DLQ size: -")
    else:
        out.append(f"topics (end offset per partition; lag of consumer group {CONSUMER_GROUP!r}):")
        by_name = {t.name: t for t in offsets}
        for spec in TOPICS:
            topic = by_name.get(spec.name)
            if topic is None:
                out.append(f"  {spec.name:<26} missing (run ./run.sh up)")
                continue
            ends = " ".join(f"p{p}={o}" for p, o in sorted(topic.end_offsets.items()))
            lag = "-" if topic.lag is None else str(topic.lag)
            out.append(f"  {spec.name:<26} {ends:<30} lag {lag}")
        dlq = by_name.get(DLQ)
        out.append(f"DLQ size: {dlq.size if dlq else '-'}")
    version, error = _read(lambda: feature_set_version(settings))
    out.append(f"feature set (fs:current): {'-  (' + error + ')' if error else version or 'none yet'}")
    champion, error = _read(lambda: champion_version(settings, timeout_s=TIMEOUT_S))
    label = f"champion model ({settings.model_name}@champion)"
    out.append(f"{label}: {'-  (' + error + ')' if error else ('v' + champion if champion else 'none yet')}")
    return "\n".join(out)


def drift_summary(metrics_text: str) -> str:
    """One consumer's drift in a line, from its /metrics: the worst input PSI, the prediction's PSI, the window."""
    from prometheus_client.parser import text_string_to_metric_families

    from mlops.consumer import drift_watch as dw
    from mlops.drift import PSI_THRESHOLD

    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    available = samples.get(dw.REFERENCE_AVAILABLE)
    if not available:
        return "no model served yet"
    version = available[0].labels["model_version"]
    if available[0].value == 0:
        return f"v{version}: unavailable (no reference profile for this model version)"
    rows = int(next((x.value for x in samples.get(dw.WINDOW_ROWS, [])), 0))
    psi = samples.get(dw.FEATURE_PSI)
    if not psi:
        return f"v{version}: collecting ({rows} rows in the window)"
    worst = max(psi, key=lambda x: x.value)
    drifted = sum(x.value > PSI_THRESHOLD for x in psi)
    prediction = next((f"{x.value:.3f}" for x in samples.get(dw.PREDICTION_PSI, [])), "-")
    verdict = f"DRIFT in {drifted} input(s)" if drifted else "no drift"
    return (f"v{version}: {verdict} (PSI > {PSI_THRESHOLD}); worst input {worst.labels['feature']} PSI "
            f"{worst.value:.3f}, prediction PSI {prediction}; {rows} rows")  # fmt: skip


def drift_report(settings: Settings) -> str:
    """Drift as each consumer exports it (local mode: consumer i on INFERENCE_METRICS_PORT + i)."""
    import requests

    out = ["drift (served model inputs and predictions vs the model's reference profile):"]
    for index in range(settings.inference_consumers):
        port = settings.inference_metrics_port + index

        def read(port: int = port) -> str:
            response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S)
            response.raise_for_status()
            return drift_summary(response.text)

        summary, error = _read(read)
        out.append(f"  inference-{index}  {'-  (' + error + ')' if error else summary}")
    return "\n".join(out)


def print_report(settings: Settings, rows: list[ServiceRow], mode: str, logs: Path | None = None) -> None:
    where = f"; logs in {logs}" if logs else ""
    print(f"mode: {mode}{where}")
    print(services_table(rows))
    print()
    print(stream_report(settings))
    if settings.drift_tracking:
        print(drift_report(settings), flush=True)
