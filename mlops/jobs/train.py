"""Step `train`: choose on validation, refit on train + validation, score test once, log and register.

Reads the offline sets that `feature_engineering` wrote for the run (bad or missing ones are a `DataError`,
exit 3, before any MLflow call). Model selection uses the SELECTION sets (features from train only,
validation pairs): EASE's lambda, the retrievers fit on train and their candidates for the validation
users, labelled by the validation ratings (what the learned families learn from); the Optuna search over
the rating head and the ranker (`training.tune`, `TUNING_TRIALS`, each trial a nested MLflow run of this
run); and the model family (`training.choose_family`). The rating head and retrievers are then refit on
the FINAL sets (train + validation history), the family's state fit on all the validation candidates, and
everything evaluated once on test (`training.evaluate`); the run is logged with its plots, model card,
lineage and choices, and a version of MODEL_NAME registered (`training.register`), tagged `model_family`.
It never touches the `champion` alias: `evaluate_and_promote` does.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops.errors import DataError
from mlops.evaluation import choose_ease_lambda
from mlops.jobs.runner import job_parser, resolve, run
from mlops.model.retrievers import RetrieverError
from mlops.progress import stage
from mlops.settings import Settings
from mlops.training.choose_family import choose, family_figures
from mlops.training.evaluate import evaluate, rating_data
from mlops.training.fit import fit, labelled_table, retrievers_of, serving_retrievers
from mlops.training.offline_data import FINAL, SELECTION, load_offline, load_serving_catalog
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
    with stage("train", "retrievers on train, candidates and rating rows of the validation users") as progress:
        try:
            retrievers = retrievers_of(selection, ease_lambda)
            table = labelled_table(selection, ease_lambda, retrievers)
            rating = rating_data(selection, retrievers, ease_lambda, settings.seed)
        except (RetrieverError, ValueError) as exc:
            raise DataError(
                f"train: the selection sets cannot train a ranking ({exc}); nothing was registered"
            ) from exc
        progress.rows = len(table.y)
    with tempfile.TemporaryDirectory() as tmp:
        parent_run_id, choice = _select(settings, run_id, selection, table, rating, Path(tmp), register)
        with stage("train", "model families on validation") as progress:
            families = family_figures(selection, retrievers, table, settings.seed, choice.head_params["ranker"])
            family = choose(families)
            progress.note = f"{family} ({families[family]:.4f})"
        log.info("train: family %s chosen on validation (ndcg_at_10 by family: %s)", family, families)
        with stage("train", f"refit on train + validation ({family})") as progress:
            model = fit(final, settings.seed, choice.head_params, family, table, ease_lambda)
            progress.rows = len(final.train_examples)
        with stage("train", "evaluate on test") as progress:
            metrics, preds = evaluate(model, final, ease_lambda)  # test, scored once
            progress.rows, progress.note = len(final.eval_examples), f"nDCG@10 {metrics['ndcg_at_10']:.4f}"
        serving = load_serving_catalog(settings, run_id)
        if serving is not None:  # the retrievers users are answered with know every rating (issue 26)
            with stage("train", "retrievers on every rating, for the serving set") as progress:
                model.serving_retrievers = serving_retrievers(*serving, ease_lambda)
                progress.rows = len(serving[1])
        # The registered family's validation nDCG, every family's beside it, and the rating head's AUC.
        metrics |= {"validation_ndcg_at_10": families[family], "validation_auc": choice.validation["auc"]}
        metrics |= {f"validation_ndcg_at_10_{name}": v for name, v in families.items()}
        log.info("train: %s (%.0fs)", {k: round(v, 4) for k, v in sorted(metrics.items())}, time.monotonic() - started)
        if not register:
            return {"metrics": metrics, "model": model, "choice": choice, "ease_lambda": ease_lambda, "family": family}
        chosen = {
            "params": {**choice.flat(), "ease_lambda": ease_lambda, "model_family": family},
            "tags": {"model_family": family, **{f"tuning_{k}": str(v) for k, v in choice.summary.items()}},
            "artifacts": choice.plots,
        }
        with stage("train", "log and register in MLflow") as progress:
            result = log_and_register(settings, run_id, model, metrics, preds, final, lineage, chosen, parent_run_id)
            progress.note = f"version {result['version']}"
        return result


def _select(
    settings: Settings, run_id: str, selection: Any, table: Any, rating: Any, workdir: Path, register: bool
) -> tuple[str | None, Choice]:
    """The tuning (or the defaults' validation figures), its trials nested in this run's MLflow run."""
    trials = settings.tuning_trials if register else 0
    name = f"select on validation ({trials} tuning trials)" if trials else "score the defaults on validation"
    with stage("train", name) as progress:
        progress.rows = len(selection.eval_examples)
        if trials == 0:
            return None, tune(selection, table, rating, settings.seed, 0, settings.tuning_timeout_seconds, workdir)
        import mlflow
        from mlops.registry import wait_for_mlflow, with_retries

        wait_for_mlflow(settings)
        with_retries(settings, "set experiment", lambda: mlflow.set_experiment(settings.mlflow_experiment))
        with mlflow.start_run(run_name=f"train-{run_id}") as parent:
            choice = tune(selection, table, rating, settings.seed, trials, settings.tuning_timeout_seconds, workdir)
            done = choice.summary.get("trials_completed")
            budget = "; time budget hit: the best trial so far is kept" if choice.summary.get("budget_hit") else ""
            progress.note = f"{done} of {trials} trials completed{budget}"
            return parent.info.run_id, choice


if __name__ == "__main__":
    run(main)
