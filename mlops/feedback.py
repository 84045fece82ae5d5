"""Feedback joined to what each variant served, and the online metrics it feeds, kept in Redis (bounded).

`credit` is the join, pure: a feedback event names the request it acts on; the stored result
(`prediction:{request_id}`) says which variant and model version answered it and what they served. No
request id, one whose result is unknown (never answered, or expired), or a request the platform sent itself
(`origin: platform`): organic feedback, counted by `organic_reason` but credited to no variant. A result
for another user: the event is refused (`user_mismatch`).

`FeedbackStore` keeps, per variant and model version (`ab:{variant}:{version}:...`), the hit rate's events
and hits per user (users are what the experiment randomizes: `mlops.online_metrics` clusters by them) and
the newest FEEDBACK_WINDOW (score, liked, user) triples of the AUC; the keys expire
FEATURE_SET_TTL_SECONDS after their last feedback, like a superseded feature set (a challenger cannot serve
longer than its feature set lives). Recording is idempotent: each (request id, movie) is credited once
(`ab:seen:...`, living as long as a result), so a redelivered batch of feedback counts nothing twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlops.features import LIKE_THRESHOLD
from mlops.online_metrics import VariantStats
from mlops.schemas import USER, USER_MISMATCH, Feedback, InvalidRequest

NO_REQUEST_ID = "no_request_id"
UNKNOWN_REQUEST = "unknown_request_id"
PLATFORM_REQUEST = "platform_request"
"""Feedback on a request the platform sent itself (`origin: platform`): counted, never credited."""
ORGANIC_KEY = "ab:organic"
"""Hash: organic feedback counted by why it was not credited (NO_REQUEST_ID, UNKNOWN_REQUEST)."""


@dataclass(frozen=True, slots=True)
class Credit:
    """A feedback event credited to the variant and model version that served its request.

    `hit`: for a top-k answer, whether the movie was recommended (None for a score answer); `score`: for a
    score answer that scored the movie, the P(like) served (None otherwise)."""

    request_id: str
    user_id: int
    movie_id: int
    variant: str
    model_version: str
    hit: bool | None
    score: float | None
    liked: bool


def credit(event: Feedback, stored: bytes | None) -> Credit | None:
    """Join one event to the stored result of its request; None when it is organic (module docstring)."""
    if event.request_id is None or stored is None:
        return None
    try:
        result = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None  # not a result of ours: nothing to credit
    if not isinstance(result, dict) or "variant" not in result or result.get("origin", USER) != USER:
        return None
    if result.get("user_id") != event.user_id:
        raise InvalidRequest(
            USER_MISMATCH,
            f"request_id {event.request_id!r} answered user {result.get('user_id')}, the event is for user "
            f"{event.user_id}",
        )
    hit, score = None, None
    if "recommendations" in result:
        hit = any(r.get("movie_id") == event.movie_id for r in result["recommendations"])
    else:
        served = (result.get("scores") or {}).get(str(event.movie_id))
        score = None if served is None else float(served)
    return Credit(event.request_id, event.user_id, event.movie_id, str(result["variant"]),
                  str(result["model_version"]), hit, score, event.rating >= LIKE_THRESHOLD)  # fmt: skip


def organic_reason(event: Feedback, stored: bytes | None) -> str:
    """Why an event `credit` did not credit is organic: no request id, a platform request, or none stored."""
    if event.request_id is None:
        return NO_REQUEST_ID
    try:
        platform = stored is not None and orjson.loads(stored).get("origin", USER) != USER
    except (orjson.JSONDecodeError, AttributeError):
        platform = False
    return PLATFORM_REQUEST if platform else UNKNOWN_REQUEST


def stats_key(variant: str, version: str) -> str:
    """Hash of a variant and version's hit-rate counters (credited, hit_trials, hits)."""
    return f"ab:{variant}:{version}:stats"


def pairs_key(variant: str, version: str) -> str:
    """List of a variant and version's newest (score, liked, user) triples, the AUC's window."""
    return f"ab:{variant}:{version}:pairs"


def users_key(variant: str, version: str) -> str:
    """Hash of a variant and version's hit-rate feedback per user: `t:{user}` events, `h:{user}` hits."""
    return f"ab:{variant}:{version}:users"


def decision_key(champion: str, challenger: str) -> str:
    """The decision taken at the horizon for this pair of versions (JSON): the test runs once."""
    return f"ab:decision:{champion}:{challenger}"


def seen_key(request_id: str, movie_id: int) -> str:
    """Marks one (request, movie) as credited, so a redelivered feedback event counts once."""
    return f"ab:seen:{request_id}:{movie_id}"


# KEYS: per credit (seen, stats, pairs, users). ARGV: window, stats ttl, seen ttl, then per credit (hit: -1 none /
# 0 / 1, pair: "score:liked:user" or "", user). Returns how many credits were new (the others were counted before).
_RECORD_SCRIPT = """
local fresh = 0
for i = 0, #KEYS / 4 - 1 do
  local seen, stats, pairs, users = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local hit, pair, user = tonumber(ARGV[4 + 3 * i]), ARGV[5 + 3 * i], ARGV[6 + 3 * i]
  if redis.call('SET', seen, '1', 'NX', 'EX', ARGV[3]) then
    fresh = fresh + 1
    redis.call('HINCRBY', stats, 'credited', 1)
    if hit >= 0 then
      redis.call('HINCRBY', users, 't:' .. user, 1)
      redis.call('HINCRBY', users, 'h:' .. user, hit)
      redis.call('EXPIRE', users, ARGV[2])
    end
    if pair ~= '' then
      redis.call('LPUSH', pairs, pair)
      redis.call('LTRIM', pairs, 0, tonumber(ARGV[1]) - 1)
      redis.call('EXPIRE', pairs, ARGV[2])
    end
    redis.call('EXPIRE', stats, ARGV[2])
  end
end
return fresh
"""


class FeedbackStore:
    """The experiment's state in Redis: credited feedback per variant and version, organic counts."""

    def __init__(self, client: Any, window: int, stats_ttl_s: int, seen_ttl_s: int) -> None:
        self.redis = client
        self.window, self.stats_ttl_s, self.seen_ttl_s = window, stats_ttl_s, seen_ttl_s
        self._record = client.register_script(_RECORD_SCRIPT)

    @classmethod
    def from_settings(cls, settings: Any, client: Any | None = None) -> FeedbackStore:
        """The store on the configured Redis, with the window and key lifetimes of the settings."""
        import redis

        client = client or redis.Redis.from_url(settings.redis_url)
        return cls(client, settings.feedback_window, settings.feature_set_ttl_seconds, settings.prediction_ttl_seconds)

    def results(self, events: list[Feedback]) -> list[bytes | None]:
        """The stored result of each event's request (None: no request id or none stored), one round trip."""
        from mlops.schemas import prediction_key

        keyed = [i for i, e in enumerate(events) if e.request_id is not None]
        found = self.redis.mget([prediction_key(events[i].request_id) for i in keyed]) if keyed else []
        out: list[bytes | None] = [None] * len(events)
        for i, value in zip(keyed, found, strict=True):
            out[i] = value
        return out

    def record(self, credits: list[Credit], organic: Counter[str]) -> int:
        """Count the credits (each (request, movie) once) and the organic events; how many credits were new."""
        pipe = self.redis.pipeline(transaction=False)
        for why, count in organic.items():
            pipe.hincrby(ORGANIC_KEY, why, count)
        if credits:
            keys, args = [], [self.window, self.stats_ttl_s, self.seen_ttl_s]
            for c in credits:
                keys += [seen_key(c.request_id, c.movie_id), stats_key(c.variant, c.model_version),
                         pairs_key(c.variant, c.model_version), users_key(c.variant, c.model_version)]  # fmt: skip
                pair = "" if c.score is None else f"{c.score:.6f}:{int(c.liked)}:{c.user_id}"
                args += [-1 if c.hit is None else int(c.hit), pair, c.user_id]
            self._record(keys=keys, args=args, client=pipe)
        replies = pipe.execute() if len(pipe) else []
        return int(replies[-1]) if credits else 0

    def stats(self, variant: str, version: str | None) -> VariantStats:
        """What variant `variant` of model version `version` has gathered (empty for None or nothing yet)."""
        if version is None:
            return VariantStats(variant, None)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(stats_key(variant, version), "credited")
        pipe.hgetall(users_key(variant, version))
        pipe.lrange(pairs_key(variant, version), 0, -1)
        credited, per_user, pairs = pipe.execute()
        trials: dict[bytes, int] = {}
        hits: dict[bytes, int] = {}
        for name, value in per_user.items():
            (trials if name.startswith(b"t:") else hits)[name[2:]] = int(value)
        users = sorted(trials)
        triples = [p.split(b":") for p in pairs]
        # A pair stored before pairs named their user (two fields) is a cluster of its own: a negative id.
        pair_users = [int(t[2]) if len(t) > 2 else -1 - i for i, t in enumerate(triples)]
        return VariantStats(
            variant, version, int(credited or 0),
            np.array([trials[u] for u in users], dtype=float),
            np.array([hits.get(u, 0) for u in users], dtype=float),
            np.array([float(t[0]) for t in triples], dtype=float),
            np.array([t[1] == b"1" for t in triples], dtype=bool),
            np.array(pair_users, dtype=np.int64),
        )  # fmt: skip

    def decision(self, champion: str, challenger: str) -> dict[str, Any] | None:
        """The decision recorded at the horizon for these versions, or None while none was taken."""
        raw = self.redis.get(decision_key(champion, challenger))
        return None if raw is None else orjson.loads(raw)

    def record_decision(self, champion: str, challenger: str, decision: dict[str, Any]) -> dict[str, Any]:
        """Record the first decision taken at the horizon; a concurrent one recorded first wins (returned)."""
        key = decision_key(champion, challenger)
        if self.redis.set(key, orjson.dumps(decision), nx=True, ex=self.stats_ttl_s):
            return decision
        return orjson.loads(self.redis.get(key))

    def organic(self) -> dict[str, int]:
        """Feedback credited to no variant, counted by why (no request id, unknown request)."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(ORGANIC_KEY).items()}
