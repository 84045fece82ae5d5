"""Step `evaluate_and_promote`: the champion/challenger decision for the version a run trained.

The rule is `promotion.decide` (applied by `registry.promote`): never below the run's best baseline; then
ndcg_at_10 of candidate and champion, both measured on this run's test data through
`training.evaluate.ranking_ndcg`, when the champion's lineage shows the same split; otherwise
(`lineage_changed`) the candidate must also reach the quality floor on its own. A new champion's feature
set becomes `fs:current` with it, so serving always reads the features its model was trained for; a
challenger's set stays staged and expires.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlops.errors import DataError
from mlops.feature_store import RedisFeatureStore
from mlops.jobs.runner import job_parser, resolve, run
from mlops.layout import feature_set_version
from mlops.registry import CHAMPION, promote
from mlops.settings import Settings
from mlops.training.evaluate import ranking_ndcg
from mlops.training.offline_data import load_offline


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The step's command line: decide for the version `--run-id` trained, print the decision as JSON."""
    args = job_parser("Champion/challenger: alias the run's model version by ndcg_at_10").parse_args(argv)
    run_id, settings = resolve(args, settings)
    return evaluate_and_promote(settings, run_id)


def evaluate_and_promote(settings: Settings, run_id: str) -> dict[str, Any]:
    """Alias the run's version `champion` or `challenger`; a new champion's feature set becomes current."""
    version = feature_set_version(run_id)
    store = RedisFeatureStore.from_settings(settings)
    if not store.exists(version):
        raise DataError(f"feature set {version!r} is not loaded in Redis: run load_to_redis first")
    data = load_offline(settings, run_id)
    record = promote(settings, run_id, lambda model: ranking_ndcg(model, data))
    if record["decision"] == CHAMPION:
        record["feature_set_replaced"] = store.switch_to(version)
    record["feature_set_current"] = store.current_version()
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    run(main)
