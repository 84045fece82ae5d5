"""The Model page's drift reading: the consumers' gauges reduced to the worst per input, in words when empty."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from mlops.console import monitoring
from mlops.consumer.drift_watch import DriftGauges


def _exposition(version: str, psi: dict[str, float], prediction_psi: float, available: int = 1,
                rows: int = 900) -> str:  # fmt: skip
    registry = CollectorRegistry()
    gauges = DriftGauges(registry)
    for name, value in psi.items():
        gauges.feature_psi.labels(name, version).set(value)
        gauges.feature_ks.labels(name, version).set(value / 2)
    gauges.prediction_psi.labels(version).set(prediction_psi)
    gauges.rows.labels(version).set(rows)
    gauges.available.labels(version).set(available)
    return generate_latest(registry).decode()


def test_worst_psi_per_input_over_consumers_sorted_and_flagged():
    view = monitoring.parse_drift([
        _exposition("3", {"u_mean_rating": 0.05, "i_n_ratings": 0.4}, 0.01),
        _exposition("3", {"u_mean_rating": 0.3, "i_n_ratings": 0.1}, 0.02),
    ])  # fmt: skip
    assert view.problem is None and view.model_version == "3" and view.window_rows == 1800
    assert [(f.name, f.psi, f.drifted) for f in view.features] == [
        ("i_n_ratings", 0.4, True), ("u_mean_rating", 0.3, True)]  # fmt: skip
    assert view.features[0].ks == 0.2 and view.prediction.psi == 0.02


def test_no_reference_profile_is_unavailable_not_zero():
    view = monitoring.parse_drift([_exposition("7", {}, 0.0, available=0)])
    assert view.features == [] and "unavailable for v7" in view.problem


def test_no_consumer_answering_is_said_in_words():
    assert "No consumer answered" in monitoring.drift(["http://127.0.0.1:9/metrics"]).problem
    assert "No consumer reports drift" in monitoring.parse_drift([""]).problem
