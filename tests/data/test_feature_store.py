"""The Redis feature store against a real Redis: versioning, the atomic switch, one-round-trip reads."""

from __future__ import annotations

import threading
import time
from datetime import date
from decimal import Decimal

import numpy as np
import pytest

from mlops.errors import DataError
from mlops.feature_store import CURRENT, RedisFeatureStore, _decode, encode

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings, redis_server):
    fs = RedisFeatureStore.from_settings(settings)
    fs.r.flushdb()
    yield fs
    fs.r.flushdb()


def _users(version: str, n: int):
    return ((u, {"version": version, "n_ratings": u, "genres": [0.1, 0.2]}) for u in range(1, n + 1))


def _items(version: str, n: int):
    return ((m, {"version": version, "popularity": m * 2}) for m in range(1, n + 1))


def test_write_then_read_one_version(store):
    meta = store.write_feature_set("v1", _users("v1", 50), _items("v1", 20), {"popular_movies": [3, 1, 2]})
    assert meta["n_users"] == 50 and meta["n_items"] == 20
    assert store.current_version() == "v1"
    assert store.metadata("v1")["popular_movies"] == [3, 1, 2]

    got = store.get_online_features([1, 50, 999], [20, 21], store.current_version())
    assert got.version == "v1"
    assert got.users[1] == {"version": "v1", "n_ratings": 1, "genres": [0.1, 0.2]}
    assert got.users[999] is None and got.items[21] is None
    assert got.items[20]["popularity"] == 40
    assert store.get_online_features([50], [], version="v1").users[50]["n_ratings"] == 50

    items = store.get_all_items("v1")
    assert sorted(items) == list(range(1, 21))


def test_existing_version_is_never_overwritten(store):
    store.write_feature_set("v1", _users("v1", 5), _items("v1", 5), {})
    with pytest.raises(DataError, match="already exists"):
        store.write_feature_set("v1", _users("other", 5), _items("other", 5), {})
    assert store.get_online_features([1], [1], "v1").users[1]["version"] == "v1"


def test_failed_load_leaves_current_untouched(store):
    store.write_feature_set("v1", _users("v1", 5), _items("v1", 5), {})

    def broken():
        yield from _users("v2", 3000)
        raise RuntimeError("source died mid-load")

    with pytest.raises(RuntimeError):
        store.write_feature_set("v2", broken(), _items("v2", 5), {}, batch_size=500)
    assert store.current_version() == "v1"
    assert not store.exists("v2")
    # the partial keys are not current and expire on their own
    assert 0 < store.r.ttl(RedisFeatureStore.key("v2", "user", 1)) <= store.ttl
    with pytest.raises(Exception, match="no meta"):
        store.switch_to("v2")


def test_switch_retires_previous_version_with_ttl(store):
    store.write_feature_set("v1", _users("v1", 5), _items("v1", 5), {})
    assert store.r.ttl(RedisFeatureStore.key("v1", "user", 1)) == -1  # live: never expires
    store.write_feature_set("v2", _users("v2", 5), _items("v2", 5), {})
    assert store.r.get(CURRENT) == b"v2"
    assert store.r.ttl(RedisFeatureStore.key("v2", "user", 1)) == -1
    for key in (
        RedisFeatureStore.key("v1", "user", 1),
        RedisFeatureStore.key("v1", "item", 5),
        RedisFeatureStore.meta_key("v1"),
    ):
        assert 0 < store.r.ttl(key) <= store.ttl
    # still readable by a reader holding the old version's name
    assert store.get_online_features([2], [2], version="v1").users[2]["version"] == "v1"


def test_duplicate_entity_is_rejected(store):
    with pytest.raises(DataError, match="user 7 appears twice"):
        store.write_feature_set("v1", [(7, {}), (7, {})], [], {})
    assert store.current_version() is None


def test_readers_never_see_a_mixed_or_partial_set_during_switches(store):
    """Readers hammer get_online_features while versions are loaded and switched underneath them.

    Each read pins the version current when it started, as a consumer pins its model's feature set: a
    version retired meanwhile must still read completely, and never mixed with another."""
    n_users, n_items, n_versions = 3000, 300, 5
    store.write_feature_set("v0", _users("v0", n_users), _items("v0", n_items), {})
    stop = threading.Event()
    problems: list[str] = []
    seen_versions: set[str] = set()
    reads = [0]

    def reader(offset: int) -> None:
        user_ids = list(range(1 + offset, n_users + 1, 97))
        item_ids = list(range(1 + offset, n_items + 1, 13))
        while not stop.is_set():
            got = store.get_online_features(user_ids, item_ids, store.current_version())
            values = list(got.users.values()) + list(got.items.values())
            if any(v is None for v in values):
                problems.append(f"missing features under {got.version}")
            tags = {v["version"] for v in values if v}
            if tags != {got.version}:
                problems.append(f"mixed versions {tags} under {got.version}")
            seen_versions.add(got.version)
            reads[0] += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for v in range(1, n_versions + 1):
            store.write_feature_set(f"v{v}", _users(f"v{v}", n_users), _items(f"v{v}", n_items), {}, batch_size=200)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems[:5]
    assert reads[0] > 50
    assert len(seen_versions) >= 3  # the readers really did straddle switches
    assert store.current_version() == f"v{n_versions}"


def test_staged_set_is_readable_but_not_current_until_switched(store):
    """The DAG stages a run's set; only promotion makes it current, so a losing run changes nothing served."""
    store.write_feature_set("v1", _users("v1", 5), _items("v1", 5), {})
    meta = store.write_feature_set("v2", _users("v2", 5), _items("v2", 5), {}, activate=False)
    assert meta["n_users"] == 5
    assert store.current_version() == "v1"
    assert store.get_online_features([1], [1], store.current_version()).users[1]["version"] == "v1"
    assert store.get_online_features([1], [1], version="v2").users[1]["version"] == "v2"
    assert 0 < store.r.ttl(RedisFeatureStore.key("v2", "user", 1)) <= store.ttl  # expires unless promoted
    assert store.r.ttl(RedisFeatureStore.key("v1", "user", 1)) == -1  # the serving set keeps living

    assert store.switch_to("v2") == "v1"
    assert store.current_version() == "v2"
    assert store.r.ttl(RedisFeatureStore.key("v2", "user", 1)) == -1


def test_encoding_keeps_values_and_turns_nan_into_a_missing_value():
    """What Spark and pandas rows carry (numpy scalars and arrays, NaN, dates, decimals) round-trips; a NaN
    reads back as None, which the model encoding treats as missing, as it treats NaN."""
    row = {"a": np.float32(1.5), "b": float("nan"), "c": np.array([1, 2]), "d": date(2024, 1, 2),
           "e": Decimal("2.5"), "f": None, "g": [3, 4]}  # fmt: skip
    assert _decode(encode(row)) == {"a": 1.5, "b": None, "c": [1, 2], "d": "2024-01-02", "e": 2.5, "f": None,
                                    "g": [3, 4]}  # fmt: skip
    assert _decode(None) is None


def test_reference_profile_lives_and_expires_with_its_feature_set(store):
    """Stored by training before or after the set is staged: it expires with a staged or retired set and
    stays while the set is live, like every other key of the version."""
    profile = {"format": 1, "model_version": "7", "features": {}}
    assert store.reference_profile("v1") is None  # an old version without a profile
    store.put_reference_profile("v1", profile)  # training finished before load_to_redis
    store.write_feature_set("v1", _users("v1", 5), _items("v1", 5), {}, activate=False)
    assert store.reference_profile("v1") == profile and store.r.ttl(store.profile_key("v1")) > 0
    store.switch_to("v1")
    assert store.r.ttl(store.profile_key("v1")) == -1
    store.write_feature_set("v2", _users("v2", 5), _items("v2", 5), {})
    store.put_reference_profile("v2", {**profile, "model_version": "8"})  # the live set: no expiry
    assert store.r.ttl(store.profile_key("v2")) == -1 and store.r.ttl(store.profile_key("v1")) > 0
