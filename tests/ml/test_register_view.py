"""What a registry user sees in MLflow (real server): the experiment opens in the model-training view, the
version has a description (the model card's summary) and short readable tags, the training and evaluation
sets are dataset inputs with name, source, digest and rows, the plots are one file each, and the
promotion's reason is one short line with the whole record as an artifact."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mlops import registry
from mlops.model.rating_input import RATING_FEATURES
from mlops.training.evaluate import evaluate
from mlops.training.fit import fit
from mlops.training.register import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, FEATURES_ARTIFACT, log_and_register

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_registered_version_reads_like_a_model_registry_entry(
    base_settings, mlflow_server, s3_server, redis_server, offline, tmp_path
):
    stamp = int(time.time())
    settings = base_settings.replace(model_name=f"view-{stamp}", mlflow_experiment=f"view-{stamp}")
    run_id = f"view-run-{stamp}"
    lineage = {
        "model_name": settings.model_name, "dataset": "synthetic", "dataset_source": "synthetic (fallback from auto)",
        "dataset_checksum": "0" * 64, "split_strategy": "temporal", "test_fraction": "0.2", "feature_set": run_id,
        "validation_fraction": "0.1", "seed": "42", "pipeline_run_id": run_id, "git_commit": "abc",
    }  # fmt: skip
    model = fit(offline, seed=42)
    metrics, preds = evaluate(model, offline)
    out = log_and_register(settings, run_id, model, metrics, preds, offline, lineage)
    c = registry.client(settings)

    experiment = c.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"

    version = c.get_model_version(settings.model_name, out["version"])
    assert f"Test nDCG@10 {metrics['ndcg_at_10']:.4f}" in version.description
    assert "SYNTHETIC data" in version.description and run_id in version.description
    assert "feature_names" not in version.tags and version.tags["features"].startswith(f"{len(RATING_FEATURES)} (")
    assert max(len(v) for v in version.tags.values()) <= 100, version.tags
    assert c.get_registered_model(settings.model_name).description.startswith("Movie recommender")

    run = c.get_run(out["mlflow_run_id"])
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"synthetic train_examples", "synthetic eval_examples"}
    contexts = {name: {t.value for t in d.tags if t.key == "mlflow.data.context"} for name, d in inputs.items()}
    assert contexts == {"synthetic train_examples": {"training"}, "synthetic eval_examples": {"evaluation"}}
    train = inputs["synthetic train_examples"].dataset
    assert train.digest and json.loads(train.profile)["num_rows"] == len(offline.train_examples)
    assert json.loads(train.source)["uri"].endswith(f"runs/{run_id}/features/train_examples")

    artifacts = {f.path for f in c.list_artifacts(run.info.run_id)} | {
        f.path for f in c.list_artifacts(run.info.run_id, "plots")
    }
    assert {FEATURES_ARTIFACT, "model_card.md", "plots/roc_curve.png", "plots/pr_curve.png",
            "plots/calibration.png", "plots/ranking_at_k.png"} <= artifacts  # fmt: skip
    names = json.loads(Path(c.download_artifacts(run.info.run_id, FEATURES_ARTIFACT, str(tmp_path))).read_text())
    assert names["feature_names"] == list(RATING_FEATURES)

    record = registry.promote(settings, run_id, lambda m: 0.0)
    assert record["reason"].startswith("no champion yet; ndcg_at_10 ")
    saved_path = c.download_artifacts(run.info.run_id, registry.PROMOTION_ARTIFACT, str(tmp_path))
    saved = json.loads(Path(saved_path).read_text())
    assert saved["decision"] == "champion" and saved["version"] == out["version"]
