"""Logging a training run to MLflow and registering its model version, with the run's lineage tags."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops import drift
from mlops import features as fx
from mlops.model.rating_input import RATING_FEATURES
from mlops.model.recommender import Recommender
from mlops.settings import PROJECT_ROOT, Settings
from mlops.training.evaluate import core_of
from mlops.training.fit import user_rows
from mlops.training.model import candidate_rows, input_columns, log_pyfunc
from mlops.training.model_card import model_card, summary
from mlops.training.offline_data import OfflineData
from mlops.training.plots import plots

log = logging.getLogger(__name__)


def git_commit() -> str:
    """The checkout's commit for lineage, or "unknown" outside a git checkout (e.g. a Docker image)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_lineage(settings: Settings, run_id: str) -> dict[str, str]:
    """The lineage tags of a run's model: dataset and its checksums (from the raw manifest), split, feature set."""
    from mlops.layout import feature_set_version, raw_prefix
    from mlops.spark_io import read_manifest

    raw = read_manifest(raw_prefix(run_id), settings)
    checksum = "+".join(str(f.get("sha256", "")) for _, f in sorted((raw.get("files") or {}).items()))
    return {
        "model_name": settings.model_name,
        "dataset": str(raw.get("dataset") or raw.get("source") or settings.dataset),
        "dataset_source": str(raw.get("source", "")),
        "dataset_checksum": checksum or "unknown",
        "split_strategy": settings.split_strategy,
        "test_fraction": str(settings.test_fraction),
        "validation_fraction": str(settings.validation_fraction),
        "seed": str(settings.seed),
        "feature_set": feature_set_version(run_id),
        "pipeline_run_id": run_id,
        "git_commit": git_commit(),
    }


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
FEATURES_ARTIFACT = "feature_names.json"
MODEL_DESCRIPTION = (
    "Movie recommender trained on MovieLens ratings by the mlops_platform pipeline. The `champion` alias is "
    "what the stream serves; `challenger` a version that lost. Each version's description summarises its "
    "model card (model_card.md in its training run)."
)


def log_datasets(settings: Settings, run_id: str, data: OfflineData, lineage: dict[str, str]) -> None:
    """The training and evaluation sets as MLflow dataset inputs: name, object-store source, digest, schema
    and row count (`training.dataset_input`)."""
    import mlflow
    from mlops.layout import features_key
    from mlops.training.dataset_input import DescribedDataset

    for frame, table, context in ((data.train_examples, "train_examples", "training"),
                                  (data.eval_examples, "eval_examples", "evaluation")):  # fmt: skip
        source = f"s3://{settings.s3_bucket}/{features_key(run_id, table)}"
        mlflow.log_input(DescribedDataset(frame, source, f"{lineage['dataset']} {table}"), context=context)


def log_and_register(
    settings: Settings,
    run_id: str,
    model: Recommender,
    metrics: dict[str, float],
    preds: dict[str, np.ndarray],
    data: OfflineData,
    lineage: dict[str, str],
    selection: dict[str, Any] | None = None,
    mlflow_run_id: str | None = None,
) -> dict[str, Any]:
    """One MLflow run with params, metrics, lineage tags, artifacts, and a registered pyfunc version.

    `selection` (model selection, `jobs.train`): `params` logged on the run and set as version tags,
    `tags` for the version, `artifacts` (tuning plots). `mlflow_run_id`: resume the run the tuning
    trials are nested in instead of starting a new one.
    """
    import mlflow
    from mlops.layout import evaluation_set_version
    from mlops.promotion import LINEAGE_KEYS
    from mlops.registry import client, wait_for_mlflow, with_retries

    wait_for_mlflow(settings)
    c = client(settings)
    experiment = with_retries(settings, "set experiment", lambda: mlflow.set_experiment(settings.mlflow_experiment))
    # MLflow 3 opens an untagged experiment in its GenAI view (traces, judges): this one trains models.
    c.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    example = input_example(model, data)
    selection = selection or {"params": {}, "tags": {}, "artifacts": []}
    start = {"run_id": mlflow_run_id} if mlflow_run_id else {"run_name": f"train-{run_id}"}
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(**start) as run:
        tmpdir = Path(tmp)
        mlflow.set_tags(lineage)
        mlflow.log_params(
            {
                "seed": settings.seed,
                **{f"chosen_{k}": v for k, v in selection["params"].items()},
                "model_family": model.family.name,
                "n_features": len(RATING_FEATURES),
                "family_features": ",".join(model.family.features),
                "n_train_examples": len(data.train_examples),
                "n_eval_examples": len(data.eval_examples),
                "feature_schema_version": fx.SCHEMA_VERSION,
            }
        )
        mlflow.log_metrics(metrics)
        log_datasets(settings, run_id, data, lineage)
        mlflow.log_dict({"feature_names": list(RATING_FEATURES), "family_features": list(model.family.features),
                         "schema_version": fx.SCHEMA_VERSION}, FEATURES_ARTIFACT)  # fmt: skip
        for path in plots(model, preds, tmpdir):
            mlflow.log_artifact(str(path), "plots")
        for path in selection["artifacts"]:
            mlflow.log_artifact(str(path), "tuning")
        described = {**lineage, "model_family": model.family.name}
        (tmpdir / "model_card.md").write_text(model_card(run_id, described, metrics, data))
        mlflow.log_artifact(str(tmpdir / "model_card.md"))
        info = log_pyfunc(model, example, tmpdir, registered_model_name=settings.model_name)
        version = info.registered_model_version
        for key in ("feature_set", "pipeline_run_id", "dataset", "git_commit", *LINEAGE_KEYS):
            c.set_model_version_tag(settings.model_name, version, key, lineage[key])
        tags = {**{f"chosen_{k}": v for k, v in selection["params"].items()}, **selection["tags"],
                "model_family": model.family.name,
                # Which sets it was evaluated on and serves from (the same one for a model without a serving set).
                "evaluation_feature_set": lineage["feature_set"] if model.serving_retrievers is None
                else evaluation_set_version(run_id)}  # fmt: skip
        for key, value in tags.items():
            c.set_model_version_tag(settings.model_name, version, key, str(value))
        features = f"{len(RATING_FEATURES)} (schema {fx.SCHEMA_VERSION}; names in {FEATURES_ARTIFACT})"
        c.set_model_version_tag(settings.model_name, version, "features", features)
        c.update_model_version(settings.model_name, version, description=summary(run_id, described, metrics, data))
        registered = c.get_registered_model(settings.model_name)
        if not registered.description:
            c.update_registered_model(settings.model_name, description=MODEL_DESCRIPTION)
        store_reference_profile(settings, data, preds, {lineage["feature_set"], tags["evaluation_feature_set"]},
                                str(version))  # fmt: skip
        log.info("train: logged MLflow run %s, registered %s v%s", run.info.run_id, settings.model_name, version)
        return {"mlflow_run_id": run.info.run_id, "version": str(version), "metrics": metrics}


def input_example(model: Recommender, data: OfflineData, users: int = 2, rows: int = 5) -> pd.DataFrame:
    """A few candidate rows of the first known held-out users, as serving builds them: the pyfunc's example."""
    known = user_rows(data)
    first = [known[u] for u in sorted(set(data.test["user_id"].astype(int)) & set(known))[:users]]
    return candidate_rows(core_of(model, data), first).head(rows)[input_columns(model)]


def store_reference_profile(
    settings: Settings, data: OfflineData, preds: dict[str, np.ndarray], feature_sets: set[str], version: str
) -> dict[str, Any]:
    """The drift reference of this model version (`mlops.drift`): its inputs and predictions on the evaluation
    pairs, which carry the evaluation set's online features as serving reads them. Logged to the active run as
    `reference_profile.json` and stored with each of its feature sets in Redis, where the consumers read it.

    WHY the serving set gets the evaluation population too: no held-out pair exists once every rating is in
    the set, and the held-out pairs under serving features would be pairs the user has rated (their own
    rating inside the user's aggregates and CF vector). The profile is what the model was validated on; the
    serving set's users have more history than it (a known shift of the `u_n_*` counts, see docs/contracts.md)."""
    import mlflow
    from mlops.feature_store import RedisFeatureStore

    x = fx.build_matrix(data.eval_examples, data.eval_examples)
    profile = {**drift.reference_profile(x, fx.FEATURE_NAMES, preds["p"]), "model_version": version,
               "feature_sets": sorted(feature_sets)}  # fmt: skip
    mlflow.log_dict(profile, drift.PROFILE_ARTIFACT)
    store = RedisFeatureStore.from_settings(settings)
    for feature_set in feature_sets:
        store.put_reference_profile(feature_set, profile)
    return profile
