"""The drift windows the consumers publish to Redis: "the latest window" the batch drift check reads.

WHY Redis and not a second feature pipeline: each consumer already keeps the latest served model inputs and
predictions in memory (`mlops.consumer.drift_watch`, sampled per micro-batch); the DAG `drift_monitor` needs
exactly those rows. A consumer overwrites its one key `drift:window:{group}/{consumer}` (at most every
PUBLISH_INTERVAL_S, and only when its window gained rows) and the key expires WINDOW_TTL_S after the last
write, so a window that stopped moving (no traffic, consumer gone) stops counting as the latest.
The consumer group is in the key so that a benchmark's or a test's consumers (on namespaced topics, with a
group of their own) never pass their synthetic traffic off as the stack's.

Layout of a key (a Redis hash): `meta` = JSON {model_version, feature_set, columns, rows, updated_at},
`rows` = the window as little-endian float32, row-major, `rows` x len(columns).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "drift:window:"
PUBLISH_INTERVAL_S = 60.0
WINDOW_TTL_S = 2 * 3600
"""Two hourly checks: a window not refreshed for that long is not the latest traffic any more."""
_DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class PublishedWindow:
    """One consumer's window: the sampled rows (model inputs, then the prediction) one model version served."""

    consumer: str  # `{group}/{client id}`: whose traffic this is
    model_version: str
    feature_set: str
    columns: tuple[str, ...]
    rows: np.ndarray
    updated_at: float  # epoch seconds of the publication


def key(consumer: str) -> str:
    """The Redis key of one consumer's window (one key per consumer, overwritten on each publication)."""
    return f"{KEY_PREFIX}{consumer}"


def publish(client: redis.Redis, window: PublishedWindow, ttl_s: int = WINDOW_TTL_S) -> None:
    """Replace the consumer's window (one transaction: a reader never sees meta and rows of two windows)."""
    rows = np.ascontiguousarray(window.rows, dtype=_DTYPE)
    if rows.ndim != 2 or rows.shape[1] != len(window.columns):
        raise ValueError(f"drift window of {window.consumer}: rows {rows.shape} vs {len(window.columns)} columns")
    meta = {"model_version": window.model_version, "feature_set": window.feature_set,
            "columns": list(window.columns), "rows": len(rows), "updated_at": window.updated_at}  # fmt: skip
    pipe = client.pipeline(transaction=True)
    pipe.delete(key(window.consumer))
    pipe.hset(key(window.consumer), mapping={"meta": json.dumps(meta), "rows": rows.tobytes()})
    pipe.expire(key(window.consumer), ttl_s)
    pipe.execute()


def _decode(name: str, fields: dict[bytes, bytes]) -> PublishedWindow:
    meta = json.loads(fields[b"meta"])
    columns = tuple(meta["columns"])
    rows = np.frombuffer(fields[b"rows"], dtype=_DTYPE)
    if rows.size != int(meta["rows"]) * len(columns):
        raise ValueError(f"{rows.size} values for {meta['rows']} rows x {len(columns)} columns")
    return PublishedWindow(name.removeprefix(KEY_PREFIX), str(meta["model_version"]), str(meta["feature_set"]),
                           columns, rows.reshape(int(meta["rows"]), len(columns)).astype(np.float64),
                           float(meta["updated_at"]))  # fmt: skip


def consumer_id(group: str, client_id: str) -> str:
    """Who published a window: the group is part of it, so namespaced test traffic never counts as the stack's."""
    return f"{group}/{client_id}"


def read_all(client: redis.Redis, group: str) -> list[PublishedWindow]:
    """The live window of every consumer of `group`; a key that cannot be decoded is skipped with a warning."""
    out = []
    for raw in client.scan_iter(match=f"{KEY_PREFIX}{group}/*", count=100):
        name = raw.decode()
        fields = client.hgetall(name)
        if not fields:
            continue  # expired between SCAN and HGETALL
        try:
            out.append(_decode(name, fields))
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("%s: not a drift window (%s); skipped", name, exc)
    return sorted(out, key=lambda w: w.consumer)


def combined(windows: Iterable[PublishedWindow], model_version: str, columns: Sequence[str]) -> np.ndarray:
    """The rows every consumer served for `model_version`, stacked, in the order of `columns`."""
    parts = []
    for window in windows:
        if window.model_version != model_version:
            continue
        missing = [c for c in columns if c not in window.columns]
        if missing:
            log.warning("drift window of %s lacks %s; skipped", window.consumer, missing[:5])
            continue
        index = [window.columns.index(c) for c in columns]
        parts.append(window.rows[:, index])
    return np.vstack(parts) if parts else np.empty((0, len(columns)))
