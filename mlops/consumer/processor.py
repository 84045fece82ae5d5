"""One micro-batch of valid requests: one feature read, one model call per request type, one idempotent write.

Idempotency: each result is written with `SET prediction:{id} value NX GET EX ttl`, all in one script
call (one round trip, about twice as fast as a pipeline of SETs in redis-py, and atomic). When
a result already exists (a redelivery after a crash, or the same id twice), Redis keeps the stored one
and returns it, and that stored result is what gets published: a request never shows two different
results, whichever process or model version answers the second time. A stored result records the
digest of the request it answers (`schemas.request_digest`): when the stored one is for a different
request under the same id, the answer is a conflict (dead-lettered by the consumer), never that result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import redis

from mlops.schemas import (
    SCORE,
    Request,
    prediction_key,
    request_digest,
    score_result,
    stored_digest,
    topk_result,
    utc_now_iso,
)

# KEYS: the result keys; ARGV: ttl, then one value per key. Returns, per key, the value already stored
# (kept) or false (ours was written). Lua false becomes a nil reply, so the array keeps its length.
_STORE_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SET', key, ARGV[i + 1], 'NX', 'GET', 'EX', ARGV[1])
end
return out
"""


class RankerLike(Protocol):
    """What the consumer needs of `mlops.serving.Ranker` (typing only)."""

    info: Any

    def score_with_flags(
        self, users: list[dict[str, Any] | None], movie_ids: list[list[int]]
    ) -> tuple[list[dict[int, float]], list[bool]]: ...

    def recommend_with_flags(
        self, users: list[dict[str, Any] | None], ks: list[int]
    ) -> tuple[list[list[tuple[int, float]]], list[bool]]: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """The result a request ends with: `payload` is what Redis holds (maybe from an earlier delivery).

    `conflict`: what Redis holds answers another request that used the same id; it must not be published."""

    payload: bytes
    fallback: bool
    redelivered: bool
    conflict: bool = False


class BatchProcessor:
    """Predicts a batch with a given ranker and stores the results; Redis errors propagate (caller retries)."""

    def __init__(self, store: Any, client: redis.Redis, ttl_seconds: int) -> None:
        self.store = store
        self.redis = client
        self.ttl = ttl_seconds
        self._store = client.register_script(_STORE_SCRIPT)

    def predict(self, requests: list[Request], ranker: RankerLike) -> list[tuple[bytes, bool]]:
        """(result JSON, fallback) per request, in order; user features from the ranker's feature set."""
        info = ranker.info
        online = self.store.get_online_features({r.user_id for r in requests}, (), info.feature_set)
        users = online.users
        scoring = [i for i, r in enumerate(requests) if r.kind == SCORE]
        topk = [i for i, r in enumerate(requests) if r.kind != SCORE]
        out: list[tuple[bytes, bool]] = [(b"", False)] * len(requests)
        created_at = utc_now_iso()
        version, feature_set = str(info.model_version), str(info.feature_set)
        if scoring:
            reqs = [requests[i] for i in scoring]
            users_of = [users.get(r.user_id) for r in reqs]
            scores, flags = ranker.score_with_flags(users_of, [list(r.movie_ids) for r in reqs])
            for i, r, s, fb in zip(scoring, reqs, scores, flags, strict=True):
                payload = score_result(r, s, version, feature_set, bool(fb), created_at)
                out[i] = (payload, bool(fb))
        if topk:
            reqs = [requests[i] for i in topk]
            recs, flags = ranker.recommend_with_flags([users.get(r.user_id) for r in reqs], [r.k for r in reqs])
            for i, r, rec, fb in zip(topk, reqs, recs, flags, strict=True):
                payload = topk_result(r, rec, version, feature_set, bool(fb), created_at)
                out[i] = (payload, bool(fb))
        return out

    def store_results(self, requests: list[Request], predicted: list[tuple[bytes, bool]]) -> list[Answer]:
        """Write each result unless one exists (SET NX GET, one round trip); return what Redis holds."""
        stored = self._store(
            keys=[prediction_key(r.request_id) for r in requests], args=[self.ttl, *(p for p, _ in predicted)]
        )
        return [
            Answer(payload, fallback, False) if previous is None
            else Answer(previous, fallback, True, stored_digest(previous) != request_digest(request))
            for request, (payload, fallback), previous in zip(requests, predicted, stored, strict=True)
        ]  # fmt: skip

    def answer(self, requests: list[Request], ranker: RankerLike) -> list[Answer]:
        return self.store_results(requests, self.predict(requests, ranker))
