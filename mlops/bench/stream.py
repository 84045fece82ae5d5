"""`./run.sh bench`: throughput and latency of the stream, side by side with the naive baseline.

Runs against the running stack (`./run.sh up` and a `pipeline` run must have produced a champion and a
feature set; it says so and exits 2 otherwise). So as not to share its load with the stack's own
consumers, it starts one consumer process of its own at a time (the real service, `python -m
mlops.consumer.app`) on private topics, fresh for each phase (latency, then throughput), then the naive
consumer on its own topics, and (when DRIFT_TRACKING is on) the real service again with drift tracking off,
for what drift tracking costs; all timed with the same client: rate = results received / time from
the first to the last result, latency = request produced to result received on the predictions topic.
`--feedback USERS` adds an A/B replay (`ab_replay`): held-out test ratings of USERS users replayed as feedback
through a consumer of its own, with the hit rate and AUC of each variant and what the promotion rule would say.
Figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from mlops import schemas
from mlops.bench.freshness import freshness, request_path_cost
from mlops.consumer.client import exchange
from mlops.consumer.kafka import StreamTopics, delete_topics, ensure_topics
from mlops.consumer.spawn import STARTUP_TIMEOUT_S, Process, free_port, wait_healthy
from mlops.consumer.verify import percentile
from mlops.feature_store import RedisFeatureStore
from mlops.registry import CHAMPION, champion_version
from mlops.schemas import ScoreRequest, TopKRequest
from mlops.settings import Settings, get_settings


def say(quiet: bool, text: str) -> None:
    """Progress to stdout, or to stderr with `--json` so that stdout holds only the JSON."""
    print(text, file=sys.stderr if quiet else sys.stdout, flush=True)


def machine() -> dict[str, Any]:
    """Cores and memory, recorded with the figures: they mean nothing without the machine."""
    memory_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return {"cores": os.cpu_count(), "memory": f"{memory_kb / 1024 / 1024:.1f} GiB"}


class Workload:
    """Requests over the champion feature set's real users and movies."""

    def __init__(self, store: RedisFeatureStore, feature_set: str, seed: int) -> None:
        self.users = store.ids(feature_set, "user")
        self.movies = store.ids(feature_set, "item")
        self.rng = random.Random(seed)
        self.tag = f"bench-{uuid.uuid4().hex[:8]}"
        self.count = 0
        self.ids: list[str] = []

    def score(self) -> ScoreRequest:
        """A score request for a random real user and 10 random real movies, its id kept for clean-up."""
        self.count += 1
        rid = f"{self.tag}-{self.count}"
        self.ids.append(rid)
        return ScoreRequest(rid, self.rng.choice(self.users), tuple(self.rng.sample(self.movies, 10)))

    def top10(self) -> TopKRequest:
        """A top-10 request for a random real user, its id kept for clean-up."""
        self.count += 1
        rid = f"{self.tag}-{self.count}"
        self.ids.append(rid)
        return TopKRequest(rid, self.rng.choice(self.users), 10)


def drain_rate(settings: Settings, topics: StreamTopics, requests: list, timeout: float) -> dict[str, float]:
    """Send all at once (a backlog), then time the results: first to last."""
    with exchange(settings, topics) as ex:
        listener, sender = ex.results, ex.sender
        for request in requests:
            sender.send(request)
        sender.flush()
        missing = listener.wait_for([r.request_id for r in requests], timeout)
    arrivals = sorted(t for t, _ in listener.received.values())
    answered = len(requests) - len(missing)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {"rps": round((answered - 1) / span, 1) if answered > 1 else 0.0, "answered": answered,
            "requests": len(requests), "seconds": round(span, 2)}  # fmt: skip


def paced_latency(settings: Settings, topics: StreamTopics, requests: list, rate: float) -> dict[str, float]:
    """Offer `rate` requests/s, evenly spaced; latency = produced -> result received."""
    with exchange(settings, topics) as ex:
        listener, sender = ex.results, ex.sender
        started = time.perf_counter()
        for i, request in enumerate(requests):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sender.send(request)
        offered = len(requests) / (time.perf_counter() - started)
        sender.flush()
        missing = listener.wait_for([r.request_id for r in requests], 60)
    lat = [(listener.received[r.request_id][0] - sender.sent[r.request_id]) * 1000
           for r in requests if r.request_id not in missing]  # fmt: skip
    return {"offered_rps": round(offered, 1), "answered": len(lat), "p50_ms": round(percentile(lat, 50), 2),
            "p95_ms": round(percentile(lat, 95), 2), "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat), 2) if lat else float("nan")}  # fmt: skip


def feature_reads(store: RedisFeatureStore, work: Workload, feature_set: str, batch: int) -> dict[str, float]:
    """Latency of one online read: a request's (1 user + 10 movies) and a micro-batch's (`batch` users)."""
    single, batched = [], []
    for _ in range(2000):
        users, movies = [work.rng.choice(work.users)], work.rng.sample(work.movies, 10)
        t = time.perf_counter()
        store.get_online_features(users, movies, feature_set)
        single.append((time.perf_counter() - t) * 1000)
    for _ in range(200):
        users = work.rng.sample(work.users, min(batch, len(work.users)))
        t = time.perf_counter()
        store.get_online_features(users, (), feature_set)
        batched.append((time.perf_counter() - t) * 1000)
    return {"feature_read_p99_ms": round(percentile(single, 99), 3),
            "feature_read_p50_ms": round(percentile(single, 50), 3),
            f"feature_read_batch{batch}_p99_ms": round(percentile(batched, 99), 3)}  # fmt: skip


@contextlib.contextmanager
def bench_consumer(settings: Settings, namespace: str, work: Workload, quiet: bool,
              env: dict[str, str] | None = None) -> Iterator[None]:  # fmt: skip
    """The real service (one process) on the namespace's topics, healthy and warmed up (group joined)."""
    topics = StreamTopics.namespaced(namespace)
    port = free_port()
    consumer = Process(["-m", "mlops.consumer.app", "--namespace", namespace, "--metrics-port", str(port)],
                       f"bench-consumer-{namespace}", settings, env)  # fmt: skip
    try:
        wait_healthy(port, consumer)
        warm = drain_rate(settings, topics, [work.score() for _ in range(500)], STARTUP_TIMEOUT_S)
        say(quiet, f"stream consumer up on {topics.requests} (warm-up: {warm['answered']}/500 answered)")
        yield
    finally:
        consumer.stop()


def drift_cost(settings: Settings, namespace: str, work: Workload, n: int, with_drift_rps: float,
               quiet: bool) -> dict[str, Any]:  # fmt: skip
    """The same scoring drain on a consumer with DRIFT_TRACKING=false: what drift tracking costs in throughput
    (positive: the consumer with drift tracking is that much slower). The issue's bound is 5%."""
    if not settings.drift_tracking:
        return {"drift_tracking": False, "stream_score_rps_without_drift": None, "drift_tracking_cost_pct": None}
    with bench_consumer(settings, namespace, work, quiet, env={"DRIFT_TRACKING": "false"}):
        result = drain_rate(settings, StreamTopics.namespaced(namespace), [work.score() for _ in range(n)], 300)
    rps = result["rps"]
    cost = round(100 * (rps - with_drift_rps) / rps, 1) if rps else None
    say(quiet, f"stream scoring without drift tracking: {rps} req/s (drift tracking costs {cost}%)")
    return {"drift_tracking": True, "stream_score_rps_without_drift": rps, "drift_tracking_cost_pct": cost}


def run(settings: Settings, args: argparse.Namespace, quiet: bool) -> dict[str, Any]:
    """Every phase against the running stack; deletes its topics and stored results after."""
    from mlops.serving import Ranker

    store = RedisFeatureStore.from_settings(settings)
    version = champion_version(settings)
    if version is None:
        raise LookupError(f"no `{CHAMPION}` version of {settings.model_name}: run `./run.sh pipeline` first")
    ranker = Ranker.load(settings, store, alias=CHAMPION, compiled=False)
    info = ranker.info
    work = Workload(store, info.feature_set, settings.seed)
    out: dict[str, Any] = {"model_version": str(info.model_version), "feature_set": str(info.feature_set),
                           "n_users": len(work.users), "n_movies": len(work.movies),
                           "batch_size": settings.inference_batch_size,
                           "batch_timeout_ms": settings.inference_batch_timeout_ms}  # fmt: skip
    say(quiet, f"champion v{info.model_version}, feature set {info.feature_set}: "
               f"{len(work.users)} users, {len(work.movies)} movies")  # fmt: skip
    out.update(feature_reads(store, work, info.feature_set, settings.inference_batch_size))
    say(quiet, f"feature read p99 {out['feature_read_p99_ms']} ms (1 user + 10 movies)")

    # Each phase on topics of its own, fresh: no phase reads past (or waits behind) another's traffic, and a
    # rerun never meets a backlog left by an interrupted one.
    stamp = int(time.time())
    names = ("latency", "drain", "naive", "replay", "nodrift", "fresh")
    namespaces = {phase: f"bench{stamp}{phase}" for phase in names}
    latency_topics, stream_topics, naive_topics, replay_topics, nodrift_topics, fresh_topics = (
        StreamTopics.namespaced(n) for n in namespaces.values()
    )
    phases = (latency_topics, stream_topics, naive_topics, nodrift_topics, fresh_topics,
              *((replay_topics,) if args.feedback else ()))  # fmt: skip
    for topics in phases:
        ensure_topics(settings, topics)

    with bench_consumer(settings, namespaces["latency"], work, quiet):
        paced = paced_latency(settings, latency_topics, [work.score() for _ in range(int(args.latency_seconds * 1000))],
                              1000)  # fmt: skip
    out["stream_p99_ms_at_1000rps"] = paced["p99_ms"]
    out["stream_latency_at_1000rps"] = paced
    say(quiet, f"latency at {paced['offered_rps']} req/s offered: p50 {paced['p50_ms']} ms, "
               f"p95 {paced['p95_ms']} ms, p99 {paced['p99_ms']} ms")  # fmt: skip

    with bench_consumer(settings, namespaces["drain"], work, quiet):
        score = drain_rate(settings, stream_topics, [work.score() for _ in range(args.score_requests)], 300)
        out["stream_score_rps"] = score["rps"]
        out["stream_score"] = score
        say(quiet, f"stream scoring: {score['rps']} req/s ({score['answered']}/{score['requests']})")
        top = drain_rate(settings, stream_topics, [work.top10() for _ in range(args.recommend_requests)], 300)
        out["stream_recommend_rps"] = top["rps"]
        out["stream_recommend"] = top
        say(quiet, f"stream top-10: {top['rps']} req/s ({top['answered']}/{top['requests']})")

    out.update(drift_cost(settings, namespaces["nodrift"], work, args.score_requests, out["stream_score_rps"], quiet))

    with bench_consumer(settings, namespaces["fresh"], work, quiet):
        fresh = freshness(settings, fresh_topics, work.movies, 1000, args.freshness_seconds, settings.seed)
    out["freshness_at_1000eps"] = fresh
    say(quiet, f"freshness at {fresh['offered_eps']} feedback events/s: {fresh['applied']}/{fresh['events']} applied, "
               f"event to live history p50 {fresh['p50_ms']} ms, p99 {fresh['p99_ms']} ms")  # fmt: skip
    cost = request_path_cost(settings, ranker, work.users, settings.inference_batch_size, settings.seed)
    out["live_history_request_cost"] = cost
    say(quiet, f"request path, per batch of {cost['batch_users']}: feature read {cost['feature_read_p50_ms']} ms, "
               f"with live histories {cost['feature_read_with_live_p50_ms']} ms; merge with {cost['ratings_each']} "
               f"new ratings per user {cost['merge_all_users_live_p50_ms']} ms")  # fmt: skip

    if args.feedback:
        from mlops.consumer.replay import replay

        started = time.perf_counter()
        with bench_consumer(settings, namespaces["replay"], work, quiet):
            report = replay(settings, replay_topics, info.feature_set, args.feedback, settings.seed, f"{work.tag}-fb",
                            300)  # fmt: skip
        out["ab_replay"] = {**report.as_dict(), "challenger_traffic": settings.challenger_share()[0],
                            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        for line in report.lines() + report.problems:
            say(quiet, line)

    naive = Process(["-m", "mlops.bench.naive", "--namespace", namespaces["naive"]], "bench-naive", settings)
    try:
        warm = drain_rate(settings, naive_topics, [work.score() for _ in range(50)], STARTUP_TIMEOUT_S)
        say(quiet, f"naive consumer up (warm-up: {warm['answered']}/50 answered)")
        result = drain_rate(settings, naive_topics, [work.score() for _ in range(args.naive_requests)], 600)
        out["naive_score_rps"] = result["rps"]
        out["naive_score"] = result
        say(quiet, f"naive scoring: {result['rps']} req/s ({result['answered']}/{result['requests']})")
    finally:
        naive.stop()
    naive_rps = out["naive_score_rps"]
    out["speedup_vs_naive"] = round(out["stream_score_rps"] / naive_rps, 1) if naive_rps else None
    for topics in phases:
        delete_topics(settings, topics)
    client = redis.Redis.from_url(settings.redis_url)
    for start in range(0, len(work.ids), 5000):
        client.delete(*[schemas.prediction_key(rid) for rid in work.ids[start : start + 5000]])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 2 with the way out when the stack or a champion is missing, else print the figures."""
    parser = argparse.ArgumentParser(description="stream benchmark (figures, never pass/fail)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--score-requests", type=int, default=30000)
    parser.add_argument("--recommend-requests", type=int, default=5000)
    parser.add_argument("--latency-seconds", type=float, default=15)
    parser.add_argument("--naive-requests", type=int, default=2000)
    parser.add_argument("--freshness-seconds", type=float, default=15, help="feedback offered at 1,000 events/s")
    parser.add_argument(
        "--feedback",
        type=int,
        default=0,
        metavar="USERS",
        help="A/B replay: USERS users' held-out test ratings as feedback, metrics per variant "
        "(CHALLENGER_TRAFFIC decides the split; 0: no replay)",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    started = time.time()
    try:
        out = {"machine": machine(), **run(settings, args, args.json)}
    except (LookupError, ConnectionError, OSError, RuntimeError) as exc:
        say(args.json, f"bench: cannot run against the stack ({type(exc).__name__}: {exc}); "
                       "start it with `./run.sh up` and `./run.sh pipeline`")  # fmt: skip
        return 2
    out["bench_seconds"] = round(time.time() - started, 1)
    print(json.dumps(out, indent=None if args.json else 2))
    return 0
