"""The online feature store in Redis, modelled on Feast's Redis online store.

Each load is a new, immutable feature-set version: `fs:{version}:user:{id}` and `fs:{version}:item:{id}`
hold a JSON object of that entity's features, `fs:{version}:meta` the set's metadata and
`fs:{version}:index:users|items` its entity ids (so nothing ever needs SCAN). `fs:current` names the
version serving reads.

Why it is safe to load while serving: a version is written completely (keys with a TTL, so an aborted
load cleans itself up), its meta last, and only then does `fs:current` move, in one atomic step that
refuses a version without meta. Readers name the version they read (one MGET): serving reads the
feature set its model was trained for, never whatever is current, so no reader sees two versions mixed.
The version going live loses its TTL; the one it replaces gets the TTL and stays readable until it
expires, for readers still holding its name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import redis

from mlops import live_ratings
from mlops.errors import CapacityError, DataError
from mlops.layout import evaluation_set_of
from mlops.settings import Settings

log = logging.getLogger(__name__)

CURRENT = "fs:current"
_ENTITIES = ("user", "item")
_CHUNK = 5000

# KEYS: fs:current, the new version's meta. ARGV: new version. Returns the previous version (or false).
_SWITCH_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('no meta for version ' .. ARGV[1]) end
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return previous
"""


@dataclass(frozen=True)
class OnlineFeatures:
    """Features read in one round trip; a missing entity (cold start) maps to None."""

    version: str
    users: dict[int, dict[str, Any] | None]
    items: dict[int, dict[str, Any] | None]
    live: dict[int, list[tuple[int, float, float]]] = field(default_factory=dict)
    """Each user's ratings since the batch (`mlops.live_ratings`), when asked for: only users who have some."""


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays (pandas rows), dates and decimals (Spark rows) as plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"feature value {value!r} of type {type(value).__name__} is not JSON-serializable")


def encode(features: dict[str, Any]) -> bytes:
    """Compact JSON; a NaN becomes null, which reads back as a missing value (what NaN means to the model)."""
    return orjson.dumps(features, default=_json_default)


def _decode(raw: bytes | None) -> dict[str, Any] | None:
    # orjson: the consumer decodes every user row of every micro-batch, ~4x faster than the json module here.
    return None if raw is None else orjson.loads(raw)


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class RedisFeatureStore:
    """Versioned feature sets with an atomic `fs:current` switch and one-round-trip reads."""

    def __init__(self, client: redis.Redis, ttl_seconds: int):
        self.r = client
        self.ttl = ttl_seconds
        self._switch = client.register_script(_SWITCH_SCRIPT)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisFeatureStore:
        """The store on the configured Redis, superseded versions expiring after FEATURE_SET_TTL_SECONDS."""
        return cls(redis.Redis.from_url(settings.redis_url), settings.feature_set_ttl_seconds)

    # -- keys -------------------------------------------------------------------------------------------------

    @staticmethod
    def key(version: str, entity: str, entity_id: int) -> str:
        """Where one entity's features of a version live (a JSON object)."""
        return f"fs:{version}:{entity}:{int(entity_id)}"

    @staticmethod
    def meta_key(version: str) -> str:
        """Where a version's metadata lives; written last, so its presence marks a complete load."""
        return f"fs:{version}:meta"

    @staticmethod
    def index_key(version: str, entity: str) -> str:
        """Where a version's entity ids are listed, so reading them never needs a SCAN."""
        return f"fs:{version}:index:{entity}s"

    @staticmethod
    def profile_key(version: str) -> str:
        """The reference profile (`mlops.drift`) of the model trained on this feature set."""
        return f"fs:{version}:reference_profile"

    # -- reads ------------------------------------------------------------------------------------------------

    def current_version(self) -> str | None:
        """The version `fs:current` names (what the latest load made live); None before any load."""
        raw = self.r.get(CURRENT)
        return raw.decode() if raw is not None else None

    def exists(self, version: str) -> bool:
        """Whether `version` was loaded completely (its meta is written last) and has not expired."""
        return bool(self.r.exists(self.meta_key(version)))

    def get_online_features(
        self, user_ids: Iterable[int], movie_ids: Iterable[int], version: str, live: bool = False
    ) -> OnlineFeatures:
        """Features of these users and movies of feature set `version`, in one round trip (one MGET); with
        `live`, the users' ratings since the batch too (`mlops.live_ratings`), in the same MGET."""
        users = [int(u) for u in user_ids]
        items = [int(m) for m in movie_ids]
        keys = [self.key(version, "user", u) for u in users] + [self.key(version, "item", m) for m in items]
        if live:
            keys += [live_ratings.key(u) for u in users]
        values = self.r.mget(keys) if keys else []
        n, m = len(users), len(items)
        overlays = zip(users, values[n + m :], strict=True) if live else ()
        return OnlineFeatures(
            version,
            {u: _decode(v) for u, v in zip(users, values[:n], strict=True)},
            {i: _decode(v) for i, v in zip(items, values[n : n + m], strict=True)},
            {u: live_ratings.decode(v) for u, v in overlays if v is not None},
        )

    def metadata(self, version: str) -> dict[str, Any]:
        """A version's metadata; raises DataError when the version is incomplete or expired."""
        raw = self.r.get(self.meta_key(version))
        if raw is None:
            raise DataError(f"feature set {version!r} not found in Redis (never loaded completely, or expired)")
        return orjson.loads(raw)

    def reference_profile(self, version: str) -> dict[str, Any] | None:
        """The drift reference stored with `version`, or None (a feature set older than drift profiles)."""
        raw = self.r.get(self.profile_key(version))
        return None if raw is None else orjson.loads(raw)

    def put_reference_profile(self, version: str, profile: dict[str, Any]) -> None:
        """Store the profile with the feature set: expiring with it unless it is the live version."""
        current = self.current_version()
        live = current is not None and version in (current, evaluation_set_of(current))
        self.r.set(self.profile_key(version), orjson.dumps(profile), ex=None if live else self.ttl)

    def ids(self, version: str, entity: str) -> list[int]:
        """The ids of one entity type (`user` or `item`) in `version`."""
        raw = self.r.get(self.index_key(version, entity))
        if raw is None:
            raise DataError(f"feature set {version!r} has no {entity} index (never loaded completely, or expired)")
        return orjson.loads(raw)

    def get_all_items(self, version: str) -> dict[int, dict[str, Any]]:
        """Every movie's features in `version` (the candidate catalog), by MGET in chunks, no SCAN."""
        out: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(self.ids(version, "item"), _CHUNK):
            for movie_id, raw in zip(chunk, self.r.mget([self.key(version, "item", m) for m in chunk]), strict=True):
                if raw is not None:
                    out[movie_id] = orjson.loads(raw)
        return out

    # -- writes -----------------------------------------------------------------------------------------------

    def write_feature_set(
        self,
        version: str,
        users: Iterable[tuple[int, dict[str, Any]]],
        items: Iterable[tuple[int, dict[str, Any]]],
        metadata: dict[str, Any],
        batch_size: int = 2000,
        activate: bool = True,
    ) -> dict[str, Any]:
        """Load a new feature-set version, then (with `activate`) make it current; returns its metadata.

        Refuses a version that already exists, so a stored set is never changed under its readers. A set
        loaded with `activate=False` is staged: complete and readable, but expiring until `switch_to`.
        """
        if not version or any(c.isspace() for c in version):
            raise ValueError(f"feature-set version {version!r}: expected a non-empty string without spaces")
        if self.exists(version):
            raise DataError(f"feature set {version!r} already exists in Redis; a stored version is never overwritten")
        started = time.monotonic()
        counts = {}
        for entity, rows in (("user", users), ("item", items)):
            ids = self._write_entities(version, entity, rows, batch_size)
            self.r.set(self.index_key(version, entity), orjson.dumps(ids), ex=self.ttl)
            counts[entity] = len(ids)
            self._check_complete(version, entity, ids)
        meta = {
            **metadata,
            "version": version,
            "n_users": counts["user"],
            "n_items": counts["item"],
            "created_at": datetime.now(UTC).isoformat(),
        }
        self.r.set(self.meta_key(version), orjson.dumps(meta, default=_json_default), ex=self.ttl)
        if not activate:
            log.info(
                "feature set %s staged: %d users, %d items in %.1fs (current stays %s)",
                version, counts["user"], counts["item"], time.monotonic() - started, self.current_version(),
            )  # fmt: skip
            return meta
        previous = self.switch_to(version)
        log.info(
            "feature set %s live: %d users, %d items in %.1fs (previous: %s)",
            version, counts["user"], counts["item"], time.monotonic() - started, previous,
        )  # fmt: skip
        return meta

    def _check_complete(self, version: str, entity: str, ids: list[int]) -> None:
        """Every key just written is still there: a full Redis (maxmemory, volatile-ttl) evicts keys with an
        expiry, and a set being loaded has one until it becomes current. `CapacityError` before its meta is
        written, so an incomplete set is never readable, let alone current."""
        present = 0
        for chunk in _chunks(ids, _CHUNK):
            present += int(self.r.exists(*[self.key(version, entity, i) for i in chunk]))
        if present < len(ids):
            raise CapacityError(
                f"feature set {version!r}: {len(ids) - present:,} of {len(ids):,} {entity} rows were evicted while "
                "loading: Redis is full (maxmemory). Raise REDIS_MAXMEMORY_MB (Docker mode: with the redis "
                "service's mem_limit) and load again; the current feature set still serves"
            )

    def _write_entities(
        self, version: str, entity: str, rows: Iterable[tuple[int, dict[str, Any]]], batch_size: int
    ) -> list[int]:
        ids: list[int] = []
        seen: set[int] = set()
        pipe = self.r.pipeline(transaction=False)
        started = last_log = time.monotonic()
        for entity_id, features in rows:
            entity_id = int(entity_id)
            if entity_id in seen:
                raise DataError(f"feature set {version!r}: {entity} {entity_id} appears twice in the input")
            seen.add(entity_id)
            ids.append(entity_id)
            pipe.set(self.key(version, entity, entity_id), encode(features), ex=self.ttl)
            if len(ids) % batch_size == 0:
                pipe.execute()
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    log.info("feature set %s: %d %ss written (%.0f/s)", version, len(ids), entity,
                             len(ids) / (last_log - started))  # fmt: skip
        pipe.execute()
        log.info("feature set %s: %d %ss written", version, len(ids), entity)
        return ids

    def switch_to(self, version: str) -> str | None:
        """Make `version` current (atomically; it must be complete); returns the version it replaced.

        The new version stops expiring; the replaced one starts to, but stays readable until then. A serving
        set's evaluation set (`layout.evaluation_set_of`) goes with it, so parity stays checkable while it serves.
        """
        if not self.exists(version):
            raise DataError(f"feature set {version!r} cannot become current: no meta (incomplete or expired)")
        for v in (version, evaluation_set_of(version)):  # first: a crash after the switch must not leave it expiring
            self._set_expiry(v, persist=True)
        previous = self._switch(keys=[CURRENT, self.meta_key(version)], args=[version])
        previous = previous.decode() if previous is not None else None
        if previous and previous != version:
            for v in (previous, evaluation_set_of(previous)):
                self._set_expiry(v, persist=False)
        return previous

    def _set_expiry(self, version: str, persist: bool) -> None:
        """PERSIST (live version) or EXPIRE (retired version) every key of `version`, pipelined."""
        for entity in _ENTITIES:
            raw = self.r.get(self.index_key(version, entity))
            if raw is None:
                continue
            for chunk in _chunks(orjson.loads(raw), _CHUNK):
                pipe = self.r.pipeline(transaction=False)
                for entity_id in chunk:
                    key = self.key(version, entity, entity_id)
                    pipe.persist(key) if persist else pipe.expire(key, self.ttl)
                pipe.execute()
        pipe = self.r.pipeline(transaction=False)
        keys = [self.meta_key(version), self.profile_key(version)] + [self.index_key(version, e) for e in _ENTITIES]
        for key in keys:
            pipe.persist(key) if persist else pipe.expire(key, self.ttl)
        pipe.execute()
