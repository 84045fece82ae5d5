"""Command-line steps `train` and `promote` (entry points: mlflow/train_model.py, mlflow/promote_model.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlops.jobs.runner import job_parser, resolve
from mlops.settings import Settings


def train_main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    from mlops.training.train import train_run

    args = job_parser("Train the LightGBM recommender on a run's features; log and register it in MLflow").parse_args(
        argv
    )
    run_id, settings = resolve(args, settings)
    result = train_run(settings, run_id)
    print(json.dumps({"version": result["version"], "metrics": result["metrics"]}, indent=2, sort_keys=True))
    return result


def promote_main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """A new champion's feature set becomes `fs:current` with it; a challenger's stays staged and expires."""
    from mlops.errors import DataError
    from mlops.feature_store import RedisFeatureStore
    from mlops.registry import CHAMPION, promote
    from mlops.training.train import load_offline, ranking_ndcg

    args = job_parser("Champion/challenger: alias the run's model version by ndcg_at_10").parse_args(argv)
    run_id, settings = resolve(args, settings)
    store = RedisFeatureStore.from_settings(settings)
    if not store.exists(run_id):
        raise DataError(f"feature set {run_id!r} is not loaded in Redis: run load_to_redis first")
    data = load_offline(settings, run_id)
    record = promote(settings, run_id, lambda model: ranking_ndcg(model, data))
    if record["decision"] == CHAMPION:
        record["feature_set_replaced"] = store.switch_to(run_id)
    record["feature_set_current"] = store.current_version()
    print(json.dumps(record, indent=2))
    return record
