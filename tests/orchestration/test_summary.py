"""The end-of-run summary: what the text says (pure), and that `gather` finds the facts where the run
recorded them (real S3 API server for the manifests, real MLflow for the version, metrics and decision)."""

from __future__ import annotations

import time

import pytest

from mlops.orchestration.summary import (
    DatasetFacts,
    ModelFacts,
    RunSummary,
    SplitFacts,
    gather,
    render,
)

METRICS = {
    "ndcg_at_10": 0.3124, "precision_at_10": 0.2, "recall_at_10": 0.15, "map_at_10": 0.11, "test_auc": 0.78,
    "baseline_popularity_ndcg_at_10": 0.2011, "baseline_cooccurrence_ndcg_at_10": 0.2533,
}  # fmt: skip


def _summary(synthetic: bool, decision: str | None = "champion") -> RunSummary:
    source = "synthetic (fallback from auto: GroupLens unreachable)" if synthetic else "ml-latest-small (GroupLens x)"
    return RunSummary(
        "pipeline__20260101T000000Z",
        DatasetFacts("synthetic" if synthetic else "ml-latest-small", source, synthetic, 100836, 9742, 610),
        SplitFacts("temporal", 0.2, 42, 80668, 20168),
        ModelFacts("movielens-recommender", "3", "abc123", "7", METRICS, decision, "no champion yet"),
    )


def test_summary_names_dataset_split_metrics_baselines_decision_and_urls():
    text = render(_summary(synthetic=False), {"Airflow run": "http://a/run"}, "http://mlflow:5000")
    lines = text.splitlines()
    dataset = next(line for line in lines if "dataset" in line)
    assert "ml-latest-small" in dataset and "100,836 ratings, 610 users, 9,742 movies" in dataset
    assert "SYNTHETIC" not in text
    assert "temporal, test fraction 0.2, seed 42: 80,668 train / 20,168 test ratings" in text
    ndcg = next(line for line in lines if "nDCG@10:" in line)
    assert "model 0.3124" in ndcg and "popularity 0.2011" in ndcg and "co-occurrence 0.2533" in ndcg
    assert "EASE" not in ndcg  # a baseline the run did not log is not invented
    assert "AUC (P(like)) 0.7800" in text
    promotion = next(line for line in lines if "promotion" in line)
    assert "v3 is the new CHAMPION" in promotion and "no champion yet" in promotion
    assert "http://a/run" in text
    view = "?workflowType=machine_learning"  # MLflow 3 opens in its GenAI mode without it
    assert f"http://mlflow:5000/#/models/movielens-recommender/versions/3{view}" in text
    assert f"http://mlflow:5000/#/experiments/7/runs/abc123{view}" in text
    assert f"http://mlflow:5000/#/experiments/7{view}" in text


def test_synthetic_data_is_said_in_capitals():
    text = render(_summary(synthetic=True), {})
    dataset = next(line for line in text.splitlines() if "dataset" in line)
    assert "SYNTHETIC DATA, not MovieLens" in dataset and "fallback from auto" in dataset


def test_challenger_and_undecided_and_unreadable_parts_read_plainly():
    assert "stays CHALLENGER" in render(_summary(False, "challenger"), {})
    assert "not decided yet" in render(_summary(False, None), {})
    broken = RunSummary("r1", problems={"dataset": "DataError: no manifest", "model": "LookupError: none"})
    text = render(broken, {})
    assert "dataset    - (DataError: no manifest)" in text
    assert "model      - (LookupError: none)" in text
    assert "split      - (not recorded)" in text


@pytest.mark.integration
def test_gather_reads_the_manifests_and_the_registered_version(settings, mlflow_server):
    """A run's manifests in the object store and its version in MLflow, promoted by the real rule."""
    import mlflow
    from mlflow import MlflowClient
    from mlops import registry
    from mlops.layout import manifest_key, raw_prefix, split_key
    from mlops.object_store import ObjectStore

    run_id = f"summary-{int(time.time() * 1000)}"
    s = settings.replace(model_name=f"summary-model-{run_id}", mlflow_experiment=f"summary-{run_id}")
    store = ObjectStore.from_settings(s)
    store.put_json(manifest_key(raw_prefix(run_id)), {
        "dataset": "synthetic", "source": "synthetic (fallback from auto: offline)", "kind": "synthetic",
        "row_counts": {"ratings": 20000, "movies": 500},
    })  # fmt: skip
    split = {"strategy": "temporal", "test_fraction": 0.2, "seed": 42, "counts": {"train": 16000, "test": 4000},
             "users": {"train": 133, "test": 133}}  # fmt: skip
    for part in ("train", "test"):
        store.put_json(manifest_key(split_key(run_id, part)), split)

    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    mlflow.set_experiment(s.mlflow_experiment)
    with mlflow.start_run() as run:
        mlflow.log_metrics(METRICS)
    client = MlflowClient(s.mlflow_tracking_uri)
    client.create_registered_model(s.model_name)
    version = client.create_model_version(
        s.model_name, f"{run.info.artifact_uri}/model", run.info.run_id, tags={"pipeline_run_id": run_id}
    )
    registry.promote(s, run_id, lambda model, counts: 0.0)  # no champion yet: becomes champion without loading one

    summary = gather(s, run_id)
    assert summary.problems == {}
    text = render(summary, {}, s.mlflow_tracking_uri)
    assert "SYNTHETIC DATA, not MovieLens" in text and "20,000 ratings, 133 users, 500 movies" in text
    assert "16,000 train / 4,000 test ratings" in text
    assert f"{s.model_name} v{version.version}" in text
    assert "model 0.3124 | popularity 0.2011 | co-occurrence 0.2533" in text
    assert f"v{version.version} is the new CHAMPION (serving it): no champion yet" in text

    other = gather(s, "summary-never-ran")
    assert set(other.problems) == {"dataset", "split", "model"} and other.model is None
