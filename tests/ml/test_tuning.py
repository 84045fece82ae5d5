"""Tuning wiring against a real MLflow server: nested trial runs, the defaults as trial 0, determinism,
a crashing trial recorded as failed while the study goes on, and the time budget keeping the best so far."""

from __future__ import annotations

import time

import pytest

import mlflow
from mlops.training import tune as tune_module
from mlops.training.evaluate import rating_data
from mlops.training.fit import default_head_params, labelled_table, retrievers_of
from mlops.training.tune import Choice, tune

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def experiment(base_settings, mlflow_server):
    mlflow.set_tracking_uri(base_settings.mlflow_tracking_uri)
    mlflow.set_experiment(f"test-tuning-{int(time.time())}")
    return base_settings


@pytest.fixture(scope="module")
def table(offline):
    """The ranker's labelled candidates on the tiny data (its held-out ratings play validation)."""
    return labelled_table(offline, 100.0)


@pytest.fixture(scope="module")
def rating(offline):
    """The rating head's rows on the same data (training rows out of fold, held-out rows)."""
    return rating_data(offline, retrievers_of(offline, 100.0), 100.0, 42)


def _nested(parent_id: str) -> list:
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", output_format="list")
    return sorted(runs, key=lambda r: r.info.run_name)


def test_trials_are_nested_runs_and_the_search_is_deterministic(experiment, offline, table, rating, tmp_path):
    choices = []
    for attempt in range(2):
        with mlflow.start_run(run_name=f"parent-{attempt}") as parent:
            choices.append(tune(offline, table, rating, 42, 3, 600, tmp_path))
        trials = _nested(parent.info.run_id)
        assert [r.info.run_name for r in trials] == ["trial-0", "trial-1", "trial-2"]
        assert all(r.info.status == "FINISHED" and "validation_ndcg_at_10" in r.data.metrics for r in trials)
        defaults = Choice(default_head_params(), {}).flat()
        assert trials[0].data.params["rating_learning_rate"] == str(defaults["rating_learning_rate"])  # trial 0
    first, second = choices
    assert first.flat() == second.flat() and first.validation == second.validation  # same data, seed: same choice
    assert first.summary["trials_completed"] == 3 and first.summary["budget_hit"] is False
    assert {p.name for p in first.plots} == {"tuning_history.png", "tuning_param_importance.png"}
    assert 0 < first.validation["ndcg_at_10"] <= 1 and 0.5 < first.validation["auc"] <= 1
    # Each head's choice is its best trial on its own figure: at least as good as the untuned defaults (trial 0).
    assert first.validation["ndcg_at_10"] == pytest.approx(max(r.data.metrics["validation_ndcg_at_10"] for r in trials))
    assert first.validation["auc"] == pytest.approx(max(r.data.metrics["validation_auc"] for r in trials))


def test_a_crashing_trial_is_recorded_failed_and_the_study_goes_on(experiment, offline, table, rating, tmp_path,
                                                                   monkeypatch):  # fmt: skip
    real = tune_module.evaluate_choice
    calls = []

    def flaky(data, labelled, rows, seed, heads):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("trial blew up")
        return real(data, labelled, rows, seed, heads)

    monkeypatch.setattr(tune_module, "evaluate_choice", flaky)
    with mlflow.start_run(run_name="parent-crash") as parent:
        choice = tune(offline, table, rating, 42, 3, 600, tmp_path)
    statuses = [r.info.status for r in _nested(parent.info.run_id)]
    assert statuses == ["FINISHED", "FAILED", "FINISHED"]
    assert choice.summary["trials_failed"] == 1 and choice.summary["trials_completed"] == 2
    assert choice.summary["best_trial"] in (0, 2)


def test_the_time_budget_keeps_the_best_trial_so_far(experiment, offline, table, rating, tmp_path):
    with mlflow.start_run(run_name="parent-budget"):
        choice = tune(offline, table, rating, 42, 5, 0.001, tmp_path)  # the budget is over after the first trial
    assert choice.summary["budget_hit"] is True
    assert choice.summary["trials_completed"] == 1 and choice.summary["best_trial"] == 0
    assert choice.head_params == default_head_params()


def test_tuning_off_scores_the_defaults_on_validation(offline, table, rating, tmp_path):
    choice = tune(offline, table, rating, 42, 0, 600, tmp_path)
    assert choice.summary == {"method": "off", "trials": 0}
    assert choice.head_params == default_head_params() and set(choice.validation) == {"ndcg_at_10", "auc"}
