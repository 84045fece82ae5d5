"""Model selection on the validation split: an Optuna search over the rating head and the LambdaRank ranker.

WHY on validation: the test split must stay untouched by every choice, so each trial fits on the
features built from train alone and is scored on the validation pairs; `train` then refits the chosen
parameters on train + validation and scores test once.

The objective is validation nDCG@10 + validation AUC. The rating head's parameters move only the AUC and
the ranker's only its nDCG (out of fold: `learners.cross_fit`), so each head then takes the parameters of
the trial best on its own figure. Trial 0 is the untuned default, so neither choice is worse than it on
validation. Each trial is a
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

from mlops import evaluation
from mlops.model import learners
from mlops.model.families import FAMILIES
from mlops.training.evaluate import rating_auc
from mlops.training.fit import HEADS, default_head_params, fit_rating
from mlops.training.offline_data import OfflineData
from mlops.training.rating_examples import RatingData

log = logging.getLogger(__name__)


@dataclass
class Choice:
    """The chosen parameters, their validation figures and what the search did."""

    head_params: dict[str, dict[str, Any]]
    validation: dict[str, float]  # the ranker's out-of-fold ndcg_at_10 and the rating head's auc on validation
    summary: dict[str, Any] = field(default_factory=dict)  # trials asked/completed/failed, best, budget_hit
    plots: list[Path] = field(default_factory=list)

    def flat(self) -> dict[str, Any]:
        """One name per chosen value (`rating_learning_rate`, ..., `ranker_rounds`): params and version tags."""
        return {f"{h}_{k}": v for h in HEADS for k, v in self.head_params[h].items()}


# (low, high) per TUNABLE key and head: the ranker learns from a few labels per user, so its trees stay small.
SPACE = {
    "rating": {"rounds": (100, 600), "num_leaves": (15, 127), "min_data_in_leaf": (20, 300)},
    "ranker": {"rounds": (50, 400), "num_leaves": (4, 31), "min_data_in_leaf": (30, 500)},
}


def _suggest(trial: Any) -> dict[str, dict[str, Any]]:
    return {
        h: {
            "rounds": trial.suggest_int(f"{h}_rounds", *SPACE[h]["rounds"], step=50),
            "learning_rate": trial.suggest_float(f"{h}_learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int(f"{h}_num_leaves", *SPACE[h]["num_leaves"], log=True),
            "min_data_in_leaf": trial.suggest_int(f"{h}_min_data_in_leaf", *SPACE[h]["min_data_in_leaf"], log=True),
            "feature_fraction": trial.suggest_float(f"{h}_feature_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float(f"{h}_lambda_l2", 1e-3, 10.0, log=True),
        }
        for h in HEADS
    }


def evaluate_choice(
    data: OfflineData, table: learners.Table, rating: RatingData, seed: int, head_params: dict[str, dict[str, Any]]
) -> dict[str, float]:
    """The rating head fit on `rating`'s training rows, scored on its held-out (validation) rows, and the
    ranker's out-of-fold nDCG@10 on the labelled validation candidates `table`."""
    relevant, _ = evaluation.relevant_sets(data.test)
    oof = learners.cross_fit(FAMILIES["ranker"], table, seed, head_params["ranker"])
    return {
        "ndcg_at_10": evaluation.ranking_metrics(oof, relevant)["ndcg_at_10"],
        "auc": rating_auc(fit_rating(rating.train, seed, head_params["rating"]), rating.held_out),
    }


def tune(
    data: OfflineData, table: learners.Table, rating: RatingData, seed: int, trials: int, timeout_s: float,
    workdir: Path,
) -> Choice:  # fmt: skip
    """The search (inside an active MLflow run: each trial is a nested run); `trials` = 0 scores the defaults."""
    defaults = default_head_params()
    if trials <= 0:
        return Choice(defaults, evaluate_choice(data, table, rating, seed, defaults), {"method": "off", "trials": 0})

    import optuna

    import mlflow

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        heads = _suggest(trial)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(Choice(heads, {}).flat())
            started = time.monotonic()
            figures = evaluate_choice(data, table, rating, seed, heads)  # an exception marks this run and trial failed
            mlflow.log_metrics({f"validation_{k}": v for k, v in figures.items()})
            mlflow.log_metric("trial_seconds", time.monotonic() - started)
        trial.set_user_attr("validation", figures)
        return figures["ndcg_at_10"] + figures["auc"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(Choice(defaults, {}).flat())  # trial 0: the untuned defaults
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
        figures = evaluate_choice(data, table, rating, seed, defaults)
        return Choice(defaults, figures, summary | {"best_trial": None})
    # The heads are independent (each figure moves with one head's parameters only), so each takes its
    # parameters from the trial best for its own figure: the ranker's nDCG, the rating head's AUC.
    best = {
        "ranker": max(done, key=lambda t: (t.user_attrs["validation"]["ndcg_at_10"], -t.number)),
        "rating": max(done, key=lambda t: (t.user_attrs["validation"]["auc"], -t.number)),
    }
    heads = {h: {k: best[h].params[f"{h}_{k}"] for k in defaults[h]} for h in HEADS}
    validation = {"ndcg_at_10": best["ranker"].user_attrs["validation"]["ndcg_at_10"],
                  "auc": best["rating"].user_attrs["validation"]["auc"]}  # fmt: skip
    picked = {"best_trial": best["ranker"].number, "best_trial_rating": best["rating"].number}
    choice = Choice(heads, validation, summary | picked)
    choice.plots = study_plots(study, seed, workdir)
    log.info("tuning: %s; best trials %s: %s", summary, picked, choice.validation)
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
