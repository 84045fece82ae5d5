"""The drift windows the consumers publish, as the DAG drift_monitor reads them, against a real Redis."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from mlops import drift_windows as dwin

pytestmark = pytest.mark.integration


@pytest.fixture
def client(base_settings, redis_server):
    r = redis.Redis.from_url(base_settings.redis_url)
    for key in r.scan_iter(match=f"{dwin.KEY_PREFIX}*"):
        r.delete(key)
    return r


def window(consumer: str, version: str, rows: np.ndarray, columns=("a", "b", "prediction")) -> dwin.PublishedWindow:
    return dwin.PublishedWindow(consumer, version, "fs-1", tuple(columns), rows, 1_700_000_000.0)


def test_round_trip_with_expiry(client) -> None:
    rows = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    dwin.publish(client, window("inference-consumers/inference-0", "3", rows))
    (back,) = dwin.read_all(client, "inference-consumers")
    assert back.consumer == "inference-consumers/inference-0" and back.model_version == "3"
    assert back.columns == ("a", "b", "prediction") and back.updated_at == 1_700_000_000.0
    np.testing.assert_allclose(back.rows, rows, rtol=1e-6)  # float32 on the wire
    ttl = client.ttl(dwin.key("inference-consumers/inference-0"))
    assert 0 < ttl <= dwin.WINDOW_TTL_S


def test_a_republished_window_replaces_the_old_one(client) -> None:
    dwin.publish(client, window("g/inference-0", "3", np.zeros((5, 3))))
    dwin.publish(client, window("g/inference-0", "4", np.ones((2, 3))))
    (back,) = dwin.read_all(client, "g")
    assert back.model_version == "4" and back.rows.shape == (2, 3)


def test_other_groups_and_broken_keys_are_not_read(client) -> None:
    dwin.publish(client, window("inference-consumers/inference-0", "3", np.zeros((5, 3))))
    dwin.publish(client, window("inference-consumers.bench1/inference-0", "3", np.ones((5, 3))))  # a benchmark's
    client.hset(dwin.key("inference-consumers/inference-9"), mapping={"meta": "{not json", "rows": b"x"})
    (only,) = dwin.read_all(client, "inference-consumers")
    assert only.consumer == "inference-consumers/inference-0"


def test_combined_stacks_one_version_in_the_requested_column_order(client) -> None:
    dwin.publish(client, window("g/inference-0", "3", np.array([[1.0, 2.0, 0.5]])))
    dwin.publish(client, window("g/inference-1", "3", np.array([[10.0, 0.9, 20.0]]), ("a", "prediction", "b")))
    dwin.publish(client, window("g/inference-2", "2", np.array([[7.0, 7.0, 7.0]])))  # an older version
    rows = dwin.combined(dwin.read_all(client, "g"), "3", ("a", "b", "prediction"))
    np.testing.assert_allclose(rows, [[1.0, 2.0, 0.5], [10.0, 20.0, 0.9]], rtol=1e-6)
    assert dwin.combined([], "3", ("a",)).shape == (0, 1)


def test_rows_that_do_not_match_the_columns_are_refused(client) -> None:
    with pytest.raises(ValueError, match="g/inference-0"):
        dwin.publish(client, window("g/inference-0", "3", np.zeros((2, 4))))
