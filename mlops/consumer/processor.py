"""One micro-batch of valid requests: one feature read, one model call per request type, one idempotent write.

Idempotency: each result is written with `SET prediction:{id} value NX GET EX ttl`, all in one script
call (one round trip, about twice as fast as a pipeline of SETs in redis-py, and atomic). When
a result already exists (a redelivery after a crash, or the same id twice), Redis keeps the stored one
and returns it, and that stored result is what gets published: a request never shows two different
results, whichever process or model version answers the second time. A stored result records the
digest of the request it answers (`schemas.request_digest`): when the stored one is for a different
request under the same id, the answer is a conflict (dead-lettered by the consumer), never that result.

Champion/challenger: with a challenger serving (`challenger` given and CHALLENGER_TRAFFIC > 0), the batch
is split by `variants.variant_of(user_id)` and each part answered by its variant's ranker on that
ranker's own feature set; every result records its variant. Without one, the batch takes the champion
path as before: no hashing, no extra read. A challenger that raises on its part is not the requests'
fault: that part is answered by the champion (dependency errors still propagate, to be retried).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import redis

from mlops.consumer.failures import Kind, classify, describe
from mlops.schemas import (
    SCORE,
    USER,
    Request,
    prediction_key,
    request_digest,
    score_result,
    stored_digest,
    topk_result,
    utc_now_iso,
)
from mlops.variants import CHALLENGER, CHAMPION, variant_of

log = logging.getLogger(__name__)

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
    live: bool

    def users(self, online: Any) -> dict[int, dict[str, Any] | None]:
        """The user rows to answer from: `online`'s, with the stream's ratings since the set applied when live."""

    def score_with_flags(
        self, users: list[dict[str, Any] | None], movie_ids: list[list[int]], observed: list[bool] | None = None
    ) -> tuple[list[dict[int, float]], list[bool]]:
        """P(like) of the given movies per user, and whether each user was answered by the cold-start fallback;
        `observed` (per user, default all) says whose pairs the drift window may sample."""

    def recommend_with_flags(
        self, users: list[dict[str, Any] | None], ks: list[int]
    ) -> tuple[list[list[tuple[int, float]]], list[bool]]:
        """The top `k` (movie, score) per user, and whether each user was answered by the cold-start fallback."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The result a request ends with: `payload` is what Redis holds (maybe from an earlier delivery).

    `conflict`: what Redis holds answers another request that used the same id; it must not be published."""

    payload: bytes
    fallback: bool
    redelivered: bool
    conflict: bool = False
    variant: str = CHAMPION


class Predicted(NamedTuple):
    """A fresh prediction: the result JSON, whether the cold-start fallback answered, the variant that did."""

    payload: bytes
    fallback: bool
    variant: str


class BatchProcessor:
    """Predicts a batch with a given ranker and stores the results; Redis errors propagate (caller retries).

    `challenger_share`: the share of users the challenger serves whenever one is passed (0: never)."""

    def __init__(self, store: Any, client: redis.Redis, ttl_seconds: int, challenger_share: float = 0.0) -> None:
        self.store = store
        self.redis = client
        self.ttl = ttl_seconds
        self.challenger_share = challenger_share
        self.challenger_failures = 0
        self._store = client.register_script(_STORE_SCRIPT)

    def predict(
        self, requests: list[Request], ranker: RankerLike, challenger: RankerLike | None = None
    ) -> list[Predicted]:
        """One prediction per request, in order (module docstring: the split between the variants)."""
        if challenger is None or self.challenger_share <= 0.0:
            return self._predict(requests, ranker, CHAMPION)
        chosen = [variant_of(r.user_id, self.challenger_share) == CHALLENGER for r in requests]
        if not any(chosen):
            return self._predict(requests, ranker, CHAMPION)
        out: list[Predicted] = [Predicted(b"", False, CHAMPION)] * len(requests)
        champion_part = [i for i, c in enumerate(chosen) if not c]
        challenger_part = [i for i, c in enumerate(chosen) if c]
        try:
            answered = self._predict([requests[i] for i in challenger_part], challenger, CHALLENGER)
        except Exception as exc:
            if classify(exc) is not Kind.REQUEST:
                raise
            self.challenger_failures += 1
            log.warning("challenger v%s failed on %d requests (%s): the champion answers them",
                        challenger.info.model_version, len(challenger_part), describe(exc))  # fmt: skip
            champion_part = list(range(len(requests)))
        else:
            for i, p in zip(challenger_part, answered, strict=True):
                out[i] = p
        if champion_part:
            for i, p in zip(champion_part, self._predict([requests[i] for i in champion_part], ranker, CHAMPION),
                            strict=True):  # fmt: skip
                out[i] = p
        return out

    def _predict(self, requests: list[Request], ranker: RankerLike, variant: str) -> list[Predicted]:
        """Every request answered by `ranker`; user features from the ranker's own feature set."""
        info = ranker.info
        users = ranker.users(self.store.get_online_features({r.user_id for r in requests}, (), info.feature_set,
                                                            live=ranker.live))  # fmt: skip
        scoring = [i for i, r in enumerate(requests) if r.kind == SCORE]
        topk = [i for i, r in enumerate(requests) if r.kind != SCORE]
        out: list[Predicted] = [Predicted(b"", False, variant)] * len(requests)
        created_at = utc_now_iso()
        version, feature_set = str(info.model_version), str(info.feature_set)
        if scoring:
            reqs = [requests[i] for i in scoring]
            users_of = [users.get(r.user_id) for r in reqs]
            observed = [r.origin == USER for r in reqs]  # platform requests stay out of the drift windows
            mask = {} if all(observed) else {"observed": observed}
            scores, flags = ranker.score_with_flags(users_of, [list(r.movie_ids) for r in reqs], **mask)
            for i, r, s, fb in zip(scoring, reqs, scores, flags, strict=True):
                payload = score_result(r, s, version, feature_set, bool(fb), created_at, variant)
                out[i] = Predicted(payload, bool(fb), variant)
        if topk:
            reqs = [requests[i] for i in topk]
            recs, flags = ranker.recommend_with_flags([users.get(r.user_id) for r in reqs], [r.k for r in reqs])
            for i, r, rec, fb in zip(topk, reqs, recs, flags, strict=True):
                payload = topk_result(r, rec, version, feature_set, bool(fb), created_at, variant)
                out[i] = Predicted(payload, bool(fb), variant)
        return out

    def store_results(self, requests: list[Request], predicted: list[Predicted]) -> list[Answer]:
        """Write each result unless one exists (SET NX GET, one round trip); return what Redis holds."""
        stored = self._store(
            keys=[prediction_key(r.request_id) for r in requests], args=[self.ttl, *(p.payload for p in predicted)]
        )
        return [
            Answer(p.payload, p.fallback, False, False, p.variant) if previous is None
            else Answer(previous, p.fallback, True, stored_digest(previous) != request_digest(request), p.variant)
            for request, p, previous in zip(requests, predicted, stored, strict=True)
        ]  # fmt: skip

    def answer(self, requests: list[Request], ranker: RankerLike, challenger: RankerLike | None = None) -> list[Answer]:
        """Predict a batch (champion and challenger users apart) and store each result once; what Redis holds."""
        return self.store_results(requests, self.predict(requests, ranker, challenger))
