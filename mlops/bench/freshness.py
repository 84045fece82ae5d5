"""How fresh the stream keeps users' histories (issue 26), and what that costs on the request path.

Freshness: feedback events offered at a steady rate to a consumer of the benchmark's own, each for a user of
its own (synthetic ids far beyond any dataset's, so no real user's history is touched), timed from the produce
call to the moment the user's live history holds it (polled every POLL_S, which bounds the figures' resolution).

Request-path cost, in this process against the real Redis: one micro-batch's feature read with and without the
live histories in the same MGET, and the merge (`Ranker.users`) for a batch whose every user has ratings since
the set: the two things a serving consumer does per batch that it did not do before.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from mlops import live_ratings
from mlops.consumer.client import Sender
from mlops.consumer.kafka import StreamTopics
from mlops.consumer.verify import percentile
from mlops.feature_store import RedisFeatureStore
from mlops.live_ratings import LiveRating, LiveRatings
from mlops.schemas import Feedback, encode_feedback, request_key, utc_now_iso
from mlops.settings import Settings

FIRST_USER = 10**15
POLL_S = 0.002
RATINGS_EACH = 20


def freshness(settings: Settings, topics: StreamTopics, movies: list[int], rate: float, seconds: float,
              seed: int) -> dict[str, Any]:  # fmt: skip
    """Offer `rate` events/s for `seconds` to the consumer on `topics`; event -> applied latency percentiles."""
    client = RedisFeatureStore.from_settings(settings).r
    rng = random.Random(seed)
    n = int(rate * seconds)
    users = [FIRST_USER + i for i in range(n)]
    live = LiveRatings(client)
    live.forget(users)
    sent: dict[int, float] = {}
    applied: dict[int, float] = {}
    done = threading.Event()
    lock = threading.Lock()

    def poll() -> None:
        while not done.is_set():
            with lock:
                waiting = [u for u in sent if u not in applied][:5000]
            if waiting:
                now = time.perf_counter()
                for user, raw in zip(waiting, client.mget([live_ratings.key(u) for u in waiting]), strict=True):
                    if raw is not None:
                        applied[user] = now
            time.sleep(POLL_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    sender = Sender(settings, topics.feedback)
    started = time.perf_counter()
    for i, user in enumerate(users):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        event = Feedback(None, user, rng.choice(movies), 4.0, utc_now_iso())
        with lock:
            sent[user] = time.perf_counter()
        sender.send_raw(encode_feedback(event), request_key(user))
    offered = n / (time.perf_counter() - started)
    sender.flush()
    deadline = time.monotonic() + 60
    while len(applied) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    poller.join(5)
    latencies = [(applied[u] - sent[u]) * 1000 for u in users if u in applied]
    live.forget(users)
    return {"offered_eps": round(offered, 1), "events": n, "applied": len(latencies),
            "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies), 1) if latencies else None, "poll_ms": POLL_S * 1000}  # fmt: skip


def request_path_cost(settings: Settings, ranker: Any, users: list[int], batch: int, seed: int) -> dict[str, Any]:
    """Per micro-batch of `batch` users: the feature read without and with live histories, and the merge when
    every user in it has RATINGS_EACH ratings since the set (synthetic users, deleted after)."""
    store = RedisFeatureStore.from_settings(settings)
    rng = random.Random(seed)
    feature_set = ranker.info.feature_set
    movies = [int(m) for m in ranker.core.catalog.movie_ids]
    fake = [FIRST_USER + 10**9 + i for i in range(batch)]
    live = LiveRatings(store.r)
    now = time.time()
    live.apply([LiveRating(u, m, 4.0, now) for u in fake for m in rng.sample(movies, RATINGS_EACH)])
    plain, with_live, merge = [], [], []
    try:
        for _ in range(100):
            chosen = rng.sample(users, min(batch, len(users)))
            t = time.perf_counter()
            store.get_online_features(chosen, (), feature_set)
            plain.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            store.get_online_features(chosen, (), feature_set, live=True)
            with_live.append((time.perf_counter() - t) * 1000)
            online = store.get_online_features(fake, (), feature_set, live=True)
            t = time.perf_counter()
            ranker.users(online)
            merge.append((time.perf_counter() - t) * 1000)
    finally:
        live.forget(fake)
    return {"batch_users": batch, "ratings_each": RATINGS_EACH,
            "feature_read_p50_ms": round(percentile(plain, 50), 2),
            "feature_read_with_live_p50_ms": round(percentile(with_live, 50), 2),
            "merge_all_users_live_p50_ms": round(percentile(merge, 50), 2),
            "merge_per_user_us": round(1000 * percentile(merge, 50) / batch, 1)}  # fmt: skip
