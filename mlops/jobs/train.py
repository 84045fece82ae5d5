"""Step `train`: choose on validation, refit on train + validation, score test once, log and register.

Reads the offline sets that `feature_engineering` wrote for the run (bad or missing ones are a `DataError`,
exit 3, before any MLflow call). Model selection uses the SELECTION sets (features from train only,
validation pairs): the Optuna search over both heads and the candidate counts (`training.tune`,
`TUNING_TRIALS`, each trial a nested MLflow run of this run) and the EASE baseline's lambda. The chosen
parameters are then refit on the FINAL sets (train + validation history) and evaluated once on test
(`training.evaluate`); the run is logged with its plots, model card, lineage and chosen parameters, and a
version of MODEL_NAME registered (`training.register`). It never touches the `champion` alias:
`evaluate_and_promote` does.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops.evaluation import choose_ease_lambda
from mlops.jobs.runner import job_parser, resolve, run
from mlops.progress import stage
from mlops.settings import Settings
from mlops.training.evaluate import evaluate
from mlops.training.fit import fit
from mlops.training.offline_data import FINAL, SELECTION, load_offline
from mlops.training.register import log_and_register, run_lineage
from mlops.training.tune import Choice, tune

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The step's command line: train for `--run-id`, print the version and metrics as JSON."""
    args = job_parser("Train the LightGBM recommender on a run's features; log and register it in MLflow").parse_args(
        argv
    )
    run_id, settings = resolve(args, settings)
    result = train_run(settings, run_id)
    print(json.dumps({"version": result["version"], "metrics": result["metrics"]}, indent=2, sort_keys=True))
    return result


def train_run(settings: Settings, run_id: str, register: bool = True) -> dict[str, Any]:
    """The whole step: load (DataError before any MLflow call), select, refit, evaluate, log + register."""
    started = time.monotonic()
    with stage("train", "load features") as progress:
        selection, final = load_offline(settings, run_id, SELECTION), load_offline(settings, run_id, FINAL)
        progress.rows = len(selection.train_examples) + len(final.train_examples)
    lineage = run_lineage(settings, run_id) if register else {}
    log.info("train: %d selection / %d final training examples, %d validation / %d test pairs",
             len(selection.train_examples), len(final.train_examples), len(selection.eval_examples),
             len(final.eval_examples))  # fmt: skip
    with stage("train", "EASE baseline's lambda on validation") as progress:
        ease_lambda, ease_figures = choose_ease_lambda(selection.train, selection.test)
        progress.note = f"lambda {ease_lambda:g}"
    log.info("train: EASE lambda %s chosen on validation (ndcg_at_10 by lambda: %s)", ease_lambda, ease_figures)
    with tempfile.TemporaryDirectory() as tmp:
        parent_run_id, choice = _select(settings, run_id, selection, Path(tmp), register)
        with stage("train", "refit both heads on train + validation") as progress:
            model = fit(final, settings.seed, choice.head_params)
            progress.rows = len(final.train_examples)
        with stage("train", "evaluate on test") as progress:
            metrics, preds = evaluate(model, final, choice.counts, ease_lambda)  # test, scored once
            progress.rows, progress.note = len(final.eval_examples), f"nDCG@10 {metrics['ndcg_at_10']:.4f}"
        metrics |= {f"validation_{k}": v for k, v in choice.validation.items()}
        log.info("train: %s (%.0fs)", {k: round(v, 4) for k, v in sorted(metrics.items())}, time.monotonic() - started)
        if not register:
            return {"metrics": metrics, "model": model, "choice": choice, "ease_lambda": ease_lambda}
        chosen = {
            "params": {**choice.flat(), "ease_lambda": ease_lambda},
            "tags": {**choice.counts.tags(), **{f"tuning_{k}": str(v) for k, v in choice.summary.items()}},
            "artifacts": choice.plots,
        }
        with stage("train", "log and register in MLflow") as progress:
            result = log_and_register(settings, run_id, model, metrics, preds, final, lineage, chosen, parent_run_id)
            progress.note = f"version {result['version']}"
        return result


def _select(
    settings: Settings, run_id: str, selection: Any, workdir: Path, register: bool
) -> tuple[str | None, Choice]:
    """The tuning (or the defaults' validation figures), its trials nested in this run's MLflow run."""
    trials = settings.tuning_trials if register else 0
    name = f"select on validation ({trials} tuning trials)" if trials else "score the defaults on validation"
    with stage("train", name) as progress:
        progress.rows = len(selection.eval_examples)
        if trials == 0:
            return None, tune(selection, settings.seed, 0, settings.tuning_timeout_seconds, workdir)
        import mlflow
        from mlops.registry import wait_for_mlflow, with_retries

        wait_for_mlflow(settings)
        with_retries(settings, "set experiment", lambda: mlflow.set_experiment(settings.mlflow_experiment))
        with mlflow.start_run(run_name=f"train-{run_id}") as parent:
            choice = tune(selection, settings.seed, trials, settings.tuning_timeout_seconds, workdir)
            done = choice.summary.get("trials_completed")
            budget = "; time budget hit: the best trial so far is kept" if choice.summary.get("budget_hit") else ""
            progress.note = f"{done} of {trials} trials completed{budget}"
            return parent.info.run_id, choice


if __name__ == "__main__":
    run(main)
