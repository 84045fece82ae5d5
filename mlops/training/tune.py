"""Model selection on the validation split: an Optuna search over both heads and the candidate counts.

WHY on validation: the test split must stay untouched by every choice, so each trial fits on the
features built from train alone and is scored on the validation pairs; `train` then refits the chosen
parameters on train + validation and scores test once.

The objective is validation nDCG@10 + validation AUC. The rating head's parameters move only the AUC and
the relevance head's parameters and the candidate counts only the nDCG, so maximising the sum maximises
both. Trial 0 is the untuned default, so the choice is never worse than it on validation. Each trial is a
nested MLflow run of the training run; a trial that crashes is recorded as failed and the study goes on;
when the time budget ends the search, the best trial so far is kept and the result says so.
Deterministic for the same data, seed and trial count: TPE seeded, one trial at a time, LightGBM in its
deterministic mode (a search cut short by the time budget may stop after a different number of trials).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.ranking import CandidateCounts
from mlops.training.evaluate import selection_metrics
from mlops.training.fit import HEADS, default_head_params, fit
from mlops.training.offline_data import OfflineData

log = logging.getLogger(__name__)


@dataclass
class Choice:
    """The chosen parameters, their validation figures and what the search did."""

    head_params: dict[str, dict[str, Any]]
    counts: CandidateCounts
    validation: dict[str, float]  # ndcg_at_10, auc of the chosen parameters on validation
    summary: dict[str, Any] = field(default_factory=dict)  # trials asked/completed/failed, best, budget_hit
    plots: list[Path] = field(default_factory=list)

    def flat(self) -> dict[str, Any]:
        """One name per chosen value (`rating_learning_rate`, ..., `candidates_cf`): params and version tags."""
        out = {f"{h}_{k}": v for h in HEADS for k, v in self.head_params[h].items()}
        return out | {"candidates_cf": self.counts.cf, "candidates_popular": self.counts.popular}


def _suggest(trial: Any) -> tuple[dict[str, dict[str, Any]], CandidateCounts]:
    heads = {
        h: {
            "rounds": trial.suggest_int(f"{h}_rounds", 100, 600, step=50),
            "learning_rate": trial.suggest_float(f"{h}_learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int(f"{h}_num_leaves", 15, 127, log=True),
            "min_data_in_leaf": trial.suggest_int(f"{h}_min_data_in_leaf", 20, 300, log=True),
            "feature_fraction": trial.suggest_float(f"{h}_feature_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float(f"{h}_lambda_l2", 1e-3, 10.0, log=True),
        }
        for h in HEADS
    }
    counts = CandidateCounts(
        trial.suggest_int("candidates_cf", 50, 300, step=25), trial.suggest_int("candidates_popular", 0, 100, step=10)
    )
    return heads, counts


def evaluate_choice(
    data: OfflineData, seed: int, head_params: dict[str, dict[str, Any]], counts: CandidateCounts
) -> dict[str, float]:
    """Fit on `data`'s training examples and score its held-out (validation) pairs."""
    return selection_metrics(fit(data, seed, head_params), data, counts)


def tune(data: OfflineData, seed: int, trials: int, timeout_s: float, workdir: Path) -> Choice:
    """The search (inside an active MLflow run: each trial is a nested run); `trials` = 0 scores the defaults."""
    defaults, default_counts = default_head_params(), CandidateCounts()
    if trials <= 0:
        figures = evaluate_choice(data, seed, defaults, default_counts)
        return Choice(defaults, default_counts, figures, {"method": "off", "trials": 0})

    import optuna

    import mlflow

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        heads, counts = _suggest(trial)
        choice = Choice(heads, counts, {})
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(choice.flat())
            started = time.monotonic()
            figures = evaluate_choice(data, seed, heads, counts)  # an exception marks this run and trial failed
            mlflow.log_metrics({f"validation_{k}": v for k, v in figures.items()})
            mlflow.log_metric("trial_seconds", time.monotonic() - started)
        trial.set_user_attr("validation", figures)
        return figures["ndcg_at_10"] + figures["auc"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(Choice(defaults, default_counts, {}).flat())  # trial 0: the untuned defaults
    started = time.monotonic()
    study.optimize(objective, n_trials=trials, timeout=timeout_s, n_jobs=1, catch=(Exception,))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    budget_hit = len(study.trials) < trials
    summary: dict[str, Any] = {
        "method": "optuna-tpe",
        "trials": trials,
        "trials_completed": len(done),
        "trials_failed": len(failed),
        "budget_hit": budget_hit,
        "seconds": round(time.monotonic() - started, 1),
    }
    if budget_hit:
        log.warning("tuning: the %ss budget ended the search after %d of %d trials; keeping the best so far",
                    timeout_s, len(study.trials), trials)  # fmt: skip
    if not done:
        log.warning("tuning: every trial failed; the untuned defaults are used")
        figures = evaluate_choice(data, seed, defaults, default_counts)
        return Choice(defaults, default_counts, figures, summary | {"best_trial": None})
    best = study.best_trial
    heads = {h: {k: best.params[f"{h}_{k}"] for k in defaults[h]} for h in HEADS}
    counts = CandidateCounts(best.params["candidates_cf"], best.params["candidates_popular"])
    choice = Choice(heads, counts, dict(best.user_attrs["validation"]), summary | {"best_trial": best.number})
    choice.plots = study_plots(study, seed, workdir)
    log.info("tuning: %s; best trial %d: %s", summary, best.number, choice.validation)
    return choice


def study_plots(study: Any, seed: int, out: Path) -> list[Path]:
    """PNG files: the optimisation history, and the parameters' importance (fANOVA) once 2+ trials completed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    files = []
    fig, ax = plt.subplots(figsize=(8, 5))
    numbers, values = [t.number for t in done], [t.value for t in done]
    best = [max(values[: i + 1]) for i in range(len(values))]
    ax.scatter(numbers, values, label="trial")
    ax.step(numbers, best, where="post", color="C1", label="best so far")
    failed = [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    if failed:
        ax.scatter(failed, [min(values)] * len(failed), marker="x", color="C3", label="failed")
    ax.set(title="tuning history (validation nDCG@10 + AUC)", xlabel="trial", ylabel="objective")
    ax.legend()
    fig.tight_layout()
    files.append(out / "tuning_history.png")
    fig.savefig(files[-1])
    plt.close(fig)
    if len(done) >= 2:
        try:
            importance = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
            )
        except (RuntimeError, ValueError) as exc:  # e.g. every trial with the same value
            log.warning("tuning: no parameter importance (%s)", exc)
        else:
            fig, ax = plt.subplots(figsize=(8, 6))
            names = list(importance)[::-1]
            ax.barh(names, [importance[n] for n in names])
            ax.set(title="parameter importance (fANOVA, validation objective)", xlabel="importance")
            fig.tight_layout()
            files.append(out / "tuning_param_importance.png")
            fig.savefig(files[-1])
            plt.close(fig)
    return files
