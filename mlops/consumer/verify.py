"""End-to-end check of the running stream (`./run.sh verify`): completeness, parity, DLQ, latency.

It sends N requests (real user ids of the champion's feature set, a mix of scoring and top-k, a few
unknown users), waits for every result on `inference-predictions` and in Redis, and compares each with
what the registered champion predicts when LightGBM itself is called directly on the same features
(training/serving parity: same model, same feature code; the consumer serves compiled trees, so this also
checks them against LightGBM to 1e-9); with CHALLENGER_TRAFFIC > 0, a result the challenger answered is
compared with the challenger's direct prediction. Then malformed messages must each land in the DLQ with
the expected reason and their source offset. `--feedback USERS` then replays held-out test ratings as
feedback (`mlops.consumer.replay`) and checks the feedback reader's join. Exit code 1 on any miss or mismatch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import redis

from mlops import schemas
from mlops.consumer.client import exchange
from mlops.consumer.kafka import StreamTopics
from mlops.dlq import verifier_tag
from mlops.feature_store import RedisFeatureStore
from mlops.registry import CHALLENGER, CHAMPION
from mlops.schemas import PLATFORM, Request, ScoreRequest, TopKRequest
from mlops.settings import Settings, get_settings

log = logging.getLogger("mlops.verify")

SCORE_TOLERANCE = 1e-9


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a latency that really happened)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def make_requests(
    user_ids: list[int], movie_ids: list[int], n: int, rng: random.Random, tag: str, unknown_users: int = 5,
    topk_share: float = 0.3,
) -> list[Request]:  # fmt: skip
    """A realistic mix: mostly scoring 10 movies, some top-k, and a few users the store has never seen."""
    first_unknown = max(user_ids) + 1_000_000
    requests: list[Request] = []
    for i in range(n):
        user = first_unknown + i if i < unknown_users else rng.choice(user_ids)
        if rng.random() < topk_share:
            requests.append(TopKRequest(f"{tag}-{i}", user, rng.choice((5, 10, 20)), PLATFORM))
        else:
            movies = tuple(rng.sample(movie_ids, min(10, len(movie_ids))))
            requests.append(ScoreRequest(f"{tag}-{i}", user, movies, PLATFORM))
    rng.shuffle(requests)
    return requests


def malformed_messages(tag: str) -> list[tuple[bytes, str]]:
    """(raw bytes, expected DLQ reason); each unique to this run so its dead letter can be found."""
    big = json.dumps({"request_id": f"{tag}-big", "user_id": 1, "movie_ids": [1] * (schemas.MAX_MESSAGE_BYTES // 2)})
    return [
        (f"this is not json {tag}".encode(), schemas.NOT_JSON),
        (json.dumps([tag]).encode(), schemas.NOT_OBJECT),
        (json.dumps({"request_id": f"{tag}-m1", "user_id": 1}).encode(), schemas.MISSING_FIELD),
        (json.dumps({"request_id": f"{tag}-m2", "k": 3}).encode(), schemas.MISSING_FIELD),
        (json.dumps({"request_id": f"{tag}-t1", "user_id": "one", "k": 3}).encode(), schemas.WRONG_TYPE),
        (json.dumps({"request_id": f"{tag}-k0", "user_id": 1, "k": 0}).encode(), schemas.K_OUT_OF_RANGE),
        (json.dumps({"request_id": f"{tag}-k1", "user_id": 1, "k": 101}).encode(), schemas.K_OUT_OF_RANGE),
        (json.dumps({"request_id": f"{tag}-many", "user_id": 1, "movie_ids": list(range(1001))}).encode(),
         schemas.TOO_MANY_MOVIE_IDS),
        (big.encode(), schemas.OVERSIZED),
    ]  # fmt: skip


def expected_results(ranker: Any, store: RedisFeatureStore, requests: list[Request]) -> dict[str, dict]:
    """What the champion predicts when called directly, on the features of its feature set."""
    info = ranker.info
    users = ranker.users(store.get_online_features({r.user_id for r in requests}, (), info.feature_set,
                                                   live=ranker.live))  # fmt: skip
    scoring = [r for r in requests if isinstance(r, ScoreRequest)]
    topk = [r for r in requests if isinstance(r, TopKRequest)]
    out: dict[str, dict] = {}
    if scoring:
        scoring_users = [users.get(r.user_id) for r in scoring]
        scores, flags = ranker.score_with_flags(scoring_users, [list(r.movie_ids) for r in scoring])
        for r, s, fb in zip(scoring, scores, flags, strict=True):
            out[r.request_id] = {"scores": {str(m): float(v) for m, v in s.items()}, "fallback": bool(fb)}
    if topk:
        recs, flags = ranker.recommend_with_flags([users.get(r.user_id) for r in topk], [r.k for r in topk])
        for r, rec, fb in zip(topk, recs, flags, strict=True):
            out[r.request_id] = {"recommendations": [(int(m), float(v)) for m, v in rec], "fallback": bool(fb)}
    return out


def compare(result: dict, expected: dict, request: Request, info: Any) -> str | None:
    """Why a result differs from the direct prediction, or None when it matches."""
    if result["request_id"] != request.request_id or result["user_id"] != request.user_id:
        return "request_id/user_id do not match the request"
    if str(result["model_version"]) != str(info.model_version):
        return f"model_version {result['model_version']} != champion {info.model_version}"
    if str(result["feature_set"]) != str(info.feature_set):
        return f"feature_set {result['feature_set']} != {info.feature_set}"
    if result["fallback"] != expected["fallback"]:
        return f"fallback {result['fallback']} != {expected['fallback']}"
    if isinstance(request, ScoreRequest):
        got, want = result.get("scores"), expected["scores"]
        if got is None or got.keys() != want.keys():
            return f"scored movies {sorted(got or {})} != {sorted(want)}"
        worst = max(abs(got[m] - want[m]) for m in want)
        return None if worst <= SCORE_TOLERANCE else f"score differs by {worst:.3g}"
    got_recs = [(int(r["movie_id"]), float(r["score"])) for r in result.get("recommendations") or []]
    if [m for m, _ in got_recs] != [m for m, _ in expected["recommendations"]]:
        return f"recommended {[m for m, _ in got_recs][:5]}... != {[m for m, _ in expected['recommendations']][:5]}..."
    worst = max((abs(a - b) for (_, a), (_, b) in zip(got_recs, expected["recommendations"], strict=True)), default=0)
    return None if worst <= SCORE_TOLERANCE else f"recommendation score differs by {worst:.3g}"


def verify(settings: Settings, n: int, timeout: float, seed: int, topics: StreamTopics, feedback_users: int = 0) -> int:
    """Send `n` requests plus malformed ones and check each result against a direct prediction; 0 when all match."""
    from mlops.serving import Ranker

    started = time.time()
    store = RedisFeatureStore.from_settings(settings)
    ranker = Ranker.load(settings, store, alias=CHAMPION, compiled=False)  # LightGBM itself: the reference
    info = ranker.info
    user_ids = store.ids(info.feature_set, "user")
    movie_ids = store.ids(info.feature_set, "item")
    print(f"champion: {settings.model_name} v{info.model_version}, feature set {info.feature_set} "
          f"({len(user_ids)} users, {len(movie_ids)} movies)")  # fmt: skip
    tag = verifier_tag()  # in every message it sends: `status` counts its dead letters apart
    requests = make_requests(user_ids, movie_ids, n, random.Random(seed), tag)
    bad = malformed_messages(tag)

    with exchange(settings, topics) as ex:
        results, dead, sender = ex.results, ex.dead, ex.sender
        for request in requests:
            sender.send(request)
        for raw, _ in bad:
            sender.send_raw(raw, b"1")
        sender.flush()
        print(f"sent {len(requests)} requests and {len(bad)} malformed messages to {topics.requests}")

        def progress(done: int, total: int) -> None:
            print(f"  {done}/{total} results ({100 * done / total:.0f}%)")

        missing = results.wait_for([r.request_id for r in requests], timeout, progress)
        missing_dead = dead.wait_for([raw for raw, _ in bad], max(10.0, timeout - (time.time() - started)))

    failures: list[str] = [f"no result for {rid}" for rid in sorted(missing)[:20]]
    failures += [f"{rid}: two different results published" for rid in results.conflicts[:20]]
    if len(missing) > 20:
        failures.append(f"... {len(missing) - 20} more requests without a result")
    answered = [r for r in requests if r.request_id not in missing]
    stored = redis.Redis.from_url(settings.redis_url).mget([schemas.prediction_key(r.request_id) for r in answered])
    variants = {r.request_id: schemas.parse_result(results.received[r.request_id][1])["variant"] for r in answered}
    rankers = {CHAMPION: ranker}
    if CHALLENGER in variants.values():  # CHALLENGER_TRAFFIC > 0: its users are checked against the challenger
        rankers[CHALLENGER] = Ranker.load(settings, store, alias=CHALLENGER, compiled=False)
    expected: dict[str, dict] = {}
    for variant, reference in rankers.items():
        expected.update(expected_results(reference, store, [r for r in answered if variants[r.request_id] == variant]))
    served = Counter(variants.values())
    mismatches = 0
    for request, in_redis in zip(answered, stored, strict=True):
        published = results.received[request.request_id][1]
        problem = None
        if in_redis is None:
            problem = "no result in Redis"
        elif in_redis != published:
            problem = "Redis and the predictions topic disagree"
        elif variants[request.request_id] not in rankers:
            problem = f"variant {variants[request.request_id]!r} is not champion or challenger"
        else:
            reference_info = rankers[variants[request.request_id]].info
            problem = compare(schemas.parse_result(published), expected[request.request_id], request, reference_info)
        if problem:
            mismatches += 1
            if mismatches <= 20:
                failures.append(f"{request.request_id} (user {request.user_id}): {problem}")
    for raw, reason in bad:
        if raw in missing_dead:
            failures.append(f"malformed message ({reason}) never reached {topics.dlq}")
            continue
        record = schemas.parse_dlq_record(dead.received[raw][1])
        where = sender.placed.get(raw)
        if record["reason"] != reason:
            failures.append(f"malformed message dead-lettered as {record['reason']!r}, expected {reason!r}")
        elif where is not None and (record["source_partition"], record["source_offset"]) != where:
            failures.append(f"dead letter ({reason}) names offset {record['source_offset']}, sent to {where}")

    latencies = [(results.received[r.request_id][0] - sender.sent[r.request_id]) * 1000 for r in answered]
    if answered:
        first_sent = min(sender.sent.values())
        last_result = max(results.received[r.request_id][0] for r in answered)
        throughput = len(answered) / max(last_result - first_sent, 1e-9)
        fallbacks = sum(schemas.parse_result(results.received[r.request_id][1])["fallback"] for r in answered)
        print(f"answered {len(answered)}/{len(requests)} ({fallbacks} by the cold-start fallback), "
              f"{len(bad) - len(missing_dead)}/{len(bad)} malformed in the DLQ, "
              f"{results.duplicates} duplicate results on the topic")  # fmt: skip
        if CHALLENGER in served:
            print(f"variants: {served[CHAMPION]} answered by the champion v{info.model_version}, "
                  f"{served[CHALLENGER]} by the challenger v{rankers[CHALLENGER].info.model_version}")  # fmt: skip
        print(f"throughput {throughput:.0f} requests/s (all sent at once); end-to-end latency ms: "
              f"p50 {percentile(latencies, 50):.1f}  p95 {percentile(latencies, 95):.1f}  "
              f"p99 {percentile(latencies, 99):.1f}  max {max(latencies):.1f}")  # fmt: skip
    if feedback_users > 0:
        from mlops.consumer.replay import replay

        report = replay(settings, topics, info.feature_set, feedback_users, seed, f"{tag}-fb", timeout)
        print("\n".join(report.lines()))
        failures += report.problems
    if failures:
        print(f"FAILED: {len(missing)} missing, {mismatches} mismatched, "
              f"{sum('malformed' in f or 'dead letter' in f for f in failures)} DLQ problems")  # fmt: skip
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print(f"OK: every result present and equal to its variant's direct prediction ({time.time() - started:.1f}s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the stream verifier (`./run.sh verify`): exit 0 when the running stream answers correctly."""
    parser = argparse.ArgumentParser(description="Verify the running stream end to end")
    parser.add_argument("-n", "--requests", type=int, default=1000, help="number of requests (default 1000)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for all results")
    parser.add_argument("--seed", type=int, default=None, help="request mix seed (default: SEED setting)")
    parser.add_argument("--namespace", default=None, help="private topics of a consumer started with --namespace")
    parser.add_argument(
        "--feedback",
        type=int,
        default=0,
        metavar="USERS",
        help="also replay this many users' held-out test ratings as feedback and check the join",
    )
    parser.add_argument("--parity", action="store_true",
                        help="instead: serve the champion's evaluation set on private topics and check that the "
                        "served nDCG@10 and AUC of every test user equal the logged ones")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    seed = settings.seed if args.seed is None else args.seed
    try:
        if args.parity:
            from mlops.consumer.parity import check_parity

            return check_parity(settings, args.timeout)
        return verify(settings, args.requests, args.timeout, seed, StreamTopics.namespaced(args.namespace),
                      args.feedback)  # fmt: skip
    except Exception as exc:
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
