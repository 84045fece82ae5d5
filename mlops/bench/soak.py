"""`python -m mlops.bench.soak`: a sustained rate for minutes, with Redis's memory sampled all along.

WHY: the stored results are bounded by their lifetime (`mlops.prediction_budget`), which only a run longer
than the lifetime can show: memory grows for PREDICTION_TTL_SECONDS, then stays flat while every request is
still answered. Like `./run.sh bench`, it runs against the running stack's champion and Redis with a consumer
of its own on private topics (PREDICTION_TTL_SECONDS from `--ttl`, default the settings'); it offers
`--rate` requests/s (one top-10 in five, the rest scores of 10 movies) for `--minutes`, and prints a line
per `--every` seconds: offered, answered, latency p50/p99 of that interval, Redis used memory, the results
stored (keys with an expiry) and keys evicted. Figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import redis

from mlops.bench.stream import Workload, bench_consumer, say
from mlops.consumer.client import exchange
from mlops.consumer.kafka import StreamTopics, delete_topics, ensure_topics
from mlops.consumer.verify import percentile
from mlops.feature_store import RedisFeatureStore
from mlops.prediction_budget import MIB
from mlops.registry import CHAMPION
from mlops.serving import Ranker
from mlops.settings import Settings, get_settings


def _redis_sample(client: redis.Redis) -> dict[str, float]:
    memory, stats, keyspace = client.info("memory"), client.info("stats"), client.info("keyspace")
    db = keyspace.get("db0", {})
    return {"used_mib": round(memory["used_memory"] / MIB, 1), "keys": int(db.get("keys", 0)),
            "keys_with_ttl": int(db.get("expires", 0)), "evicted": int(stats.get("evicted_keys", 0))}  # fmt: skip


def soak(settings: Settings, rate: float, minutes: float, every_s: float, ttl_s: int, quiet: bool) -> dict[str, Any]:
    """Offer `rate` req/s for `minutes` through a consumer of its own; one sample per `every_s` seconds."""
    store = RedisFeatureStore.from_settings(settings)
    ranker = Ranker.load(settings, store, alias=CHAMPION, compiled=False)
    work = Workload(store, ranker.info.feature_set, settings.seed)
    namespace = f"soak{int(time.time())}"
    topics = StreamTopics.namespaced(namespace)
    ensure_topics(settings, topics)
    client = redis.Redis.from_url(settings.redis_url)
    samples: list[dict[str, Any]] = []
    sent_total = 0
    try:
        with bench_consumer(settings, namespace, work, quiet, env={"PREDICTION_TTL_SECONDS": str(ttl_s)}):
            with exchange(settings, topics) as ex:
                listener, sender = ex.results, ex.sender
                started = time.perf_counter()
                window: list[str] = []
                next_sample = started + every_s
                end = started + minutes * 60
                while (now := time.perf_counter()) < end:
                    due = int((now - started) * rate)
                    while sent_total < due:
                        request = work.top10() if sent_total % 5 == 0 else work.score()
                        sender.send(request)
                        window.append(request.request_id)
                        sent_total += 1
                    if now >= next_sample:
                        sender.flush()
                        lat = [(listener.received[r][0] - sender.sent[r]) * 1000 for r in window
                               if r in listener.received]  # fmt: skip
                        sample = {"t_s": round(now - started), "offered": len(window), "answered_so_far": len(lat),
                                  "p50_ms": round(percentile(lat, 50), 1), "p99_ms": round(percentile(lat, 99), 1),
                                  **_redis_sample(client)}  # fmt: skip
                        samples.append(sample)
                        say(quiet, json.dumps(sample))
                        window, next_sample = [], next_sample + every_s
                    time.sleep(0.002)
                sender.flush()
                missing = listener.wait_for(list(sender.sent), 120)
                answered = len(sender.sent) - len(missing)
            work.ids.clear()  # the results expire on their own: that is what is measured
    finally:
        delete_topics(settings, topics)
    after_ttl = [s["used_mib"] for s in samples if s["t_s"] >= ttl_s + every_s]
    return {"rate": rate, "minutes": minutes, "ttl_s": ttl_s, "sent": sent_total, "answered": answered,
            "unanswered": sent_total - answered, "samples": samples,
            "used_mib_after_ttl_min": min(after_ttl) if after_ttl else None,
            "used_mib_after_ttl_max": max(after_ttl) if after_ttl else None,
            "evicted": samples[-1]["evicted"] - samples[0]["evicted"] if samples else None}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """The soak against the running stack; JSON summary on stdout with `--json`."""
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--ttl", type=int, default=settings.prediction_ttl_seconds, help="the consumer's result TTL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = soak(settings, args.rate, args.minutes, args.every, args.ttl, args.json)
    summary = {k: v for k, v in out.items() if k != "samples"}
    print(json.dumps(out if args.json else summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
