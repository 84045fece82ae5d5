"""Stored results are bounded by design: a budget `up` checks, a policy that evicts results before features."""

from __future__ import annotations

import random
import uuid

import pytest
import redis

from mlops import prediction_budget, schemas
from mlops.errors import CapacityError
from mlops.feature_store import RedisFeatureStore
from mlops.prediction_budget import MIB, RESULT_BYTES, budget_bytes, memory_line, problem
from mlops.services import process, specs
from mlops.settings import Settings


def test_the_defaults_fit_and_a_day_long_lifetime_is_refused_naming_the_settings():
    defaults = Settings()
    assert problem(defaults) is None
    assert budget_bytes(defaults) == RESULT_BYTES * 1_000 * 180
    day = defaults.replace(prediction_ttl_seconds=86_400)  # the old default: 90 GiB at 1,000 req/s
    reason = problem(day)
    assert reason and "PREDICTION_TTL_SECONDS 86,400" in reason and "REDIS_MAXMEMORY_MB 400" in reason
    assert problem(day.replace(prediction_budget_rps=2)) is None  # 2 req/s may keep results a day (181 MiB)


def test_status_line_says_used_of_limit_policy_evictions_and_budget():
    line = memory_line(Settings(), {"used_memory": 64 * MIB, "maxmemory": 400 * MIB,
                                    "maxmemory_policy": "volatile-ttl"}, {"evicted_keys": 12})  # fmt: skip
    assert line == ("64.0 MiB of 400 MiB, volatile-ttl, 12 keys evicted; results' budget 189 MiB "
                    "(1,100 B x 1,000 req/s x 180 s)")  # fmt: skip
    assert "no maxmemory: unbounded" in memory_line(Settings(), {"used_memory": 0, "maxmemory": 0}, {})


@pytest.mark.integration
def test_a_result_costs_redis_at_most_result_bytes_and_features_survive_eviction(base_settings, free_port, tmp_path):
    """On a Redis started as the platform starts it (a private one, 8 MiB): RESULT_BYTES bounds what a top-10
    result really takes (the budget's unit), and when results overflow, they are evicted, never a key
    without expiry (a live feature set)."""
    private = base_settings.replace(redis_port=free_port(), redis_password="budget-test-pw", redis_maxmemory_mb=8)
    launch = specs.redis(private, tmp_path / "redis")
    proc = process.start(launch, tmp_path / "redis.log", die_with_parent=True)
    try:
        process.wait_ready(launch, proc, tmp_path / "redis.log")
        client = redis.Redis.from_url(private.redis_url)
        info = client.config_get("maxmemory*")
        assert info["maxmemory-policy"] == prediction_budget.EVICTION_POLICY
        assert int(info["maxmemory"]) == 8 * MIB
        client.set("fs:live:user:1", b"x" * 1000)  # no expiry, as the current feature set's keys
        rng = random.Random(3)
        before = client.info("memory")["used_memory"]
        pipe = client.pipeline(transaction=False)
        for _ in range(2_000):
            request = schemas.TopKRequest(str(uuid.uuid4()), rng.randrange(10**6), 10)
            recs = [(rng.randrange(10**6), rng.random()) for _ in range(10)]
            pipe.set(schemas.prediction_key(request.request_id), schemas.topk_result(
                request, recs, "123", "20261207T120000Z-abcdef01", False, schemas.utc_now_iso()), ex=300)  # fmt: skip
        pipe.execute()
        per_result = (client.info("memory")["used_memory"] - before) / 2_000
        assert 600 < per_result <= RESULT_BYTES, per_result
        assert client.info("stats")["evicted_keys"] == 0

        pipe = client.pipeline(transaction=False)
        for i in range(12_000):  # ~13 MiB of results into 8 MiB
            pipe.set(f"prediction:overflow-{i}", b"r" * 800, ex=300)
        pipe.execute()
        assert client.info("stats")["evicted_keys"] > 0
        assert client.info("memory")["used_memory"] <= 8 * MIB * 1.05
        assert client.get("fs:live:user:1") == b"x" * 1000
    finally:
        process.stop(proc.pid)


@pytest.mark.integration
def test_a_feature_set_that_does_not_fit_is_refused_and_the_current_one_still_serves(base_settings, free_port,
                                                                                      tmp_path):  # fmt: skip
    """Loading into a full Redis: the new set's keys (with an expiry until it becomes current) are evicted, so
    the load stops with a CapacityError naming REDIS_MAXMEMORY_MB before the set's meta exists; the current
    set (no expiry) is whole and stays current."""
    private = base_settings.replace(redis_port=free_port(), redis_password="budget-test-pw", redis_maxmemory_mb=4)
    launch = specs.redis(private, tmp_path / "redis")
    proc = process.start(launch, tmp_path / "redis.log", die_with_parent=True)
    try:
        process.wait_ready(launch, proc, tmp_path / "redis.log")
        store = RedisFeatureStore(redis.Redis.from_url(private.redis_url), ttl_seconds=3600)
        row = {"u_n_ratings": 3.0, "rated_movie_ids": list(range(20))}
        store.write_feature_set("small", [(u, row) for u in range(200)], [(1, {"i_n_ratings": 1.0})], {})
        big = {**row, "padding": "p" * 2000}
        with pytest.raises(CapacityError, match=r"rows were evicted while loading.*REDIS_MAXMEMORY_MB"):
            store.write_feature_set("big", [(u, big) for u in range(4000)], [(1, {"i_n_ratings": 1.0})], {})
        assert store.current_version() == "small" and not store.exists("big")
        users = store.get_online_features(list(range(200)), [1], "small").users
        assert all(users[u] is not None for u in range(200))
    finally:
        process.stop(proc.pid)
