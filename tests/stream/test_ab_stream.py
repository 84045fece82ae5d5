"""Online champion/challenger against the real servers (Redis, Apache Kafka, S3, MLflow) and the real consumer.

The challenger is a second registered version of the session champion's model (same artifacts, same feature
set): its answers are the champion's, but they carry `variant: challenger` and its own version, which is what
the split, the join and the promotion act on. Each test runs the consumer on a private namespace of the topics;
the aliases are restored when the module ends, so the other stream tests keep their champion.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter

import orjson
import pytest
import redis
from test_stream import InProcessConsumer

from mlops import schemas
from mlops.consumer.client import Sender, TopicListener, dead_letter_original, exchange
from mlops.consumer.kafka import StreamTopics, delete_topics, ensure_topics
from mlops.consumer.verify import verify
from mlops.feature_store import RedisFeatureStore
from mlops.feedback import NO_REQUEST_ID, UNKNOWN_REQUEST, FeedbackStore
from mlops.online_promotion import KEPT, PROMOTED, promote
from mlops.registry import CHALLENGER, CHAMPION, champion_version, client
from mlops.schemas import Feedback, ScoreRequest, TopKRequest, encode_feedback, request_key
from mlops.variants import variant_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARE = 0.5


@pytest.fixture
def topics(settings, champion):
    names = StreamTopics.namespaced(f"ab{uuid.uuid4().hex[:10]}")
    ensure_topics(settings, names)
    yield names
    delete_topics(settings, names)


@pytest.fixture(scope="module")
def challenger(settings, champion):
    """Version N+1 of the model, on the champion's artifacts and feature set, behind the `challenger` alias."""
    c = client(settings)
    source = c.get_model_version(settings.model_name, champion.model_version)
    model_id = getattr(source, "model_id", None) or source.source.removeprefix("models:/")  # MLflow 3: a logged model
    created = c.create_model_version(settings.model_name, source.source, run_id=source.run_id, tags=source.tags,
                                     model_id=model_id)  # fmt: skip
    c.set_registered_model_alias(settings.model_name, CHALLENGER, created.version)
    yield str(created.version)
    c.set_registered_model_alias(settings.model_name, CHAMPION, champion.model_version)
    if champion_version(settings, CHALLENGER) is not None:
        c.delete_registered_model_alias(settings.model_name, CHALLENGER)


def running(settings, topics: StreamTopics, share: float) -> InProcessConsumer:
    """The real service with CHALLENGER_TRAFFIC = `share`, the aliases as loaded (no reload while a test runs)."""
    return InProcessConsumer(settings.replace(challenger_traffic=share), topics, watch=False)


def _users(settings, champion) -> list[int]:
    return RedisFeatureStore.from_settings(settings).ids(champion.feature_set, "user")


def _ask(settings, topics, requests) -> dict[str, dict]:
    with exchange(settings, topics) as ex:
        for request in requests:
            ex.sender.send(request)
        ex.sender.flush()
        assert ex.results.wait_for([r.request_id for r in requests], 120) == set()
        return {rid: orjson.loads(value) for rid, (_, value) in ex.results.received.items()}


def test_no_challenger_alias_sends_everyone_to_the_champion_and_says_so(settings, champion, topics, caplog):
    assert champion_version(settings, CHALLENGER) is None
    consumer = running(settings, topics, SHARE)
    try:
        assert consumer.watcher.challenger_state is not None
        assert "no `challenger` alias" in consumer.watcher.challenger_state
        tag = uuid.uuid4().hex[:8]
        answers = _ask(settings, topics, [TopKRequest(f"{tag}-{u}", u, 5) for u in _users(settings, champion)[:60]])
    finally:
        consumer.stop()
    assert {a["variant"] for a in answers.values()} == {CHAMPION}
    assert "all traffic goes to the champion" in caplog.text


def test_out_of_range_traffic_is_said_at_start_and_serves_the_champion(settings, champion, challenger, topics, caplog):
    consumer = running(settings, topics, 1.5)
    try:
        assert consumer.watcher.challenger is None and consumer.service.holder.challenger is None
        tag = uuid.uuid4().hex[:8]
        answers = _ask(settings, topics, [TopKRequest(f"{tag}-{u}", u, 5) for u in _users(settings, champion)[:40]])
    finally:
        consumer.stop()
    assert "CHALLENGER_TRAFFIC=1.5: expected a share of users between 0 and 1" in caplog.text
    assert {a["variant"] for a in answers.values()} == {CHAMPION}


def test_split_is_sticky_matches_the_share_and_each_result_records_variant_and_version(
    settings, champion, challenger, topics
):
    users = _users(settings, champion)
    tag = uuid.uuid4().hex[:8]
    requests = [r for u in users for r in (TopKRequest(f"{tag}-k{u}", u, 5), ScoreRequest(f"{tag}-s{u}", u, (1, 2)))]
    consumer = running(settings, topics, SHARE)
    try:
        assert consumer.service.holder.challenger.info.model_version == challenger
        answers = _ask(settings, topics, requests)
        metrics = consumer.service.metrics
    finally:
        consumer.stop()
    by_user: dict[int, set[str]] = {}
    for answer in answers.values():
        by_user.setdefault(answer["user_id"], set()).add(answer["variant"])
        assert answer["variant"] == variant_of(answer["user_id"], SHARE)
        assert answer["model_version"] == (challenger if answer["variant"] == CHALLENGER else champion.model_version)
    assert all(len(v) == 1 for v in by_user.values()), "a user saw both variants"
    share = sum(v == {CHALLENGER} for v in by_user.values()) / len(by_user)
    assert abs(share - SHARE) < 4 * (SHARE * (1 - SHARE) / len(by_user)) ** 0.5, (share, len(by_user))
    stored = redis.Redis.from_url(settings.redis_url).get(schemas.prediction_key(requests[0].request_id))
    assert orjson.loads(stored)["variant"] == answers[requests[0].request_id]["variant"]
    served = Counter(a["variant"] for a in answers.values())
    for variant in (CHAMPION, CHALLENGER):
        counted = sum(metrics.requests.labels(type=t, kind=k, variant=variant)._value.get()
                      for t, k in (("score", "p_like"), ("topk", "rank_score")))  # fmt: skip
        assert counted == served[variant]
    assert metrics.challenger_share._value.get() == SHARE


def test_verify_with_a_feedback_replay_checks_both_variants_and_the_join(
    settings, champion, challenger, topics, capsys
):
    """`verify --feedback`: answers of each variant checked against that variant's direct prediction, held-out
    test ratings replayed as feedback and every event credited to the variant that served it."""
    consumer = running(settings, topics, SHARE)
    try:
        code = verify(settings, 200, 120, seed=5, topics=topics, feedback_users=40)
    finally:
        consumer.stop()
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"variants: \d+ answered by the champion v\d+, \d+ by the challenger v" + challenger, out), out
    assert "feedback replay: 40 test users" in out
    assert re.search(r"^  champion +v\d+: hit rate@10 \d\.\d{3} \[", out, re.M), out
    assert re.search(r"^  challenger +v" + challenger + r": hit rate@10 ", out, re.M), out


def _feedback_round(settings, topics, answers: dict[str, dict], hit_for: dict[str, bool], per_answer: int) -> Counter:
    """Feedback on each top-k answer: `per_answer` events on recommended movies (hits) when hit_for[variant],
    else on movies not recommended. Returns the events sent per (variant, version)."""
    sender = Sender(settings, topics.feedback)
    sent: Counter = Counter()
    store = RedisFeatureStore.from_settings(settings)
    catalog = store.ids(store.current_version(), "item")  # a movie the catalog lacks would be dead-lettered
    for answer in answers.values():
        if "recommendations" not in answer:
            continue
        recommended = [r["movie_id"] for r in answer["recommendations"]]
        misses = [m for m in catalog if m not in recommended]
        movies = recommended[:per_answer] if hit_for[answer["variant"]] else misses[:per_answer]
        for movie in movies:
            event = Feedback(answer["request_id"], answer["user_id"], movie, 4.0, schemas.utc_now_iso())
            sender.send_raw(encode_feedback(event), request_key(event.user_id))
            sent[(answer["variant"], answer["model_version"])] += 1
    sender.flush()
    return sent


def _wait_credited(store: FeedbackStore, before: dict, sent: Counter, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        now = {key: store.stats(*key) for key in sent}
        if all(now[k].credited - before[k].credited >= n for k, n in sent.items()) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_feedback_joins_to_the_variant_that_served_and_bad_feedback_is_dead_lettered(
    settings, champion, challenger, topics
):
    users = _users(settings, champion)[:80]
    tag = uuid.uuid4().hex[:8]
    store = FeedbackStore.from_settings(settings)
    consumer = running(settings, topics, SHARE)
    try:
        answers = _ask(settings, topics, [TopKRequest(f"{tag}-k{u}", u, 5) for u in users]
                       + [ScoreRequest(f"{tag}-s{u}", u, (1, 2, 3)) for u in users[:10]])  # fmt: skip
        keys = {(a["variant"], a["model_version"]) for a in answers.values()}
        assert {k[0] for k in keys} == {CHAMPION, CHALLENGER}
        before = {key: store.stats(*key) for key in keys}
        organic_before = store.organic()
        sent = _feedback_round(settings, topics, answers, {CHAMPION: True, CHALLENGER: False}, 2)
        scored = next(a for a in answers.values() if "scores" in a)
        pair = Feedback(scored["request_id"], scored["user_id"], 2, 5.0, schemas.utc_now_iso())
        sent[(scored["variant"], scored["model_version"])] += 1
        topk = next(a for a in answers.values() if "recommendations" in a)
        bad = {
            orjson.dumps({"request_id": "x", "user_id": 1, "movie_id": 2, "rating": 9, "ts": "2026-01-01T00:00:00Z"}):
                schemas.RATING_OUT_OF_RANGE,
            b"not json at all": schemas.NOT_JSON,
            orjson.dumps({"request_id": None, "user_id": 1, "rating": 3, "ts": "2026-01-01T00:00:00Z"}):
                schemas.MISSING_FIELD,
            encode_feedback(Feedback(topk["request_id"], topk["user_id"] + 1, 2, 3.0, "2026-01-01T00:00:00Z")):
                schemas.USER_MISMATCH,
        }  # fmt: skip
        dead = TopicListener(settings, topics.feedback_dlq, key_of=dead_letter_original)
        dead.start()
        sender = Sender(settings, topics.feedback)
        for raw in bad:
            sender.send_raw(raw, b"1")
        sender.send_raw(encode_feedback(pair), request_key(pair.user_id))
        sender.send_raw(encode_feedback(Feedback(None, users[0], 1, 3.0, "2026-01-01T00:00:00Z")), b"1")
        sender.send_raw(encode_feedback(Feedback(f"{tag}-never", users[0], 1, 3.0, "2026-01-01T00:00:00Z")), b"1")
        sender.flush()
        try:
            assert dead.wait_for(list(bad), 60) == set()
        finally:
            dead.close()
        after = _wait_credited(store, before, sent)
        # The same events again (a redelivery, or a client retrying): nothing is counted twice.
        _feedback_round(settings, topics, answers, {CHAMPION: True, CHALLENGER: False}, 2)
        assert consumer.thread.is_alive()
        time.sleep(3)  # the repeats are read and found counted before
        again = {key: store.stats(*key) for key in sent}
    finally:
        consumer.stop()
    for key, n in sent.items():
        assert after[key].credited - before[key].credited == n, key
        assert again[key].credited == after[key].credited, f"{key}: a repeated event was counted twice"
    for key in sent:
        trials = after[key].hit_trials - before[key].hit_trials
        hits = after[key].hits - before[key].hits
        assert trials > 0
        assert hits == (trials if key[0] == CHAMPION else 0), key  # the champion's users rated what it recommended
    scored_key = (scored["variant"], scored["model_version"])
    assert len(after[scored_key].scores) - len(before[scored_key].scores) == 1
    assert after[scored_key].scores[0] == pytest.approx(scored["scores"]["2"], abs=1e-6)
    for raw, reason in bad.items():
        record = schemas.parse_dlq_record(dead.received[raw][1])
        assert record["reason"] == reason, (raw, record["detail"])
        assert record["source_topic"] == topics.feedback
    organic = store.organic()
    for why in (NO_REQUEST_ID, UNKNOWN_REQUEST):
        assert organic.get(why, 0) > organic_before.get(why, 0), why
    metrics = consumer.service.metrics
    for reason in bad.values():
        assert metrics.feedback_dead_letters.labels(reason=reason)._value.get() == 1, reason
    assert metrics.feedback.labels(outcome="duplicate", variant="")._value.get() >= sum(sent.values()) - 1


def test_the_first_decision_at_the_horizon_is_final_whatever_feedback_follows(settings, monkeypatch):
    """The fixed horizon through the real Redis store: the decision taken when both variants reach the horizon
    is recorded, and a later `promote`, after feedback that would reverse it, repeats it ("one look")."""
    from types import SimpleNamespace

    from mlops import online_promotion
    from mlops.feedback import Credit

    champion_v, challenger_v = f"9{uuid.uuid4().int % 10**6}", f"8{uuid.uuid4().int % 10**6}"
    versions = {CHAMPION: SimpleNamespace(version=champion_v), CHALLENGER: SimpleNamespace(version=challenger_v)}
    monkeypatch.setattr(online_promotion, "version_by_alias", lambda _settings, alias: versions[alias])
    store = FeedbackStore.from_settings(settings)
    strict = settings.replace(promotion_min_users=30, promotion_alpha=0.05)

    def feedback(variant: str, version: str, hit: bool, users: range, tag: str) -> None:
        store.record([Credit(f"{tag}-{u}-{e}", u, e, variant, version, hit, None, True)
                      for u in users for e in range(3)], Counter())  # fmt: skip

    feedback(CHAMPION, champion_v, True, range(0, 40), "a")  # the champion's users hit, the challenger's miss
    feedback(CHALLENGER, challenger_v, False, range(100, 140), "a")
    first, _, _ = online_promotion.evaluate(strict, store)
    assert first.status == KEPT and "significantly worse on hit_rate" in first.reason
    recorded = store.decision(champion_v, challenger_v)
    assert recorded is not None and recorded["promote"] is False
    feedback(CHAMPION, champion_v, False, range(40, 400), "b")  # then the tide turns, massively
    feedback(CHALLENGER, challenger_v, True, range(140, 500), "b")
    again, _, _ = online_promotion.evaluate(strict, store)
    assert again.status == KEPT and again.reason.startswith("decided at the horizon on"), again.reason
    assert "(one look)" in again.reason and again.decision.tests[0].z > 3  # today's data alone would promote
    assert store.decision(champion_v, challenger_v) == recorded
    planned = online_promotion.plan_text(strict, store)  # `promote --plan`
    assert planned.startswith("fixed horizon: 30 users per variant and metric (PROMOTION_MIN_USERS)")
    assert "hit_rate: at 30 users per variant the test detects a difference of" in planned
    assert "needs 0 more champion and 0 more challenger users" in planned and "already decided:" in planned


def test_promote_keeps_the_champion_without_a_significant_win_and_promotes_on_one(
    settings, champion, challenger, topics
):
    """Both ways through the real registry and Redis: before the horizon, feedback where the challenger does
    worse changes nothing ("not yet"); at the horizon, once the challenger clearly wins overall, it is promoted
    (aliases moved, reasons on both versions)."""
    users = _users(settings, champion)
    early = settings.replace(promotion_min_users=len(users), promotion_alpha=0.05)  # more than either variant has
    strict = settings.replace(promotion_min_users=40, promotion_alpha=0.05)
    store = FeedbackStore.from_settings(settings)
    consumer = running(settings, topics, SHARE)
    try:
        tag = uuid.uuid4().hex[:8]
        answers = _ask(settings, topics, [TopKRequest(f"{tag}-a{u}", u, 5) for u in users])
        keys = {(a["variant"], a["model_version"]) for a in answers.values()}
        before = {key: store.stats(*key) for key in keys}
        sent = _feedback_round(settings, topics, answers, {CHAMPION: True, CHALLENGER: False}, 1)
        _wait_credited(store, before, sent)
        kept = promote(early, store)
        assert kept.status == KEPT and kept.reason.startswith("not yet"), kept.reason
        assert store.decision(champion.model_version, challenger) is None  # nothing recorded before the horizon
        assert champion_version(settings) == champion.model_version
        assert champion_version(settings, CHALLENGER) == challenger

        tag = uuid.uuid4().hex[:8]
        answers = _ask(settings, topics, [TopKRequest(f"{tag}-b{u}", u, 5) for u in users])
        before = {key: store.stats(*key) for key in keys}
        sent = _feedback_round(settings, topics, answers, {CHAMPION: False, CHALLENGER: True}, 5)
        _wait_credited(store, before, sent)
    finally:
        consumer.stop()
    won = promote(strict, store)
    assert won.status == PROMOTED, won.reason
    assert "significantly better on hit_rate" in won.reason
    assert champion_version(settings) == challenger
    assert champion_version(settings, CHALLENGER) is None
    c = client(settings)
    promoted = c.get_model_version(settings.model_name, challenger).tags
    demoted = c.get_model_version(settings.model_name, champion.model_version).tags
    assert promoted["online_decision"] == PROMOTED and "hit_rate" in promoted["online_reason"]
    assert demoted["online_decision"] == "demoted"
    assert RedisFeatureStore.from_settings(settings).current_version() == champion.feature_set
