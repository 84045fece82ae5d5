"""The stream keeps each user's history fresh (issue 26): a rating event reaches the user's next answer, the
features it updates are exactly those the next batch run computes from the same ratings, and bad events
change nothing. Real consumer, broker, Redis, MLflow and Spark; the pure update rule is checked alone first."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
import pytest
from test_stream import InProcessConsumer

from mlops import features as fx
from mlops import live_ratings, schemas
from mlops.consumer.client import Sender, TopicListener, dead_letter_original, exchange
from mlops.consumer.kafka import StreamTopics, delete_topics, ensure_topics
from mlops.feature_store import RedisFeatureStore
from mlops.live_ratings import LiveRatings
from mlops.schemas import Feedback, TopKRequest, encode_feedback, request_key

RUN_ID = "stream-tests"
GENRES = {m: np.eye(len(fx.GENRE_SLUGS))[m % len(fx.GENRE_SLUGS)] for m in range(1, 50)}


# -- the rule alone ----------------------------------------------------------------------------------------------


def test_ratings_applied_in_two_steps_equal_ratings_applied_at_once() -> None:
    """The sums behind each column are recovered from a row exactly, so applying ratings in any grouping agrees."""
    ratings = [(m, r) for m, r in zip(range(1, 41), np.resize([1.0, 3.5, 4.0, 5.0, 2.5, 4.5], 40), strict=True)]
    at_once = fx.with_ratings(None, ratings, GENRES.__getitem__)
    # stored rows are float32, as the batch writes them
    lists = (fx.RATED_COLUMN, fx.LIKED_COLUMN)
    first = {k: (v if k in lists or v is None else float(np.float32(v)))
             for k, v in fx.with_ratings(None, ratings[:17], GENRES.__getitem__).items()}  # fmt: skip
    in_two = fx.with_ratings(first, ratings[17:], GENRES.__getitem__)
    assert in_two[fx.RATED_COLUMN] == at_once[fx.RATED_COLUMN] == list(range(1, 41))
    assert in_two[fx.LIKED_COLUMN] == at_once[fx.LIKED_COLUMN] == [m for m, r in ratings if r >= fx.LIKE_THRESHOLD]
    for column in (c for c in fx.STREAM_UPDATED if c not in lists):
        a, b = at_once[column], in_two[column]
        assert (a is None and b is None) or abs(a - b) < 1e-6, (column, a, b)
    values = np.array([r for _, r in ratings])
    assert at_once["u_n_ratings"] == 40 and at_once["u_mean_rating"] == pytest.approx(values.mean())
    assert at_once["u_std_rating"] == pytest.approx(values.std())
    assert at_once["u_like_rate"] == pytest.approx((values >= 4).mean())


def test_a_re_rating_of_a_movie_the_row_has_changes_nothing() -> None:
    """One rating per (user, movie): the row does not keep the old rating, so the batch replaces it, not the stream."""
    row = fx.with_ratings(None, [(1, 2.0), (2, 3.0)], GENRES.__getitem__)
    assert fx.with_ratings(row, [(2, 5.0)], GENRES.__getitem__) == row


def test_a_user_without_likes_has_no_liked_genre_profile_and_keeps_the_batch_cf_vector() -> None:
    row = fx.with_ratings({"u_cf_00": 0.5, "u_n_ratings": 0.0}, [(1, 2.0), (2, 3.0)], GENRES.__getitem__)
    assert row["u_like_rate"] == 0 and all(row[c] is None for c in fx.USER_GENRE_LIKED)
    assert row["u_cf_00"] == 0.5 and row["u_genre_share_" + fx.GENRE_SLUGS[1]] == 0.5


def test_status_says_how_many_how_fast_and_how_fresh() -> None:
    assert "none applied yet" in live_ratings.freshness_line({}, 1000.0)
    line = live_ratings.freshness_line(
        {"events": 1234, "rate_per_s": 9.5, "newest_event_s": 990.0, "applied_at_s": 995.0, "lag_s": 0.042}, 1000.0
    )
    assert line == "1,234 ratings applied; 9.5/s lately; newest event 10 s old, applied 5 s ago with lag 42 ms"


# -- through the stream ------------------------------------------------------------------------------------------


@pytest.fixture
def topics(settings, champion):
    names = StreamTopics.namespaced(f"l{uuid.uuid4().hex[:10]}")
    ensure_topics(settings, names)
    yield names
    delete_topics(settings, names)


@pytest.fixture
def consumer(settings, topics):
    running = InProcessConsumer(settings, topics, watch=False)
    yield running
    running.stop()


def _send(settings, topics, events: list[Feedback], repeat: int = 1) -> None:
    sender = Sender(settings, topics.feedback)
    for _ in range(repeat):
        for event in events:
            sender.send_raw(encode_feedback(event), request_key(event.user_id))
    sender.flush()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _wait_applied(settings, users: list[int], count: int, timeout: float = 30.0) -> float:
    """Seconds until the users' overlays hold `count` ratings in all (the reader applied them)."""
    live = LiveRatings(RedisFeatureStore.from_settings(settings).r)
    started = time.monotonic()
    while sum(len(v) for v in live.ratings(users).values()) < count:
        assert time.monotonic() - started < timeout, live.ratings(users)
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.integration
@pytest.mark.slow
def test_a_movie_rated_through_the_stream_leaves_the_users_next_recommendations(settings, topics, consumer) -> None:
    store = RedisFeatureStore.from_settings(settings)
    user = store.ids(consumer.watcher.holder.ranker.info.feature_set, "user")[7]
    store.r.delete(live_ratings.key(user))
    with exchange(settings, topics) as ex:

        def top10(tag: str) -> list[int]:
            request = TopKRequest(f"{tag}-{uuid.uuid4().hex[:8]}", user, 10)
            ex.sender.send(request)
            ex.sender.flush()
            assert ex.results.wait_for([request.request_id], 60) == set()
            return [r["movie_id"] for r in orjson.loads(ex.results.received[request.request_id][1])["recommendations"]]

        before = top10("before")
        sent = time.monotonic()
        _send(settings, topics, [Feedback(None, user, before[0], 5.0, schemas.utc_now_iso())])
        applied = _wait_applied(settings, [user], 1)
        after = top10("after")
        answered = time.monotonic() - sent
    assert before[0] not in after and len(after) == 10
    assert after[:9] != before[:9] or after[:9] == before[1:10]  # the rest is ranked with the new history
    print(f"rating applied {applied * 1000:.0f} ms after it was sent; next answer without it {answered:.2f} s")
    store.r.delete(live_ratings.key(user))


@pytest.mark.integration
@pytest.mark.slow
def test_the_stream_computes_the_features_the_next_batch_computes_from_the_same_ratings(
    settings, topics, consumer
) -> None:
    """N events through the real broker (twice each: a redelivery changes nothing; plus a replayed batch rating,
    older than the set's cutoff, which is skipped), then the batch's own code over the ingested ratings plus
    those events: the same user columns, every one the stream updates."""
    from mlops.jobs.feature_engineering import FeatureParams, serving_features
    from mlops.layout import normalized_key, split_key
    from mlops.spark_io import read_pandas, spark_session

    ranker = consumer.watcher.holder.ranker
    store = RedisFeatureStore.from_settings(settings)
    ratings = pd.concat([read_pandas(split_key(RUN_ID, p), settings) for p in ("train", "validation", "test")])
    rng = np.random.default_rng(7)
    catalog = [int(m) for m in ranker.core.catalog.movie_ids]
    users = [int(u) for u in rng.choice(sorted(ratings["user_id"].unique()), 12, replace=False)]
    newcomer = int(ratings["user_id"].max()) + 1000  # unknown to the batch: the stream starts a profile
    now = time.time()
    events = [Feedback(None, int(u), int(m), float(r), _iso(now - 60 + k))
              for k, (u, m, r) in enumerate(zip(rng.choice([*users, newcomer], 120), rng.choice(catalog, 120),
                                                rng.choice(np.arange(1, 11) / 2, 120), strict=True))]  # fmt: skip
    # One rating per (user, movie), as the data contract has it: no re-rating of a movie rated before.
    known = set(zip(ratings["user_id"].astype(int), ratings["movie_id"].astype(int), strict=True))
    events = [e for e in {(e.user_id, e.movie_id): e for e in events}.values() if (e.user_id, e.movie_id) not in known]
    old = ratings.iloc[0]  # a batch rating replayed: before the cutoff, so already counted
    replay = Feedback(None, int(old.user_id), int(old.movie_id), float(old.rating), _iso(float(old.timestamp)))
    touched = sorted({e.user_id for e in events} | {replay.user_id})
    store.r.delete(*[live_ratings.key(u) for u in touched])
    _send(settings, topics, [*events, replay], repeat=2)
    _wait_applied(settings, touched, len(events) + 1)
    time.sleep(0.5)  # the redelivered copies too
    overlays = LiveRatings(store.r).ratings(touched)
    assert sum(len(v) for v in overlays.values()) == len(events) + 1  # nothing applied twice
    streamed = ranker.users(store.get_online_features(touched, (), ranker.info.feature_set, live=True))

    new_rows = pd.DataFrame({"user_id": [e.user_id for e in events], "movie_id": [e.movie_id for e in events],
                             "rating": [e.rating for e in events],
                             "timestamp": [int(e.epoch()) for e in events]})  # fmt: skip
    spark = spark_session("tests-live-ratings", settings)
    everything = pd.concat([ratings[new_rows.columns], new_rows], ignore_index=True)
    frame = spark.createDataFrame(everything.astype({"user_id": "int32", "movie_id": "int32", "timestamp": "int64"}))
    movies = spark.createDataFrame(read_pandas(normalized_key(RUN_ID, "movies"), settings))
    batch = serving_features(spark, frame, movies, FeatureParams(seed=settings.seed), RUN_ID)["online_users"]
    rows = {int(r["user_id"]): r for r in batch.where(batch.user_id.isin(touched)).toPandas().to_dict("records")}
    assert set(rows) == set(touched)
    for user in touched:
        for listed in (fx.RATED_COLUMN, fx.LIKED_COLUMN):
            assert sorted(map(int, rows[user][listed])) == streamed[user][listed], (user, listed)
        for column in fx.STREAM_UPDATED[:-2]:
            want, got = rows[user][column], streamed[user][column]
            if want is None or want != want:
                assert got is None, (user, column, got)
            else:
                assert got == pytest.approx(want, rel=1e-5, abs=1e-6), (user, column)
    store.r.delete(*[live_ratings.key(u) for u in touched])


@pytest.mark.integration
@pytest.mark.slow
def test_a_movie_the_catalog_lacks_or_a_future_time_is_dead_lettered_and_a_new_user_gets_a_profile(
    settings, topics, consumer
) -> None:
    ranker = consumer.watcher.holder.ranker
    store = RedisFeatureStore.from_settings(settings)
    newcomer = max(store.ids(ranker.info.feature_set, "user")) + 2000
    store.r.delete(live_ratings.key(newcomer))
    liked = [int(m) for m in ranker.core.catalog.movie_ids[:3]]
    bad = Feedback(None, newcomer, 10**9, 4.0, schemas.utc_now_iso())
    future = Feedback(None, newcomer, liked[0], 1.0, "2999-01-01T00:00:00Z")  # would hold the entry for good
    dead = TopicListener(settings, topics.feedback_dlq, key_of=dead_letter_original)
    dead.start()
    try:
        good = [Feedback(None, newcomer, m, 5.0, schemas.utc_now_iso()) for m in liked]
        _send(settings, topics, [bad, future, *good])
        _wait_applied(settings, [newcomer], len(liked))
        assert dead.wait_for([encode_feedback(bad), encode_feedback(future)], 60) == set()
        letter = orjson.loads(dead.received[encode_feedback(bad)][1])
        assert orjson.loads(dead.received[encode_feedback(future)][1])["reason"] == schemas.BAD_TIMESTAMP
    finally:
        dead.close()
    assert letter["reason"] == schemas.UNKNOWN_MOVIE and "1000000000" in letter["detail"], letter
    assert sorted(m for m, _, _ in LiveRatings(store.r).ratings([newcomer])[newcomer]) == sorted(liked)  # not the bad
    with exchange(settings, topics) as ex:
        request = TopKRequest(f"new-{uuid.uuid4().hex[:8]}", newcomer, 10)
        ex.sender.send(request)
        ex.sender.flush()
        assert ex.results.wait_for([request.request_id], 60) == set()
        answer = orjson.loads(ex.results.received[request.request_id][1])
    assert answer["fallback"] is False  # known now: answered from the ratings the stream applied
    assert not {r["movie_id"] for r in answer["recommendations"]} & set(liked)
    store.r.delete(live_ratings.key(newcomer))


@pytest.mark.integration
@pytest.mark.slow
def test_each_set_applies_the_ratings_since_its_own_cutoff(settings, champion) -> None:
    """What makes a promotion or a rollback move everything together: the live ratings belong to no set, and
    each ranker applies those at or after its own set's cutoff. A set built later (a later cutoff) applies
    fewer; an older one (a rollback) gets back every rating since its cutoff, nothing lost."""
    from mlops.registry import CHAMPION
    from mlops.serving import Ranker

    store = RedisFeatureStore.from_settings(settings)
    served = Ranker.load(settings, store, alias=CHAMPION, compiled=False)
    user = store.ids(served.info.feature_set, "user")[3]
    movies = [m for m in map(int, served.core.catalog.movie_ids) if m not in set(
        store.get_online_features([user], (), served.info.feature_set).users[user][fx.RATED_COLUMN])][:3]  # fmt: skip
    now = time.time()
    store.r.delete(live_ratings.key(user))
    LiveRatings(store.r).apply([live_ratings.LiveRating(user, m, 5.0, now - 100 * k) for k, m in enumerate(movies)])
    online = store.get_online_features([user], (), served.info.feature_set, live=True)
    batch_row = online.users[user]

    def rated_with_cutoff(cutoff: float | None) -> set[int]:
        ranker = Ranker(served.core, served.info, cutoff)
        return set(ranker.users(online)[user][fx.RATED_COLUMN]) - set(batch_row[fx.RATED_COLUMN])

    assert rated_with_cutoff(served.live_cutoff) == set(movies)  # the serving set's own cutoff is long before
    assert rated_with_cutoff(now - 150) == set(movies[:2])  # a set built 150 s ago already had the oldest
    assert rated_with_cutoff(now + 1) == set()  # a set built after all of them
    assert rated_with_cutoff(None) == set()  # the evaluation set (parity): the set as loaded
    store.r.delete(live_ratings.key(user))


@pytest.mark.integration
@pytest.mark.slow
def test_kill_9_of_the_updater_mid_stream_loses_no_rating_and_applies_none_twice(settings, topics, tmp_path) -> None:
    """The feedback reader commits its offsets only after Redis holds the batch, and an event applied again
    changes nothing: a consumer killed with SIGKILL mid-stream and started again ends with every rating applied
    exactly once (each to a synthetic user of its own, so the count is exact)."""
    import signal

    from test_stream import ConsumerProcess, _port

    store = RedisFeatureStore.from_settings(settings)
    live = LiveRatings(store.r)
    movies = [int(m) for m in store.ids(store.current_version(), "item")]
    users = [10**14 + k for k in range(4000)]
    store.r.delete(*[live_ratings.key(u) for u in users])
    before = live.stats().get("events", 0)
    first = ConsumerProcess(topics, tmp_path / "first.log", _port())
    first.wait_healthy(600)
    events = [Feedback(None, u, movies[u % len(movies)], 4.0, schemas.utc_now_iso()) for u in users]

    def paced() -> None:  # about 4 s of traffic, so that the kill lands in the middle of it
        for start in range(0, len(events), 100):
            _send(settings, topics, events[start : start + 100])
            time.sleep(0.1)

    sender = threading.Thread(target=paced)
    sender.start()
    deadline = time.monotonic() + 60
    while len(live.ratings(users[:1000])) < 200 and time.monotonic() < deadline:  # it is applying
        time.sleep(0.01)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    applied_at_kill = len(live.ratings(users))
    sender.join()
    second = ConsumerProcess(topics, tmp_path / "second.log", _port())
    try:
        second.wait_healthy(600)
        _wait_applied(settings, users, len(users), timeout=120)
        time.sleep(1)  # a redelivered batch would be applied by now
        overlays = live.ratings(users)
        assert set(overlays) == set(users) and all(len(v) == 1 for v in overlays.values())
        assert live.stats()["events"] - before == len(users)  # none counted twice
    finally:
        second.proc.terminate()
        second.proc.wait(30)
        store.r.delete(*[live_ratings.key(u) for u in users])
    print(f"killed after {applied_at_kill} of {len(users)} ratings were applied; all {len(users)} once after restart")
