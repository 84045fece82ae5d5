"""Drift in the stream.

Pure parts (window, gauges, the status line) with a stand-in ranker and store; then the real consumer
(`app.build`: real Ranker from the registry, real Redis, broker and MLflow) on an unshifted stream (the
test pairs the reference was built from) and a shifted one (the same users, the least-rated movies).
"""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlops import drift
from mlops import features as fx
from mlops.consumer import drift_watch as dw
from mlops.status import drift_summary

N = len(fx.FEATURE_NAMES)


def reference(rng: np.random.Generator, n: int = 5000) -> dict:
    x = rng.normal(0, 1, (n, N))
    return {**drift.reference_profile(x, fx.FEATURE_NAMES, rng.beta(2, 5, n)), "model_version": "3"}


class Store:
    def __init__(self, profile: dict | None) -> None:
        self.profile = profile

    def reference_profile(self, feature_set: str) -> dict | None:
        return self.profile


def ranker(version: str = "3") -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(model_version=version, feature_set="fs-1"),
                           core=SimpleNamespace(observer=None))  # fmt: skip


def watch(profile: dict | None, capacity: int = 2000) -> tuple[dw.DriftWatch, CollectorRegistry]:
    registry = CollectorRegistry()
    stop = threading.Event()
    stop.set()  # no background thread here: the tests call refresh()
    return dw.DriftWatch(registry, Store(profile), capacity, stop), registry


def feed(r: SimpleNamespace, rng: np.random.Generator, batches: int, shift: float = 0.0) -> None:
    for _ in range(batches):
        x = rng.normal(0, 1, (300, N))
        x[:, fx.FEATURE_NAMES.index("i_n_ratings")] += shift
        r.core.observer(x, rng.beta(2, 5, 300))


def test_window_keeps_the_latest_rows_sampled_per_batch() -> None:
    window = dw.DriftWindow("1", None, capacity=100, names=("a",))
    for value in range(5):
        window.add(np.full((1000, 1), float(value)), np.zeros(1000))  # 64 sampled rows per batch
    rows = window.snapshot()
    assert len(rows) == 100 and window.filled == 100
    assert set(rows[:, 0]) == {3.0, 4.0}  # the oldest rows are gone


def test_no_drift_then_drift_on_a_shifted_stream() -> None:
    rng = np.random.default_rng(1)
    w, registry = watch(reference(rng))
    r = ranker()
    w.use(r)
    assert w.refresh() is None  # not enough rows yet: nothing exported as if it were measured
    feed(r, rng, 40)
    result = w.refresh()
    assert max(d.psi for d in result.values()) < drift.PSI_THRESHOLD
    psi = registry.get_sample_value(dw.FEATURE_PSI, {"feature": "i_n_ratings", "model_version": "3"})
    assert psi is not None and psi < drift.PSI_THRESHOLD
    assert "v3: no drift" in drift_summary(generate_latest(registry).decode())

    feed(r, rng, 40, shift=1.5)  # the window (2000 rows) now holds only shifted traffic
    result = w.refresh()
    assert result["i_n_ratings"].psi > drift.PSI_THRESHOLD and result["i_n_ratings"].ks > 0.3
    assert registry.get_sample_value(dw.FEATURE_PSI, {"feature": "i_n_ratings", "model_version": "3"}) > 0.2
    others = [d.psi for name, d in result.items() if name != "i_n_ratings"]
    assert max(others) < drift.PSI_THRESHOLD
    line = drift_summary(generate_latest(registry).decode())
    assert "DRIFT in 1 input(s)" in line and "worst input i_n_ratings" in line


def test_a_version_without_profile_is_unavailable_not_zero() -> None:
    rng = np.random.default_rng(2)
    for profile in (None, {**reference(rng), "model_version": "2"}):  # none, or another version's
        w, registry = watch(profile)
        r = ranker()
        w.use(r)
        feed(r, rng, 40)
        assert w.refresh() is None
        assert registry.get_sample_value(dw.REFERENCE_AVAILABLE, {"model_version": "3"}) == 0
        text = generate_latest(registry).decode()
        assert dw.FEATURE_PSI + "{" not in text  # no drift series at all, in particular no zeros
        assert "unavailable" in drift_summary(text)


def test_a_new_version_starts_a_fresh_window_and_drops_the_old_series() -> None:
    rng = np.random.default_rng(3)
    w, registry = watch(reference(rng))
    first = ranker("3")
    w.use(first)
    feed(first, rng, 40)
    w.refresh()
    w.use(ranker("4"))  # no profile for v4 (the store holds v3's)
    assert w.window.filled == 0
    assert registry.get_sample_value(dw.FEATURE_PSI, {"feature": "i_n_ratings", "model_version": "3"}) is None
    assert registry.get_sample_value(dw.REFERENCE_AVAILABLE, {"model_version": "4"}) == 0


# -- the real consumer ------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_real_consumer_reports_drift_on_a_shifted_stream_only(settings, champion) -> None:
    from mlops.consumer import app
    from mlops.consumer.client import Sender, TopicListener
    from mlops.consumer.kafka import StreamTopics, delete_topics, ensure_topics
    from mlops.feature_store import RedisFeatureStore
    from mlops.layout import split_key
    from mlops.schemas import ScoreRequest
    from mlops.spark_io import read_pandas

    store = RedisFeatureStore.from_settings(settings)
    profile = store.reference_profile(champion.feature_set)
    assert profile is not None and profile["model_version"] == str(champion.model_version)
    test = read_pandas(split_key("stream-tests", "test"), settings)
    items = store.get_all_items(champion.feature_set)
    rarest = sorted(items, key=lambda m: items[m]["i_n_ratings"] or 0)[:50]
    by_user = test.groupby("user_id")["movie_id"].apply(list)

    def run_stream(shifted: bool) -> dict[str, drift.Drift]:
        topics = StreamTopics.namespaced(f"d{uuid.uuid4().hex[:10]}")
        ensure_topics(settings, topics)
        service, watcher = app.build(settings.replace(inference_batch_size=10), 0, topics)
        assert app.wait_for_model(watcher, service)
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        try:
            tag = uuid.uuid4().hex[:8]
            requests = [
                ScoreRequest(f"{tag}-{u}", int(u), tuple(rarest if shifted else movies))
                for u, movies in by_user.items()
            ]
            listener = TopicListener(settings, topics.predictions)
            listener.start()
            sender = Sender(settings, topics.requests)
            for request in requests:
                sender.send(request)
            sender.flush()
            try:
                assert listener.wait_for([r.request_id for r in requests], 180) == set()
            finally:
                listener.close()
            registry = service.metrics.registry
            version = str(champion.model_version)
            deadline = time.monotonic() + dw.INTERVAL_S * 3
            while time.monotonic() < deadline:
                if registry.get_sample_value(dw.PREDICTION_PSI, {"model_version": version}) is not None:
                    break
                time.sleep(0.5)
            assert registry.get_sample_value(dw.REFERENCE_AVAILABLE, {"model_version": version}) == 1
            return {
                name: registry.get_sample_value(dw.FEATURE_PSI, {"feature": name, "model_version": version})
                for name in fx.FEATURE_NAMES
            }
        finally:
            service.stop()
            thread.join(30)
            delete_topics(settings, topics)

    unshifted = run_stream(shifted=False)
    assert all(v is not None for v in unshifted.values()), unshifted
    assert max(unshifted.values()) < drift.PSI_THRESHOLD, unshifted
    shifted = run_stream(shifted=True)
    assert shifted["i_n_ratings"] > drift.PSI_THRESHOLD and shifted["i_pop_share"] > drift.PSI_THRESHOLD, shifted
