"""Online champion/challenger, pure logic: the variant split, feedback validation and join, the statistics and
the promotion rule, the consumer's split of a batch and the challenger's reload states (fakes for the
rankers and the registry only; the real servers are in test_ab_stream.py)."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
from collections import Counter
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from sklearn.metrics import roc_auc_score

from mlops import schemas
from mlops.consumer.processor import BatchProcessor
from mlops.consumer.reload import ChallengerSource, ModelWatcher, RankerHolder
from mlops.feedback import PLATFORM_REQUEST, UNKNOWN_REQUEST, credit, organic_reason
from mlops.online_metrics import (
    VariantStats,
    auc_summary,
    clustered_auc,
    clustered_rate,
    decide,
    hit_rate,
    normal_sf,
    plan,
)
from mlops.schemas import Feedback, InvalidRequest, ScoreRequest, TopKRequest
from mlops.settings import Settings
from mlops.variants import CHALLENGER, CHAMPION, bucket, variant_of

# --- the split ------------------------------------------------------------------------------------------------


def test_split_matches_the_share_within_tolerance():
    users = range(50_000)
    for share in (0.1, 0.3, 0.5):
        observed = sum(variant_of(u, share) == CHALLENGER for u in users) / len(users)
        assert abs(observed - share) < 0.01, (share, observed)
    assert {variant_of(u, 0.0) for u in users} == {CHAMPION}
    assert {variant_of(u, 1.0) for u in users} == {CHALLENGER}


def test_split_is_sticky_and_monotone_in_the_share():
    users = range(5_000)
    assert [variant_of(u, 0.3) for u in users] == [variant_of(u, 0.3) for u in users]
    small = {u for u in users if variant_of(u, 0.2) == CHALLENGER}
    large = {u for u in users if variant_of(u, 0.4) == CHALLENGER}
    assert small < large  # raising the share only adds users to the challenger


def test_split_is_the_same_in_another_process_whatever_its_hash_seed():
    """Not Python's salted hash(): another process (another PYTHONHASHSEED) puts every user in the same bucket."""
    code = "from mlops.variants import bucket; print([bucket(u) for u in range(200)])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert eval(out) == [bucket(u) for u in range(200)]


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan])
def test_challenger_traffic_outside_0_1_sends_everyone_to_the_champion_and_says_why(value):
    share, problem = Settings(challenger_traffic=value).challenger_share()
    assert share == 0.0
    assert "CHALLENGER_TRAFFIC" in problem and "between 0 and 1" in problem and "champion" in problem
    assert Settings(challenger_traffic=0.25).challenger_share() == (0.25, None)


# --- feedback validation --------------------------------------------------------------------------------------

GOOD = {"request_id": "r1", "user_id": 5, "movie_id": 7, "rating": 4.5, "ts": "2026-11-29T12:00:00Z"}


def test_a_good_feedback_event_parses_and_round_trips():
    event = schemas.parse_feedback(orjson.dumps(GOOD))
    assert event == Feedback("r1", 5, 7, 4.5, "2026-11-29T12:00:00Z")
    assert schemas.parse_feedback(schemas.encode_feedback(event)) == event
    assert schemas.parse_feedback(orjson.dumps({**GOOD, "request_id": None})).request_id is None
    assert schemas.parse_feedback(orjson.dumps({**GOOD, "rating": 3})).rating == 3.0


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        ({"rating": 7}, schemas.RATING_OUT_OF_RANGE, "'rating' is 7"),
        ({"rating": 0}, schemas.RATING_OUT_OF_RANGE, "0.5..5.0"),
        ({"rating": "5"}, schemas.WRONG_TYPE, "'rating' must be a number, got string"),
        ({"rating": True}, schemas.WRONG_TYPE, "got boolean"),
        ({"ts": "yesterday"}, schemas.BAD_TIMESTAMP, "'ts' is 'yesterday'"),
        ({"ts": "1970-01-01T00:00:00Z"}, schemas.BAD_TIMESTAMP, "before 1995-01-01 (MovieLens' first ratings)"),
        ({"ts": "1994-12-31T23:59:59"}, schemas.BAD_TIMESTAMP, "a clock or unit error"),
        ({"ts": 1700000000}, schemas.WRONG_TYPE, "'ts' must be an ISO time string"),
        ({"movie_id": -1}, schemas.ID_OUT_OF_RANGE, "'movie_id' is -1"),
        ({"user_id": "5"}, schemas.WRONG_TYPE, "'user_id' must be an integer"),
        ({"request_id": ""}, schemas.BAD_REQUEST_ID, "non-empty string"),
        ({"request_id": 3}, schemas.BAD_REQUEST_ID, "request_id"),
    ],
)
def test_malformed_feedback_has_a_specific_reason(change, reason, words):
    with pytest.raises(InvalidRequest) as caught:
        schemas.parse_feedback(orjson.dumps({**GOOD, **change}))
    assert caught.value.reason == reason and reason in schemas.FEEDBACK_REASONS
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"not json", schemas.NOT_JSON), (b"[1]", schemas.NOT_OBJECT), (None, schemas.NOT_JSON),
     (orjson.dumps({k: v for k, v in GOOD.items() if k != "request_id"}), schemas.MISSING_FIELD),
     (orjson.dumps({k: v for k, v in GOOD.items() if k != "rating"}), schemas.MISSING_FIELD),
     (b'{"a":' * 20 + b"1" + b"}" * 20, schemas.TOO_DEEP)],
)  # fmt: skip
def test_unreadable_feedback_has_a_reason(raw, reason):
    with pytest.raises(InvalidRequest) as caught:
        schemas.parse_feedback(raw)
    assert caught.value.reason == reason


# --- the join -------------------------------------------------------------------------------------------------


def _topk(variant: str, version: str = "4", user: int = 5) -> bytes:
    return schemas.topk_result(TopKRequest("r1", user, 2), [(7, 0.9), (8, 0.5)], version, "fs", False, "t", variant)


def _scored(variant: str, version: str = "4", user: int = 5) -> bytes:
    return schemas.score_result(ScoreRequest("r1", user, (7, 9)), {7: 0.8, 9: 0.1}, version, "fs", False, "t",
                                variant)  # fmt: skip


def test_join_credits_the_variant_and_version_that_served():
    event = Feedback("r1", 5, 7, 4.5, "t")
    hit = credit(event, _topk(CHALLENGER, "6"))
    assert (hit.variant, hit.model_version, hit.hit, hit.score, hit.liked) == (CHALLENGER, "6", True, None, True)
    miss = credit(Feedback("r1", 5, 99, 2.0, "t"), _topk(CHAMPION))
    assert (miss.variant, miss.hit, miss.liked) == (CHAMPION, False, False)
    pair = credit(event, _scored(CHAMPION))
    assert (pair.hit, pair.score, pair.liked) == (None, 0.8, True)
    unscored = credit(Feedback("r1", 5, 12, 4.0, "t"), _scored(CHAMPION))
    assert unscored.score is None and unscored.variant == CHAMPION


def test_null_or_unknown_request_id_is_organic():
    assert credit(Feedback(None, 5, 7, 4.0, "t"), _topk(CHALLENGER)) is None
    assert credit(Feedback("gone", 5, 7, 4.0, "t"), None) is None


def test_feedback_naming_another_users_request_is_refused():
    with pytest.raises(InvalidRequest) as caught:
        credit(Feedback("r1", 6, 7, 4.0, "t"), _topk(CHAMPION, user=5))
    assert caught.value.reason == schemas.USER_MISMATCH and "user 5" in str(caught.value)


# --- statistics -----------------------------------------------------------------------------------------------


def test_clustered_rate_is_the_ratio_and_its_se_matches_a_cluster_bootstrap():
    """Hits over events summed over users; the standard error, with users as clusters, matches resampling users
    (and is larger than the naive binomial one when a user's events are correlated)."""
    rng = np.random.default_rng(5)
    trials = rng.integers(1, 30, 400).astype(float)
    hits = rng.binomial(trials.astype(int), rng.beta(1, 6, 400)).astype(float)
    rate, se = clustered_rate(hits, trials)
    assert rate == pytest.approx(hits.sum() / trials.sum())
    boots = []
    for _ in range(400):
        i = rng.integers(0, 400, 400)
        boots.append(hits[i].sum() / trials[i].sum())
    assert se == pytest.approx(np.std(boots), rel=0.15)
    assert se > 1.5 * math.sqrt(rate * (1 - rate) / trials.sum())  # the events are not independent
    assert math.isnan(clustered_rate(np.array([1.0]), np.array([3.0]))[0])
    assert normal_sf(1.959963984540054) == pytest.approx(0.025, abs=1e-9)


def test_clustered_auc_matches_sklearn_and_its_se_matches_a_cluster_bootstrap():
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(150), 8)
    liked = rng.random(len(users)) < 0.4
    taste = rng.normal(0, 0.7, 150)[users]  # each user's scores move together
    scores = np.round(rng.normal(liked * 0.8 + taste, 1.0), 1)  # rounded: ties
    area, se = clustered_auc(scores, liked, users)
    assert area == pytest.approx(roc_auc_score(liked, scores), abs=1e-12)
    boots = []
    for _ in range(300):
        chosen = rng.integers(0, 150, 150)
        rows = np.concatenate([np.flatnonzero(users == u) for u in chosen])
        boots.append(roc_auc_score(liked[rows], scores[rows]))
    assert se == pytest.approx(np.std(boots), rel=0.2)
    assert math.isnan(clustered_auc(np.array([0.1, 0.2]), np.array([True, True]), np.array([1, 2]))[0])


def _stats(variant: str, hit_p: float, users: int, area_shift: float = 0.0, pair_users: int = 0, seed: int = 0):
    """`users` users with 5 top-k events each at hit rate `hit_p`; `pair_users` users with 4 scored pairs each."""
    rng = np.random.default_rng(seed)
    trials = np.full(users, 5.0)
    hits = rng.binomial(5, hit_p, users).astype(float)
    owners = np.repeat(np.arange(pair_users), 4)
    liked = rng.random(len(owners)) < 0.5
    scores = rng.normal(liked * area_shift, 1.0)
    version = "1" if variant == CHAMPION else "2"
    return VariantStats(variant, version, int(trials.sum()) + len(owners), trials, hits, scores, liked, owners)


def test_promotes_only_on_a_significant_win():
    champion = _stats(CHAMPION, 0.30, 400)
    decision = decide(champion, _stats(CHALLENGER, 0.40, 400, seed=1), min_users=200, alpha=0.05)
    assert decision.promote and "significantly better on hit_rate" in decision.reason and decision.final


def test_keeps_the_champion_without_a_significant_difference():
    decision = decide(_stats(CHAMPION, 0.30, 400), _stats(CHALLENGER, 0.31, 400), min_users=200, alpha=0.05)
    assert not decision.promote and decision.reason.startswith("no significant difference")
    assert decision.tests[0].p_better > 0.05


def test_a_win_on_one_metric_does_not_cover_a_loss_on_another():
    champion = _stats(CHAMPION, 0.30, 400, area_shift=1.5, pair_users=300, seed=1)
    challenger = _stats(CHALLENGER, 0.40, 400, area_shift=0.2, pair_users=300, seed=2)
    decision = decide(champion, challenger, min_users=200, alpha=0.05)
    assert not decision.promote and "significantly worse on auc" in decision.reason
    assert decision.alpha_per_test == pytest.approx(0.025)  # Bonferroni over the two metrics


def test_before_the_horizon_it_is_not_yet_and_says_how_many_users():
    decision = decide(_stats(CHAMPION, 0.1, 100), _stats(CHALLENGER, 0.9, 150), min_users=200, alpha=0.05)
    assert not decision.promote and not decision.final and decision.reason.startswith("not yet")
    assert "200 users" in decision.reason and "has 100 and 0 users" in decision.reason and "v2 150" in decision.reason


def test_a_perfectly_separated_difference_is_certain_not_zero():
    """All hits against all misses: both standard errors are 0, and the difference must still count."""
    ones, zeros = np.full(300, 3.0), np.zeros(300)
    champion = VariantStats(CHAMPION, "1", 900, ones, zeros)
    challenger = VariantStats(CHALLENGER, "2", 900, ones, ones)
    decision = decide(champion, challenger, min_users=200, alpha=0.05)
    assert decision.promote and decision.tests[0].z == math.inf
    assert not decide(challenger, champion, min_users=200, alpha=0.05).promote


def test_auc_alone_can_decide():
    champion = _stats(CHAMPION, 0, 0, area_shift=0.3, pair_users=500, seed=3)
    challenger = _stats(CHALLENGER, 0, 0, area_shift=1.2, pair_users=500, seed=4)
    decision = decide(champion, challenger, min_users=200, alpha=0.05)
    assert decision.promote and [t.metric for t in decision.tests] == ["auc"]
    assert auc_summary(challenger).low > auc_summary(champion).high


def test_the_plan_shrinks_the_detectable_difference_with_more_users():
    champion, challenger = _stats(CHAMPION, 0.3, 300, pair_users=300), _stats(CHALLENGER, 0.3, 120, seed=1)
    small, large = plan(champion, challenger, 100, 0.05), plan(champion, challenger, 400, 0.05)
    assert [p.metric for p in small] == ["hit_rate", "auc"]
    assert large[0].detectable == pytest.approx(small[0].detectable / 2, rel=1e-9)
    assert "needs 100 more champion and 280 more challenger users" in large[0].line(400)
    sd = hit_rate(champion).se * math.sqrt(300)
    assert small[0].per_user_sd == pytest.approx(sd)


# --- the consumer's split of a batch --------------------------------------------------------------------------


class FakeRanker:
    def __init__(self, version: str, fail: bool = False) -> None:
        self.info = SimpleNamespace(model_version=version, feature_set=f"fs{version}")
        self.fail = fail
        self.users_seen: list[int] = []

    live = False

    def users(self, online):
        return online.users

    def score_with_flags(self, users, movie_ids, observed=None):
        if self.fail:
            raise ValueError("broken model")
        self.users_seen += [u["user_id"] for u in users]
        return [{m: 0.5 for m in ms} for ms in movie_ids], [False] * len(users)

    def recommend_with_flags(self, users, ks):
        self.users_seen += [u["user_id"] for u in users]
        return [[(1, 0.9)] * k for k in ks], [False] * len(users)


class FakeStore:
    def __init__(self) -> None:
        self.versions: list[str] = []

    def get_online_features(self, user_ids, movie_ids, version, live=False):
        self.versions.append(version)
        return SimpleNamespace(users={u: {"user_id": u} for u in user_ids})


def _processor(share: float) -> tuple[BatchProcessor, FakeStore]:
    store = FakeStore()
    return BatchProcessor(store, SimpleNamespace(register_script=lambda _s: None), 60, share), store


def test_batch_is_split_by_user_and_each_result_records_its_variant_and_version():
    processor, store = _processor(0.5)
    champion, challenger = FakeRanker("1"), FakeRanker("2")
    requests = [ScoreRequest(f"r{u}", u, (1, 2)) for u in range(200)]
    predicted = processor.predict(requests, champion, challenger)
    for request, p in zip(requests, predicted, strict=True):
        doc = orjson.loads(p.payload)
        assert doc["variant"] == p.variant == variant_of(request.user_id, 0.5)
        assert doc["model_version"] == ("2" if p.variant == CHALLENGER else "1")
    assert set(challenger.users_seen) == {r.user_id for r in requests if variant_of(r.user_id, 0.5) == CHALLENGER}
    assert sorted(store.versions) == ["fs1", "fs2"]  # each variant reads its own feature set, once per batch


def test_without_a_challenger_the_batch_takes_the_champion_path_alone():
    processor, store = _processor(0.5)
    predicted = processor.predict([TopKRequest("a", 1, 3), TopKRequest("b", 2, 3)], FakeRanker("1"), None)
    assert {p.variant for p in predicted} == {CHAMPION} and store.versions == ["fs1"]


def test_a_failing_challenger_leaves_its_users_to_the_champion():
    processor, _ = _processor(1.0)
    predicted = processor.predict([ScoreRequest("a", 1, (3,))], FakeRanker("1"), FakeRanker("2", fail=True))
    assert [p.variant for p in predicted] == [CHAMPION] and processor.challenger_failures == 1


# --- following the challenger alias ---------------------------------------------------------------------------


def test_challenger_states_are_followed_and_each_said_once(caplog):
    aliases = {"champion": "1", "challenger": None}
    loads = Counter()

    def load(alias):
        loads[alias] += 1
        if aliases[alias] == "9":
            raise LookupError("feature set expired")
        return FakeRanker(aliases[alias])

    holder = RankerHolder()
    source = ChallengerSource(lambda: aliases["challenger"], lambda: load("challenger"), 0.3)
    watcher = ModelWatcher(holder, lambda: aliases["champion"], lambda: load("champion"), 1, threading.Event(), source)
    with caplog.at_level(logging.WARNING):
        watcher.check_once()
        watcher.check_once()
    assert holder.ranker.info.model_version == "1" and holder.challenger is None
    said = [r.getMessage() for r in caplog.records if "no `challenger` alias" in r.getMessage()]
    assert len(said) == 1 and "CHALLENGER_TRAFFIC=0.3" in said[0] and "all traffic goes to the champion" in said[0]

    aliases["challenger"] = "2"
    watcher.check_once()
    assert holder.challenger.info.model_version == "2"
    aliases["challenger"] = "9"  # cannot be loaded: retired, champion serves all, not retried at every check
    watcher.check_once()
    watcher.check_once()
    assert holder.challenger is None and loads["challenger"] == 2
    aliases["challenger"] = "1"  # the alias on the champion's own version: nothing to compare
    watcher.check_once()
    assert holder.challenger is None and "champion's own version 1" in watcher.challenger_state


def test_feedback_on_a_platform_request_is_organic_never_credited():
    """The platform's own requests (verify, pokes, Try-it) never reach the online metrics: their feedback is
    counted as organic with its own reason."""
    request = schemas.TopKRequest("p-1", 9, 2, schemas.PLATFORM)
    stored = schemas.topk_result(request, [(5, 0.9), (6, 0.8)], "4", "v1", False, "t")
    event = schemas.Feedback("p-1", 9, 5, 5.0, "2026-12-07T00:00:00Z")
    assert credit(event, stored) is None
    assert organic_reason(event, stored) == PLATFORM_REQUEST
    assert organic_reason(event, None) == UNKNOWN_REQUEST
    user_stored = schemas.topk_result(schemas.TopKRequest("p-1", 9, 2), [(5, 0.9)], "4", "v1", False, "t")
    assert credit(event, user_stored).hit is True
