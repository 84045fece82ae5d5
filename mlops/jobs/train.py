"""Step `train`: fit the recommender on a run's features, evaluate it, log and register it in MLflow.

Reads the offline sets that `feature_engineering` wrote for the run (bad or missing ones are a `DataError`,
exit 3, before any MLflow call), fits the two LightGBM heads (`training.fit`), measures every contract
metric (`training.evaluate`) and logs the run with its plots, model card and lineage tags, registering a
version of MODEL_NAME (`training.register`). It never touches the `champion` alias: `evaluate_and_promote` does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from mlops.jobs.runner import job_parser, resolve, run
from mlops.progress import stage
from mlops.settings import Settings
from mlops.training.evaluate import evaluate
from mlops.training.fit import fit
from mlops.training.offline_data import load_offline
from mlops.training.register import log_and_register, run_lineage

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
    """The whole step: load (DataError before any MLflow call), fit, evaluate, log + register."""
    started = time.monotonic()
    with stage("train", "load features") as progress:
        data = load_offline(settings, run_id)
        progress.rows = len(data.train_examples)
    lineage = run_lineage(settings, run_id) if register else {}
    log.info("train: %d training examples, %d eval pairs", len(data.train_examples), len(data.eval_examples))
    with stage("train", "fit both heads") as progress:
        model = fit(data, settings.seed)
        progress.rows = len(data.train_examples)
    with stage("train", "evaluate") as progress:
        metrics, preds = evaluate(model, data)
        progress.rows, progress.note = len(data.eval_examples), f"nDCG@10 {metrics['ndcg_at_10']:.4f}"
    log.info("train: %s (%.0fs)", {k: round(v, 4) for k, v in sorted(metrics.items())}, time.monotonic() - started)
    if not register:
        return {"metrics": metrics, "model": model}
    with stage("train", "log and register in MLflow") as progress:
        result = log_and_register(settings, run_id, model, metrics, preds, data, lineage)
        progress.note = f"version {result['version']}"
    return result


if __name__ == "__main__":
    run(main)
