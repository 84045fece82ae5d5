"""`./run.sh status`: the services table plus what flows through them, for either backend.

Each item is read on its own and shown as "-" (service unreachable) or "none yet" (reachable, nothing
there yet): a fresh or half-started stack gives a readable report, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops import dlq, kafka_auth
from mlops.feature_store import CURRENT, RedisFeatureStore
from mlops.layout import set_kind
from mlops.live_ratings import LiveRatings, freshness_line
from mlops.orchestration.summary import metrics_lines
from mlops.prediction_budget import memory_line
from mlops.registry import champion_version
from mlops.settings import Settings
from mlops.topics import CONSUMER_GROUP, DLQ, REQUESTS, TOPICS

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ServiceRow:
    """One line of the status table: a service, its state, pid, URL and a note."""

    name: str
    state: str  # "up", "down", "unhealthy"
    pid: int | None
    url: str
    note: str = ""


@dataclass(frozen=True)
class TopicOffsets:
    """A topic's partition offsets (start, end, the consumer group's committed), for the stream report."""

    name: str
    end_offsets: dict[int, int]
    start_offsets: dict[int, int]
    committed: dict[int, int] | None = None  # of CONSUMER_GROUP; None when the group never committed

    @property
    def size(self) -> int:
        """Records the topic holds now (end minus start offsets: retention may have dropped the oldest)."""
        return sum(self.end_offsets[p] - self.start_offsets.get(p, 0) for p in self.end_offsets)

    @property
    def lag(self) -> int | None:
        """Records of the topic the group has not committed past (a partition never committed: from its start)."""
        if self.committed is None:
            return None
        return sum(self.end_offsets[p] - self.committed.get(p, self.start_offsets.get(p, 0)) for p in self.end_offsets)


def topic_offsets(settings: Settings, role: str = kafka_auth.PLATFORM) -> list[TopicOffsets]:
    """End offsets per partition of the platform's topics and the consumer group's lag on each."""
    from confluent_kafka import Consumer, TopicPartition

    from mlops.services.health import bootstrap_address, tcp_open

    if not tcp_open(*bootstrap_address(settings)):
        raise ConnectionError(f"nothing listens on {settings.kafka_bootstrap_servers}")
    consumer = Consumer(
        {
            **kafka_auth.client_config(settings, role),
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
    """The feature set version currently live in Redis and which set it is (None when none is loaded)."""
    import orjson
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        value = client.get(CURRENT)
        meta = client.get(RedisFeatureStore.meta_key(value.decode())) if value else None
    finally:
        client.close()
    if not value:
        return None
    return f"{value.decode()} ({set_kind((orjson.loads(meta) if meta else {}).get('history'))})"


def live_stats(settings: Settings) -> dict[str, float]:
    """The stream's rating updates (`mlops.live_ratings`): count, rate, newest event, lag."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        return LiveRatings(client).stats()
    finally:
        client.close()


def redis_memory(settings: Settings) -> str:
    """Redis's used memory against its maxmemory and the results' budget (`mlops.prediction_budget`)."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        return memory_line(settings, client.info("memory"), client.info("stats"))
    finally:
        client.close()


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
    """The service rows as an aligned text table (the note column left unpadded)."""
    header = ("service", "state", "pid", "url", "")
    lines = [header] + [(r.name, r.state, str(r.pid or "-"), r.url or "-", r.note) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(line)).rstrip() for line in lines
    )


def stream_report(settings: Settings) -> str:
    """Topics, lag, DLQ and consumers, then the live feature set, champion and A/B split: status' data part."""
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
    memory, error = _read(lambda: redis_memory(settings))
    out.append(f"redis memory: {'-  (' + error + ')' if error else memory}")
    version, error = _read(lambda: feature_set_version(settings))
    out.append(f"feature set (fs:current): {'-  (' + error + ')' if error else version or 'none yet'}")
    stats, error = _read(lambda: live_stats(settings))
    out.append(f"  stream updates: {'-  (' + error + ')' if error else freshness_line(stats, time.time())}")
    champion, error = _read(lambda: champion_version(settings, timeout_s=TIMEOUT_S))
    champion_known = bool(champion) and not error
    label = f"champion model ({settings.model_name}@champion)"
    out.append(f"{label}: {'-  (' + error + ')' if error else ('v' + champion if champion else 'none yet')}")
    if champion_known:
        facts, error = _read(lambda: champion_facts(settings))
        if error:
            out.append(f"  metrics: -  ({error})")
        elif facts:
            metrics, family = facts
            out += [f"  family: {family or 'unknown'} (top-k ranks with it)"] + [
                f"  {x}" for x in metrics_lines(metrics)
            ]
    if not error:
        line, problem = _read(lambda: newest_version_line(settings, champion))
        if problem or line:
            out.append(f"  newest version: {'-  (' + problem + ')' if problem else line}")
    if champion_known:
        line, error = _read(lambda: experiment_line(settings, champion))
        out.append(f"online champion/challenger: {'-  (' + error + ')' if error else line}")
    return "\n".join(out)


def experiment_line(settings: Settings, champion: str) -> str:
    """The split and the feedback credited to each variant so far (what `./run.sh promote` would decide on)."""
    import redis

    from mlops.feedback import FeedbackStore
    from mlops.variants import CHALLENGER, CHAMPION

    challenger = champion_version(settings, CHALLENGER, timeout_s=TIMEOUT_S)
    share, problem = settings.challenger_share()
    split = problem or f"CHALLENGER_TRAFFIC={share}"
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    store = FeedbackStore.from_settings(settings, client)
    arms = [("champion", champion, store.stats(CHAMPION, champion))]
    if challenger is not None:
        arms.append(("challenger", challenger, store.stats(CHALLENGER, challenger)))
    credited = [f"{name} v{version} {s.credited} ({s.hit_users} users on top-k, {s.auc_users} on scores)"
                for name, version, s in arms]  # fmt: skip
    if challenger is None:
        return f"{split}; no challenger alias; feedback credited: {credited[0]}"
    horizon = settings.promotion_min_users
    recorded = store.decision(champion, challenger)
    if recorded is not None:
        when = f"decided at the horizon on {recorded['decided_at']}: {'promote' if recorded['promote'] else 'keep'}"
    else:
        short = max(0, horizon - min(max(s.hit_users, s.auc_users) for _, _, s in arms))
        when = f"the test runs once at {horizon} users per variant (PROMOTION_MIN_USERS), {short} more needed"
    return f"{split}; feedback credited: {', '.join(credited)}; {when} (./run.sh promote decides)"


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
    """One consumer group member: its partitions of the requests topic and its uncommitted lag on them."""

    client_id: str
    partitions: tuple[int, ...]
    lag: int | None  # None: the group never committed on these partitions

    @property
    def partitions_text(self) -> str:
        """The member's partitions as `p0,p2` (or `(none)`), for the report."""
        return ",".join(f"p{p}" for p in self.partitions) or "(none)"

    @property
    def lag_text(self) -> str:
        """The member's lag for the report (`-` when its partitions were never committed)."""
        return "-" if self.lag is None else str(self.lag)


def consumer_lag(settings: Settings, requests_topic: TopicOffsets | None) -> list[MemberLag]:
    """Each live member of the consumer group, its partitions of the requests topic and their lag."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**kafka_auth.client_config(settings, kafka_auth.PLATFORM), "log_level": 0,
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


def _mlflow_get(settings: Settings, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """One MLflow REST read (no MLflow import in a status command)."""
    import requests

    base = settings.mlflow_tracking_uri.rstrip("/") + "/api/2.0/mlflow"
    response = requests.get(f"{base}/{path}", params=params, auth=settings.mlflow_auth, timeout=TIMEOUT_S)
    response.raise_for_status()
    return response.json()


def champion_facts(settings: Settings) -> tuple[dict[str, float], str | None] | None:
    """(metrics of the champion's training run, its model family), None when the version has no run."""
    version = _mlflow_get(settings, "registered-models/alias", {"name": settings.model_name, "alias": "champion"})
    version = version["model_version"]
    if not version.get("run_id"):
        return None
    run = _mlflow_get(settings, "runs/get", {"run_id": version["run_id"]})
    metrics = {m["key"]: float(m["value"]) for m in run["run"]["data"].get("metrics", [])}
    return metrics, {t["key"]: t["value"] for t in version.get("tags", [])}.get("model_family")


def newest_version_line(settings: Settings, champion: str | None) -> str | None:
    """What became of the newest registered version when it is not the champion (e.g. it stays challenger
    below its baselines), with the reason promotion recorded; None when the champion is the newest."""
    found = _mlflow_get(settings, "model-versions/search",
                        {"filter": f"name='{settings.model_name}'", "max_results": 1000})  # fmt: skip
    versions = found.get("model_versions") or []
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v["version"]))
    if str(newest["version"]) == str(champion):
        return None
    tags = {t["key"]: t["value"] for t in newest.get("tags", [])}
    reason = tags.get("promotion_reason")
    return f"v{newest['version']} ({tags.get('model_family', 'unknown family')}): " + (
        f"not served: {reason}" if reason else "not decided yet (evaluate_and_promote did not run)"
    )


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


def drift_report(settings: Settings, metric_urls: list[str] | None = None) -> str:
    """Drift as each consumer exports it: at `metric_urls` (Docker mode: the ports Docker published), else local
    mode's consumer i on INFERENCE_METRICS_PORT + i."""
    import requests

    if metric_urls is None:
        port = settings.inference_metrics_port
        metric_urls = [f"http://127.0.0.1:{port + i}/metrics" for i in range(settings.inference_consumers)]
    out = ["drift (served model inputs and predictions vs the model's reference profile):"]
    if not metric_urls:
        out.append("  -  (no consumer running)")
    for index, url in enumerate(metric_urls):

        def read(url: str = url) -> str:
            response = requests.get(url, timeout=TIMEOUT_S)
            response.raise_for_status()
            return drift_summary(response.text)

        summary, error = _read(read)
        out.append(f"  inference-{index}  {'-  (' + error + ')' if error else summary}")
    retrain, error = _read(lambda: last_retrain_line(settings))
    out.append(f"  drift_monitor  {'-  (' + error + ')' if error else retrain}")
    return "\n".join(out)


def last_retrain_line(settings: Settings, now: float | None = None) -> str:
    """The DAG drift_monitor's last drift-triggered retrain and its cool-down, from Redis."""
    from datetime import UTC, datetime

    from mlops.orchestration import drift_monitor as dm

    threshold = settings.drift_retrain_threshold
    schedule = f"DAG drift_monitor ({settings.drift_monitor_schedule}, retrain above PSI {threshold})"
    last = dm.last_retrain(settings)
    if last is None:
        return f"{schedule}: no drift-triggered retrain yet"
    ends = float(last["at"]) + settings.drift_retrain_cooldown_hours * 3600
    at, until = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC") for t in (float(last["at"]), ends))
    cooling = f"cool-down until {until}" if ends > (time.time() if now is None else now) else "cool-down over"
    return (f"{schedule}: last drift-triggered retrain {last['run_id']} at {at} (max PSI {last['max_psi']}, "
            f"{last['worst']}, v{last['model_version']}); {cooling}")  # fmt: skip


def alerts_line(settings: Settings) -> str:
    """The alerts Prometheus has firing (rules: docker/prometheus/rules.yml), by name and where."""
    import requests

    response = requests.get(settings.prometheus_url.rstrip("/") + "/api/v1/alerts", timeout=TIMEOUT_S)
    response.raise_for_status()
    firing = [a for a in response.json()["data"]["alerts"] if a.get("state") == "firing"]
    if not firing:
        return "no alert firing"

    def name(labels: dict) -> str:
        return labels.get("alertname", "?") + (f" ({labels['instance']})" if "instance" in labels else "")

    names = sorted({name(a["labels"]) for a in firing})
    return f"{len(firing)} alert(s) firing: " + ", ".join(names)


def print_report(
    settings: Settings, rows: list[ServiceRow], mode: str, logs: Path | None = None,
    metric_urls: list[str] | None = None,
) -> None:  # fmt: skip
    """The whole `./run.sh status` report (services, Spark, stream, drift, alerts), shared by both modes."""
    where = f"; logs in {logs}" if logs else ""
    print(f"mode: {mode}{where}")
    print(services_table(rows))
    print(spark_report(settings))
    print()
    print(stream_report(settings))
    if settings.drift_tracking:
        print(drift_report(settings, metric_urls))
    alerts, error = _read(lambda: alerts_line(settings))
    print(f"prometheus {settings.prometheus_url}: {'-  (' + error + ')' if error else alerts}", flush=True)
