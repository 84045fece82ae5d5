"""The drift monitor's decision (threshold, cool-down) and its report, as pure logic."""

from __future__ import annotations

import numpy as np
import pytest

from mlops import drift
from mlops import features as fx
from mlops.orchestration import drift_monitor as dm

HOUR = 3600.0
COOLDOWN = 24 * HOUR


def measured(max_psi: float, worst: str = "i_n_ratings") -> dict:
    return {"status": dm.MEASURED, "model_version": "3", "max_psi": max_psi, "worst": worst}


def test_drift_above_the_threshold_retrains() -> None:
    decision = dm.decide(measured(0.35), 0.2, None, now=1e9, cooldown_s=COOLDOWN)
    assert decision.retrain and "0.350" in decision.reason and "i_n_ratings" in decision.reason


@pytest.mark.parametrize("psi", [0.0, 0.1, 0.2])
def test_drift_at_or_below_the_threshold_does_not(psi: float) -> None:
    decision = dm.decide(measured(psi), 0.2, None, now=1e9, cooldown_s=COOLDOWN)
    assert not decision.retrain and decision.reason.startswith("no drift")


def test_unavailable_drift_never_retrains() -> None:
    check = dm.unavailable("v2 has no reference profile (trained before drift profiles)", "2")
    decision = dm.decide(check, 0.2, None, now=1e9, cooldown_s=COOLDOWN)
    assert not decision.retrain and "no reference profile" in decision.reason


def test_a_failed_retrain_does_not_retrigger_until_the_cool_down_ends() -> None:
    """Drift persists after a drift-triggered retrain that failed (the champion still serves): the checks in
    the cool-down say so and wait; the first check after it may trigger again."""
    t0 = 1_000_000.0
    first = dm.decide(measured(0.5), 0.2, None, now=t0, cooldown_s=COOLDOWN)
    assert first.retrain
    last = {"at": t0, "run_id": "drift__19700112T134640Z"}
    for hours in (1, 6, 23.9):
        later = dm.decide(measured(0.5), 0.2, last, now=t0 + hours * HOUR, cooldown_s=COOLDOWN)
        assert not later.retrain and "cool-down" in later.reason and "drift__19700112T134640Z" in later.reason
    assert dm.decide(measured(0.5), 0.2, last, now=t0 + COOLDOWN, cooldown_s=COOLDOWN).retrain


def test_zero_cool_down_allows_the_next_check() -> None:
    last = {"at": 1e9, "run_id": "drift__x"}
    assert dm.decide(measured(0.5), 0.2, last, now=1e9 + 1, cooldown_s=0).retrain


def _profile(rng: np.random.Generator) -> dict:
    x = rng.normal(0, 1, (5000, len(fx.FEATURE_NAMES)))
    return drift.reference_profile(x, fx.FEATURE_NAMES, rng.beta(2, 5, 5000))


def _rows(rng: np.random.Generator, shift: float) -> np.ndarray:
    x = rng.normal(0, 1, (2000, len(fx.FEATURE_NAMES)))
    x[:, fx.FEATURE_NAMES.index("i_n_ratings")] += shift
    return np.column_stack([x, rng.beta(2, 5, 2000)])


def test_report_finds_the_shifted_input_and_not_an_unshifted_window() -> None:
    rng = np.random.default_rng(7)
    profile = _profile(rng)
    calm = dm.measure(profile, _rows(rng, 0.0), "3", "fs-1", ("g/inference-0",))
    assert calm.worst[1] < drift.PSI_THRESHOLD
    assert not dm.decide(dm.summary(calm, 0.2), 0.2, None, now=0, cooldown_s=COOLDOWN).retrain
    shifted = dm.measure(profile, _rows(rng, 1.5), "3", "fs-1", ("g/inference-0",))
    assert shifted.worst[0] == "i_n_ratings" and shifted.worst[1] > 0.5
    table = shifted.table(0.2)
    assert table[0]["column"] == "i_n_ratings" and table[0]["drifted"]
    assert {r["column"] for r in table} == {*fx.FEATURE_NAMES, drift.PREDICTION}
    check = dm.summary(shifted, 0.2)
    assert check["drifted_columns"] == 1 and check["rows"] == 2000
    assert dm.decide(check, 0.2, None, now=0, cooldown_s=COOLDOWN).retrain


def test_report_plot_marks_the_threshold() -> None:
    rng = np.random.default_rng(8)
    report = dm.measure(_profile(rng), _rows(rng, 1.5), "3", "fs-1", ("g/inference-0",))
    (ax,) = dm.figure(report, 0.2).axes
    assert len(ax.patches) == len(fx.FEATURE_NAMES) + 1
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "i_n_ratings"  # the largest PSI on top
    assert any(line.get_xdata()[0] == 0.2 for line in ax.get_lines())
