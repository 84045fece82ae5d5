"""Held-out test ratings replayed as feedback: what `verify --feedback` and `bench --feedback` do.

For a sample of the test users of a pipeline run (the champion's), each user gets one top-k request and
one score request for the movies they rated in the test split, through the stream as any client would;
once both are answered, each test rating is sent to the feedback topic twice, naming each request (the
user saw the list, and the scored movies). Each event is credited to whichever variant answered that
user, so with CHALLENGER_TRAFFIC > 0 both variants gather feedback and `./run.sh promote` has something
to decide on. The replay also computes the same metrics itself from the answers it received (hit rate of
the top-k lists, AUC of the served P(like) on the rated pairs, per variant, with 95% intervals), and
checks the stream's own count: the credits the feedback reader recorded per variant and version must
grow by exactly the events sent, a malformed event must reach the feedback DLQ with its reason, and
organic events (no or an unknown request id) must be counted, not credited.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from mlops import schemas
from mlops.consumer.client import Sender, TopicListener, dead_letter_original, exchange
from mlops.consumer.kafka import StreamTopics
from mlops.features import LIKE_THRESHOLD
from mlops.feedback import NO_REQUEST_ID, UNKNOWN_REQUEST, FeedbackStore
from mlops.layout import split_key
from mlops.online_metrics import VariantStats, auc_summary, decide, hit_rate
from mlops.schemas import Feedback, ScoreRequest, TopKRequest, encode_feedback, request_key, utc_now_iso
from mlops.settings import Settings
from mlops.variants import VARIANTS

TOP_K = 10


@dataclass
class ReplayReport:
    """What a replay sent, what it measured per variant, and what the stream failed to do (`problems`)."""

    users: int = 0
    events: int = 0
    stats: dict[str, VariantStats] = field(default_factory=dict)
    decision: str = ""
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as printed by verify and bench: per variant hit rate and AUC, then the decision."""
        out = [f"feedback replay: {self.users} test users, {self.events} feedback events"]
        for variant, s in self.stats.items():
            out.append(f"  {variant:<10} v{s.model_version}: hit rate@{TOP_K} {hit_rate(s)}   AUC {auc_summary(s)}")
        if self.decision:
            out.append(f"  on this replay alone: {self.decision}")
        return out

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, for `bench --json`."""
        return {"users": self.users, "events": self.events, "decision": self.decision, "problems": self.problems,
                **{v: {"model_version": s.model_version, "hit_rate": hit_rate(s).__dict__,
                       "auc": auc_summary(s).__dict__} for v, s in self.stats.items()}}  # fmt: skip


def test_ratings(settings: Settings, run_id: str) -> dict[int, list[tuple[int, float, str]]]:
    """(movie, rating, ISO time of the rating) of each user in run `run_id`'s test split."""
    from mlops.spark_io import read_pandas

    frame = read_pandas(split_key(run_id, "test"), settings)
    out: dict[int, list[tuple[int, float, str]]] = defaultdict(list)
    for user, movie, rating, ts in zip(frame["user_id"], frame["movie_id"], frame["rating"], frame["timestamp"],
                                       strict=True):  # fmt: skip
        when = datetime.fromtimestamp(int(ts), UTC).isoformat().replace("+00:00", "Z")
        out[int(user)].append((int(movie), float(rating), when))
    return out


def replay(
    settings: Settings, topics: StreamTopics, run_id: str, users: int, seed: int, tag: str, timeout: float = 120.0,
    min_users: int | None = None,
) -> ReplayReport:  # fmt: skip
    """Replay `users` test users' ratings of run `run_id` (module docstring); never raises on a stream miss."""
    ratings = test_ratings(settings, run_id)
    chosen = random.Random(seed).sample(sorted(ratings), min(users, len(ratings)))
    report = ReplayReport(users=len(chosen))
    requests: list[Any] = []
    for user in chosen:
        movies = [m for m, _, _ in ratings[user]][: schemas.MAX_MOVIE_IDS]
        requests += [TopKRequest(f"{tag}-k{user}", user, TOP_K), ScoreRequest(f"{tag}-s{user}", user, tuple(movies))]
    with exchange(settings, topics) as ex:
        for request in requests:
            ex.sender.send(request)
        ex.sender.flush()
        missing = ex.results.wait_for([r.request_id for r in requests], timeout)
        answers = {rid: orjson.loads(value) for rid, (_, value) in ex.results.received.items()}
    if missing:
        report.problems.append(f"feedback replay: {len(missing)} of {len(requests)} requests unanswered")

    store = FeedbackStore.from_settings(settings)
    events: list[Feedback] = []
    expected: Counter[tuple[str, str]] = Counter()
    measured: dict[str, dict[str, Any]] = {}
    for user in chosen:
        top, scored = answers.get(f"{tag}-k{user}"), answers.get(f"{tag}-s{user}")
        if top is None or scored is None:
            continue
        recommended = {r["movie_id"] for r in top["recommendations"]}
        for answer in (top, scored):
            m = measured.setdefault(answer["variant"], {"version": answer["model_version"], "hits": [], "trials": [],
                                                        "scores": [], "liked": [], "users": []})  # fmt: skip
            if answer is top:
                m["hits"].append(sum(movie in recommended for movie, _, _ in ratings[user]))
                m["trials"].append(len(ratings[user]))
            else:
                for movie, rating, _ in ratings[user]:
                    if str(movie) in answer["scores"]:
                        m["scores"].append(answer["scores"][str(movie)])
                        m["liked"].append(rating >= LIKE_THRESHOLD)
                        m["users"].append(user)
            expected[(answer["variant"], str(answer["model_version"]))] += len(ratings[user])
            # The rating's own time: the serving set holds these ratings, so the stream must not apply them again.
            events += [Feedback(answer["request_id"], user, movie, rating, when) for movie, rating, when in
                       ratings[user]]  # fmt: skip
    for variant in VARIANTS:
        if variant in measured:
            m = measured[variant]
            report.stats[variant] = VariantStats(
                variant, str(m["version"]), sum(m["trials"]) + len(m["scores"]), np.array(m["trials"], dtype=float),
                np.array(m["hits"], dtype=float), np.array(m["scores"], dtype=float), np.array(m["liked"], dtype=bool),
                np.array(m["users"], dtype=np.int64),
            )  # fmt: skip
    if set(VARIANTS) <= report.stats.keys():
        report.decision = decide(
            report.stats["champion"],
            report.stats["challenger"],
            min_users or settings.promotion_min_users,
            settings.promotion_alpha,
        ).reason

    before = {key: store.stats(*key).credited for key in expected}
    organic_before = store.organic()
    malformed = orjson.dumps({"request_id": f"{tag}-bad", "user_id": 1, "movie_id": 1, "rating": 9,
                              "ts": utc_now_iso()})  # fmt: skip
    organic = [Feedback(None, chosen[0] if chosen else 1, 1, 3.0, utc_now_iso()),
               Feedback(f"{tag}-never-sent", chosen[0] if chosen else 1, 1, 3.0, utc_now_iso())]  # fmt: skip
    dead = TopicListener(settings, topics.feedback_dlq, key_of=dead_letter_original)
    dead.start()
    try:
        sender = Sender(settings, topics.feedback)
        for event in [*events, *organic]:
            sender.send_raw(encode_feedback(event), request_key(event.user_id))
        sender.send_raw(malformed, b"1")
        sender.flush()
        report.events = len(events) + len(organic) + 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            credited = {key: store.stats(*key).credited - before[key] for key in expected}
            counted = store.organic()
            if (
                all(credited[key] >= n for key, n in expected.items())
                and malformed in dead.received
                and all(counted.get(w, 0) > organic_before.get(w, 0) for w in (NO_REQUEST_ID, UNKNOWN_REQUEST))
            ):
                break
            time.sleep(0.2)
        missing_dead = malformed not in dead.received
    finally:
        dead.close()
    for key, n in expected.items():
        got = store.stats(*key).credited - before[key]
        if got != n:
            report.problems.append(f"feedback: {got} of {n} events credited to {key[0]} v{key[1]}")
    if missing_dead:
        report.problems.append(f"feedback: the malformed event never reached {topics.feedback_dlq}")
    else:
        reason = schemas.parse_dlq_record(dead.received[malformed][1])["reason"]
        if reason != schemas.RATING_OUT_OF_RANGE:
            report.problems.append(
                f"feedback: malformed event dead-lettered as {reason!r}, expected {schemas.RATING_OUT_OF_RANGE!r}"
            )
    organic_after = store.organic()
    for why in (NO_REQUEST_ID, UNKNOWN_REQUEST):
        if organic_after.get(why, 0) <= organic_before.get(why, 0):
            report.problems.append(f"feedback: organic event ({why}) not counted")
    return report
