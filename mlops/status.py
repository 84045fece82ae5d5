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
from mlops.registry import CHAMPION
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


def champion_version(settings: Settings) -> str | None:
    """The registered model version behind the `champion` alias, or None when there is none yet.

    Asked over MLflow's REST API: importing the MLflow client takes seconds, and it retries for minutes
    when the server is down.
    """
    import requests

    response = requests.get(
        settings.mlflow_tracking_uri.rstrip("/") + "/api/2.0/mlflow/registered-models/alias",
        params={"name": settings.model_name, "alias": CHAMPION},
        timeout=TIMEOUT_S,
    )
    if response.status_code == 404 or (response.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in response.text):
        return None
    response.raise_for_status()
    return str(response.json()["model_version"]["version"])


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
    champion, error = _read(lambda: champion_version(settings))
    label = f"champion model ({settings.model_name}@champion)"
    out.append(f"{label}: {'-  (' + error + ')' if error else ('v' + champion if champion else 'none yet')}")
    return "\n".join(out)


def spark_report(settings: Settings) -> str:
    """Where the Spark steps run: in-process local mode, or a cluster and its master's web UI."""
    master = settings.spark_master
    if master.startswith("local"):
        return f"spark: {master} (inside each step's process; SPARK_WORKERS=N starts a standalone cluster)"
    if not master.startswith("spark://"):
        return f"spark: {master} (steps are submitted there by spark-submit)"
    from mlops.services.specs import spark_master_state

    state, error = _read(lambda: spark_master_state(settings))
    if error or not isinstance(state, dict):
        return f"spark: {master}, master UI {settings.spark_master_ui_url}: -  ({error})"
    apps = len(state.get("activeapps", []))
    return (
        f"spark: {master}, master UI {settings.spark_master_ui_url}: {state.get('status')}, "
        f"{state.get('aliveworkers', 0)} alive worker(s), {state.get('cores', 0)} cores, {apps} running app(s)"
    )


def print_report(settings: Settings, rows: list[ServiceRow], mode: str, logs: Path | None = None) -> None:
    where = f"; logs in {logs}" if logs else ""
    print(f"mode: {mode}{where}")
    print(services_table(rows))
    print(spark_report(settings))
    print()
    print(stream_report(settings), flush=True)
