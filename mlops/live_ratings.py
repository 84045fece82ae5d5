"""Ratings the stream has seen since the batch: each user's newest ratings in Redis, applied within a second.

WHY an overlay beside the feature sets, not an edit of the stored user rows: the batch rows stay exactly what
the batch wrote (nothing the stream does can corrupt them), and the overlay belongs to no feature-set version.
A consumer reads it in the same MGET as the user rows and applies, with `features.with_ratings`, the ratings
newer than its serving set's cutoff (older ones are in the batch already). So a new champion, or a rollback to
an older one, serves its own set plus every rating since that set's cutoff, switched with the model at once.

Layout: `live:u:{user_id}` is a JSON object `{"<movie_id>": [rating, event_time_s]}`, at most MAX_PER_USER
entries (the newest by event time). Applying an event is one Lua call per user (atomic per user): a movie's
entry changes only for a strictly newer event, so a redelivered event changes nothing. `live:stats` holds the
figures `status` shows (events applied, newest event time, when the last batch was applied and its lag).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

PREFIX = "live:u:"
STATS_KEY = "live:stats"
MAX_PER_USER = 2_000
"""Newest ratings kept per user: far more than any user adds between two batch runs."""

# KEYS[1]: the user's key. ARGV[1]: entries kept; then movie_id, rating, event time, for each event.
_APPLY = """
local raw = redis.call('GET', KEYS[1])
local doc = raw and cjson.decode(raw) or {}
local changed = {}
for i = 2, #ARGV, 3 do
  local movie, rating, ts = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local old = doc[movie]
  if old == nil or old[2] < ts then
    doc[movie] = {rating, ts}
    changed[#changed + 1] = movie
  end
end
if #changed == 0 then return 0 end
local entries = {}
for movie, v in pairs(doc) do entries[#entries + 1] = {movie, v[2]} end
local keep = tonumber(ARGV[1])
if #entries > keep then
  table.sort(entries, function(a, b) return a[2] > b[2] end)
  for i = keep + 1, #entries do doc[entries[i][1]] = nil end
end
redis.call('SET', KEYS[1], cjson.encode(doc))
local kept = 0
for _, movie in ipairs(changed) do
  if doc[movie] ~= nil then kept = kept + 1 end
end
return kept
"""
RATE_WINDOW_S = 10.0
"""`rate_per_s` is the events applied over the last full window of this length (from every consumer)."""
# KEYS[1]: live:stats. ARGV: events applied, newest event time, applied at, rate window.
_STATS = """
local now = tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[1], 'events', ARGV[1])
local newest = tonumber(redis.call('HGET', KEYS[1], 'newest_event_s') or '0')
if tonumber(ARGV[2]) > newest then redis.call('HSET', KEYS[1], 'newest_event_s', ARGV[2]) end
redis.call('HSET', KEYS[1], 'applied_at_s', ARGV[3], 'lag_s', now - tonumber(ARGV[2]))
local started = tonumber(redis.call('HGET', KEYS[1], 'window_start_s') or '0')
local counted = redis.call('HINCRBY', KEYS[1], 'window_events', ARGV[1])
if now - started >= tonumber(ARGV[4]) then
  local rate = started > 0 and counted / (now - started) or 0
  redis.call('HSET', KEYS[1], 'rate_per_s', tostring(rate), 'window_start_s', ARGV[3], 'window_events', 0)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class LiveRating:
    """One rating event as the overlay keeps it (event time in seconds since the epoch)."""

    user_id: int
    movie_id: int
    rating: float
    ts: float


def key(user_id: int) -> str:
    """The overlay key of one user."""
    return f"{PREFIX}{user_id}"


def decode(raw: bytes | None) -> list[tuple[int, float, float]]:
    """A user's overlay as (movie_id, rating, event time) tuples; [] for none."""
    if raw is None:
        return []
    return [(int(m), float(v[0]), float(v[1])) for m, v in orjson.loads(raw).items()]


def since(ratings: list[tuple[int, float, float]], cutoff: float) -> list[tuple[int, float, float]]:
    """The ratings at or after a feature set's `snapshot_cutoff`: older ones are in the set already."""
    return [r for r in ratings if r[2] >= cutoff]


class LiveRatings:
    """Writes rating events to the overlay (the feedback reader) and reads its figures (`status`)."""

    def __init__(self, client: Any, max_per_user: int = MAX_PER_USER) -> None:
        self.r = client
        self.max_per_user = max_per_user
        self._apply = client.register_script(_APPLY)
        self._stats = client.register_script(_STATS)

    def apply(self, events: Sequence[LiveRating]) -> int:
        """Apply the events (one atomic script per user, pipelined), then the figures; returns how many changed a
        user's history (one already there, or pushed out at once by newer ones, counts nothing)."""
        if not events:
            return 0
        by_user: dict[int, list[Any]] = defaultdict(list)
        for e in events:
            # Milliseconds: 13 digits, which Redis' cjson (14 significant digits) stores and reads back exactly,
            # so a redelivered event compares equal to the stored one.
            by_user[e.user_id] += [e.movie_id, repr(float(e.rating)), repr(round(e.ts, 3))]
        pipe = self.r.pipeline(transaction=False)
        for user_id, args in by_user.items():
            self._apply(keys=[key(user_id)], args=[self.max_per_user, *args], client=pipe)
        changed = int(sum(pipe.execute()))
        newest = repr(max(e.ts for e in events))
        self._stats(keys=[STATS_KEY], args=[changed, newest, repr(time.time()), RATE_WINDOW_S])
        return changed

    def ratings(self, user_ids: Iterable[int]) -> dict[int, list[tuple[int, float, float]]]:
        """The overlay of these users (only those who have one)."""
        users = list(user_ids)
        values = self.r.mget([key(u) for u in users]) if users else []
        return {u: decode(v) for u, v in zip(users, values, strict=True) if v is not None}

    def forget(self, user_ids: Sequence[int]) -> None:
        """Delete these users' histories (the benchmark's synthetic users), in chunks."""
        for start in range(0, len(user_ids), 5000):
            self.r.delete(*[key(u) for u in user_ids[start : start + 5000]])

    def stats(self) -> dict[str, float]:
        """events (applied, all time), newest_event_s, applied_at_s, lag_s (event time to applied, last batch),
        rate_per_s; {} before the first event."""
        return {k.decode(): float(v) for k, v in self.r.hgetall(STATS_KEY).items()}


def freshness_line(stats: dict[str, float], now: float) -> str:
    """What `status` says of the stream's updates: how many, how fast, how fresh."""
    if not stats.get("events"):
        return "none applied yet (ratings sent to inference-feedback update users' histories within a second)"
    return (f"{stats['events']:,.0f} ratings applied; {stats.get('rate_per_s', 0):.1f}/s lately; newest event "
            f"{now - stats['newest_event_s']:.0f} s old, applied {now - stats['applied_at_s']:.0f} s ago with lag "
            f"{stats['lag_s'] * 1000:.0f} ms")  # fmt: skip
