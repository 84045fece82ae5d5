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
from mlops.drift_windows import PUBLISH_INTERVAL_S
from mlops.orchestration import drift_monitor as dm
from mlops.status import drift_summary, last_retrain_line

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
    window = dw.DriftWindow("1", None, capacity=100, min_rows=100, names=("a",))
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


def test_publishes_the_window_when_it_moved_at_most_once_per_interval() -> None:
    """What the batch check (DAG drift_monitor) reads: the window, handed over only when it gained rows."""
    rng = np.random.default_rng(4)
    sent: list = []
    stop = threading.Event()
    stop.set()
    w = dw.DriftWatch(CollectorRegistry(), Store(reference(rng)), 2000, stop, consumer="g/inference-0",
                      publisher=sent.append)  # fmt: skip
    r = ranker()
    w.use(r)
    assert not w.publish(now=1000.0)  # nothing served yet
    feed(r, rng, 2)  # 2 x 64 sampled rows
    assert w.publish(now=1000.0)
    (window,) = sent
    assert window.consumer == "g/inference-0" and window.model_version == "3" and window.feature_set == "fs-1"
    assert window.columns == (*fx.FEATURE_NAMES, drift.PREDICTION) and window.rows.shape == (128, N + 1)
    feed(r, rng, 1)
    assert not w.publish(now=1000.0 + PUBLISH_INTERVAL_S / 2)  # moved, but too soon
    assert w.publish(now=1000.0 + PUBLISH_INTERVAL_S) and sent[-1].rows.shape == (192, N + 1)
    assert not w.publish(now=5000.0)  # no new rows: nothing to publish


# -- the real consumer ------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_real_consumer_reports_drift_on_a_shifted_stream_only(settings, champion) -> None:
    """Both sides with the real consumer: its gauges, then the batch check of the DAG drift_monitor (real Redis
    and MLflow) on the windows the consumer published: no retrain when calm; on drift one retrain, then the
    cool-down."""
    import redis

    import mlflow
    from mlops import drift_windows
    from mlops.consumer import app
    from mlops.consumer.client import Sender, TopicListener
    from mlops.consumer.kafka import StreamTopics, delete_topics, ensure_topics
    from mlops.feature_store import RedisFeatureStore
    from mlops.layout import evaluation_set_version, split_key
    from mlops.schemas import ScoreRequest
    from mlops.spark_io import read_pandas

    # The unshifted stream is the held-out pairs the profile was built from, so it is served from the evaluation
    # set (in the serving set those pairs are rated: their own rating is inside the user's features).
    settings = settings.replace(serve_feature_set="evaluation")
    store = RedisFeatureStore.from_settings(settings)
    evaluation = evaluation_set_version("stream-tests")
    profile = store.reference_profile(evaluation)
    assert profile is not None and profile["model_version"] == str(champion.model_version)
    assert store.reference_profile(champion.feature_set) == profile  # the serving set carries it too
    test = read_pandas(split_key("stream-tests", "test"), settings)
    items = store.get_all_items(evaluation)
    rarest = sorted(items, key=lambda m: items[m]["i_n_ratings"] or 0)[:50]
    by_user = test.groupby("user_id")["movie_id"].apply(list)

    def run_stream(shifted: bool) -> tuple[dict[str, float], str]:
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
            published = drift_windows.key(drift_windows.consumer_id(topics.group, "inference-0"))
            while not client.exists(published) and time.monotonic() < deadline + dw.INTERVAL_S:
                time.sleep(0.5)
            assert client.exists(published), f"the consumer did not publish its window to {published}"
            return {
                name: registry.get_sample_value(dw.FEATURE_PSI, {"feature": name, "model_version": version})
                for name in fx.FEATURE_NAMES
            }, topics.group
        finally:
            service.stop()
            thread.join(30)
            delete_topics(settings, topics)

    client = redis.Redis.from_url(settings.redis_url)
    client.delete(dm.LAST_RETRAIN_KEY)
    unshifted, calm_group = run_stream(shifted=False)
    assert all(v is not None for v in unshifted.values()), unshifted
    assert max(unshifted.values()) < drift.PSI_THRESHOLD, unshifted
    shifted, drifted_group = run_stream(shifted=True)
    assert shifted["i_n_ratings"] > drift.PSI_THRESHOLD and shifted["i_pop_share"] > drift.PSI_THRESHOLD, shifted

    threshold = drift.PSI_THRESHOLD
    calm = dm.compare(settings, threshold, group=calm_group)
    assert calm["status"] == dm.MEASURED and calm["model_version"] == str(champion.model_version), calm
    assert calm["max_psi"] < threshold, calm
    assert dm.decide_and_record(settings, calm, threshold, monitor_run_id="m1") == ""
    check = dm.compare(settings, threshold, group=drifted_group)
    assert check["status"] == dm.MEASURED and check["max_psi"] > threshold, check
    run_id = dm.decide_and_record(settings, check, threshold, monitor_run_id="m2")
    assert run_id.startswith(dm.RUN_ID_PREFIX)
    assert dm.decide_and_record(settings, check, threshold, monitor_run_id="m2") == run_id  # a retried task
    again = dm.compare(settings, threshold, group=drifted_group)  # the next check: same drift, in cool-down
    assert dm.decide_and_record(settings, again, threshold, monitor_run_id="m3") == ""
    held = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(again["mlflow_run_id"])
    assert held.data.tags["decision"] == "none" and "cool-down" in held.data.tags["decision_reason"]
    assert run_id in last_retrain_line(settings) and "cool-down until" in last_retrain_line(settings)
    run = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(check["mlflow_run_id"])
    assert run.data.tags["decision"] == "retrain" and run.data.tags["triggered_run_id"] == run_id
    assert run.data.metrics["max_psi"] == pytest.approx(check["max_psi"])
    artifacts = {a.path for a in mlflow.MlflowClient(settings.mlflow_tracking_uri).list_artifacts(run.info.run_id)}
    assert {dm.REPORT_TABLE, dm.REPORT_PLOT} <= artifacts
