"""`./run.sh status`: the services table plus what flows through them, for either backend.

Each item is read on its own and shown as "-" (service unreachable) or "none yet" (reachable, nothing
there yet): a fresh or half-started stack gives a readable report, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlops import dlq
from mlops.feature_store import CURRENT
from mlops.orchestration.summary import metrics_lines
from mlops.registry import champion_version
from mlops.settings import Settings
from mlops.topics import CONSUMER_GROUP, DLQ, REQUESTS, TOPICS

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
            committed = _committed(consumer, [TopicPartition(spec.name, p) for p in partitions])
            offsets = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
            result.append(TopicOffsets(spec.name, high, low, offsets or None))
    finally:
        consumer.close()
    return result


def _committed(consumer, partitions: list) -> list:
    """The group's committed offsets. Right after a broker's first start its offsets topic is still being
    created, and the coordinator lookup fails with a retriable error for a moment: ask again until TIMEOUT_S."""
    from confluent_kafka import KafkaError, KafkaException

    transient = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                 KafkaError.COORDINATOR_NOT_AVAILABLE}  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return consumer.committed(partitions, timeout=TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in transient) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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
        dlq_offsets = by_name.get(DLQ)
        out.append(f"DLQ size: {dlq_offsets.size if dlq_offsets else '-'}{dlq_breakdown(settings)}")
        members, error = _read(lambda: consumer_lag(settings, by_name.get(REQUESTS)))
        if error:
            out.append(f"consumers: -  ({error})")
        elif not members:
            out.append(f"consumers: none in group {CONSUMER_GROUP!r} right now")
        else:
            out.append(f"consumers ({len(members)} in group {CONSUMER_GROUP!r}; lag = requests not yet committed):")
            out += [f"  {m.client_id:<26} partitions {m.partitions_text:<14} lag {m.lag_text}" for m in members]
    version, error = _read(lambda: feature_set_version(settings))
    out.append(f"feature set (fs:current): {'-  (' + error + ')' if error else version or 'none yet'}")
    champion, error = _read(lambda: champion_version(settings, timeout_s=TIMEOUT_S))
    label = f"champion model ({settings.model_name}@champion)"
    out.append(f"{label}: {'-  (' + error + ')' if error else ('v' + champion if champion else 'none yet')}")
    if champion and not error:
        metrics, error = _read(lambda: champion_metrics(settings))
        if error:
            out.append(f"  metrics: -  ({error})")
        elif metrics:
            out += [f"  {line}" for line in metrics_lines(metrics)]
    return "\n".join(out)


def dlq_breakdown(settings: Settings) -> str:
    """`: verify's own N; clients' by reason: a 3, b 1` (the verifier's dead letters are sent on purpose)."""
    letters, error = _read(lambda: dlq.read(settings))
    if error:
        return f"  (by reason: -, {error})"
    counts = dlq.tally(letters)
    if counts.total == 0:
        return ""
    reasons = ", ".join(f"{reason} {n}" for reason, n in counts.by_reason.items()) or "none"
    return f"  ({counts.verifier} sent by ./run.sh verify on purpose; clients': {reasons})"


@dataclass(frozen=True)
class MemberLag:
    client_id: str
    partitions: tuple[int, ...]
    lag: int | None  # None: the group never committed on these partitions

    @property
    def partitions_text(self) -> str:
        return ",".join(f"p{p}" for p in self.partitions) or "(none)"

    @property
    def lag_text(self) -> str:
        return "-" if self.lag is None else str(self.lag)


def consumer_lag(settings: Settings, requests_topic: TopicOffsets | None) -> list[MemberLag]:
    """Each live member of the consumer group, its partitions of the requests topic and their lag."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 0,
                         "socket.timeout.ms": int(TIMEOUT_S * 1000)})  # fmt: skip
    group = admin.describe_consumer_groups([CONSUMER_GROUP], request_timeout=TIMEOUT_S)[CONSUMER_GROUP]
    description = group.result(timeout=TIMEOUT_S * 2)
    members = []
    for member in description.members:
        assigned = member.assignment.topic_partitions if member.assignment else []
        parts = tuple(sorted(tp.partition for tp in assigned if tp.topic == REQUESTS))
        lag = None
        if requests_topic is not None and requests_topic.committed is not None:
            ends, starts, committed = requests_topic.end_offsets, requests_topic.start_offsets, requests_topic.committed
            lag = sum(ends.get(p, 0) - committed.get(p, starts.get(p, 0)) for p in parts)
        members.append(MemberLag(member.client_id, parts, lag))
    return sorted(members, key=lambda m: m.client_id)


def champion_metrics(settings: Settings) -> dict[str, float]:
    """The metrics of the champion's training run (MLflow REST: no MLflow import in a status command)."""
    import requests

    base = settings.mlflow_tracking_uri.rstrip("/") + "/api/2.0/mlflow"
    params = {"name": settings.model_name, "alias": "champion"}
    response = requests.get(f"{base}/registered-models/alias", params=params, timeout=TIMEOUT_S)
    response.raise_for_status()
    run_id = response.json()["model_version"].get("run_id")
    if not run_id:
        return {}
    run = requests.get(f"{base}/runs/get", params={"run_id": run_id}, timeout=TIMEOUT_S)
    run.raise_for_status()
    return {m["key"]: float(m["value"]) for m in run.json()["run"]["data"].get("metrics", [])}


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
