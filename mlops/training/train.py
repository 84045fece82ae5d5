"""Train, evaluate, log and register the recommender (the `train` step and `mlflow/train_model.py`).

Reads the offline sets that `feature_engineering` wrote for the run, fits the two LightGBM heads on
`train_examples` (point-in-time features), evaluates on `eval_examples` (test pairs with the online
snapshot's features) and ranks for every test user through `serving.RankerCore` (the serving path),
then logs everything to MLflow and registers a version of MODEL_NAME. Deterministic: fixed seeds,
LightGBM's `deterministic` mode, single-threaded histogram construction order.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from mlops import evaluation
from mlops import features as fx
from mlops.errors import DataError
from mlops.settings import PROJECT_ROOT, Settings
from mlops.training.model import RELEVANCE_INDEX, TwoHeadModel

log = logging.getLogger(__name__)

ROUNDS = {"rating": 300, "relevance": 200}


def lgb_params(seed: int, monotone: Sequence[str]) -> dict[str, Any]:
    return {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
        "monotone_constraints": [1 if n in fx.MONOTONE_INCREASING else 0 for n in monotone],
    }


@dataclass
class OfflineData:
    train_examples: pd.DataFrame
    eval_examples: pd.DataFrame
    online_users: pd.DataFrame
    online_items: pd.DataFrame
    meta: dict[str, Any]
    test: pd.DataFrame
    train: pd.DataFrame


def _require(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    if frame is None or len(frame) == 0:
        raise DataError(f"features/{name}: empty; run feature_engineering for this run (nothing was registered)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"features/{name}: missing column(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")


def check(data: OfflineData) -> OfflineData:
    """Refuse empty or incomplete feature sets before anything is trained or registered."""
    _require(data.train_examples, "train_examples", ["label", "is_negative", *fx.USER_COLUMNS, *fx.ITEM_COLUMNS])
    _require(data.eval_examples, "eval_examples", ["label", *fx.USER_COLUMNS, *fx.ITEM_COLUMNS])
    _require(data.online_users, "online_users", ["user_id", fx.RATED_COLUMN, *fx.USER_COLUMNS])
    _require(data.online_items, "online_items", ["movie_id", *fx.ITEM_COLUMNS])
    rated = data.train_examples[data.train_examples["is_negative"] == 0]
    if rated["label"].nunique() < 2 or data.train_examples["is_negative"].nunique() < 2:
        raise DataError("features/train_examples: needs liked and not-liked ratings and sampled negatives to train")
    if data.eval_examples["label"].nunique() < 2:
        raise DataError("features/eval_examples: all test labels are equal; AUC is undefined")
    return data


def load_offline(settings: Settings, run_id: str) -> OfflineData:
    """The run's offline sets from the object store (`DataError` naming what is missing)."""
    from mlops.layout import features_key, split_key
    from mlops.spark_io import read_pandas

    frames = {
        name: read_pandas(features_key(run_id, name), settings)
        for name in ("train_examples", "eval_examples", "online_users", "online_items", "online_meta")
    }
    meta = frames["online_meta"].iloc[0].to_dict() if len(frames["online_meta"]) else {}
    return check(
        OfflineData(
            frames["train_examples"],
            frames["eval_examples"],
            frames["online_users"],
            frames["online_items"],
            meta,
            read_pandas(split_key(run_id, "test"), settings),
            read_pandas(split_key(run_id, "train"), settings),
        )
    )


def fit(data: OfflineData, seed: int) -> TwoHeadModel:
    """Both heads on the point-in-time training examples."""
    ex = data.train_examples.sort_values(["user_id", "timestamp", "movie_id", "is_negative"], kind="stable")
    x = fx.build_matrix(ex, ex)
    rated = ex["is_negative"].to_numpy() == 0
    started = time.monotonic()
    rating = lgb.train(
        lgb_params(seed, fx.FEATURE_NAMES),
        lgb.Dataset(x[rated], ex["label"].to_numpy()[rated], feature_name=list(fx.FEATURE_NAMES)),
        ROUNDS["rating"],
    )
    log.info("train: rating head on %d rated pairs (%.1fs)", int(rated.sum()), time.monotonic() - started)
    relevance = lgb.train(
        lgb_params(seed, fx.RELEVANCE_FEATURES),
        lgb.Dataset(x[:, RELEVANCE_INDEX], rated.astype(int), feature_name=list(fx.RELEVANCE_FEATURES)),
        ROUNDS["relevance"],
    )
    log.info("train: relevance head on %d pairs (%.1fs)", len(x), time.monotonic() - started)
    return TwoHeadModel(rating, relevance)


def rank_all(
    model: TwoHeadModel, data: OfflineData, users: Sequence[int], k: int = evaluation.K
) -> dict[int, list[int]]:
    """Top-k for `users` through the serving path (candidates + re-ranking), batched like the consumer."""
    from mlops.serving import Catalog, RankerCore

    popular = data.meta.get("popular_movie_ids")
    core = RankerCore(model, Catalog(data.online_items, popular=[] if popular is None else [int(m) for m in popular]))
    rows = data.online_users.set_index("user_id")
    user_rows = [rows.loc[u].to_dict() if u in rows.index else None for u in users]
    for row in user_rows:
        if row is not None:
            row[fx.RATED_COLUMN] = [int(m) for m in row[fx.RATED_COLUMN]]
    out: dict[int, list[int]] = {}
    for start in range(0, len(users), 200):
        recs, _ = core.recommend(user_rows[start : start + 200], [k] * len(user_rows[start : start + 200]))
        out.update({u: [m for m, _ in r] for u, r in zip(users[start : start + 200], recs, strict=True)})
    return out


def ranking_ndcg(model: TwoHeadModel, data: OfflineData) -> float:
    """ndcg_at_10 of `model` on this data: what promotion compares."""
    relevant, _ = evaluation.relevant_sets(data.test)
    return evaluation.ranking_metrics(rank_all(model, data, sorted(relevant)), relevant)["ndcg_at_10"]


def evaluate(model: TwoHeadModel, data: OfflineData) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """All CONTRACTS.md metrics, plus the eval predictions for the plots."""
    from sklearn.metrics import log_loss, roc_auc_score

    ev = data.eval_examples
    p = model.p_like(fx.build_matrix(ev, ev))
    y = ev["label"].to_numpy()
    metrics = {"test_auc": float(roc_auc_score(y, p)), "test_logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))}
    relevant, liked = evaluation.relevant_sets(data.test)
    recs = rank_all(model, data, sorted(relevant))
    metrics.update(evaluation.ranking_metrics(recs, relevant))
    metrics.update(evaluation.ranking_metrics(recs, liked, suffix="_liked"))
    metrics.update(evaluation.baseline_metrics(data.train, data.test))
    return metrics, {"y": y, "p": p}


# -- MLflow -----------------------------------------------------------------------------------------------------


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _plots(model: TwoHeadModel, preds: dict[str, np.ndarray], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    files = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 7))
    for ax, booster, title in ((axes[0], model.rating, "rating head"), (axes[1], model.relevance, "relevance head")):
        gain = booster.feature_importance("gain")
        order = np.argsort(gain)[-20:]
        ax.barh(np.array(booster.feature_name())[order], gain[order])
        ax.set_title(f"feature importance (gain), {title}")
    fig.tight_layout()
    files.append(out / "feature_importance.png")
    fig.savefig(files[-1])
    y, p = preds["y"], preds["p"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    fpr, tpr, _ = roc_curve(y, p)
    axes[0].plot(fpr, tpr)
    axes[0].plot([0, 1], [0, 1], "--")
    axes[0].set(title="ROC (test pairs, rating >= 4)", xlabel="FPR", ylabel="TPR")
    prec, rec, _ = precision_recall_curve(y, p)
    axes[1].plot(rec, prec)
    axes[1].set(title="precision-recall", xlabel="recall", ylabel="precision")
    frac, mean_pred = calibration_curve(y, p, n_bins=10)
    axes[2].plot(mean_pred, frac, marker="o")
    axes[2].plot([0, 1], [0, 1], "--")
    axes[2].set(title="calibration", xlabel="predicted P(rating >= 4)", ylabel="observed")
    fig.tight_layout()
    for name, ax in (("roc_curve.png", axes[0]), ("pr_curve.png", axes[1]), ("calibration.png", axes[2])):
        extent = ax.get_window_extent().transformed(fig.dpi_scale_trans.inverted()).expanded(1.25, 1.3)
        files.append(out / name)
        fig.savefig(files[-1], bbox_inches=extent)
    plt.close("all")
    return files


def model_card(run_id: str, lineage: dict[str, str], metrics: dict[str, float], data: OfflineData) -> str:
    from mlops.serving import CANDIDATES
    m = {k: round(v, 4) for k, v in metrics.items()}
    n_pos = int((data.train_examples["is_negative"] == 0).sum())
    ratio = int((data.train_examples["is_negative"] == 1).sum()) // max(1, n_pos)
    return f"""# Model card: {lineage["model_name"]} (pipeline run {run_id})

**What it predicts.** Two LightGBM heads over the same `mlops.features.build_matrix` input
({len(fx.FEATURE_NAMES)} features: user activity and rating profile, movie popularity share, smoothed
mean and like rate, genres and year, and user-by-movie CF affinity from ALS fold-in vectors, genre
affinity, taste gap):
- `p_like` = P(rating >= 4 | the user rates the movie): answers score requests; test AUC {m["test_auc"]},
  log loss {m["test_logloss"]} on {len(data.eval_examples)} test pairs.
- `p_relevant` = P(the user rates the movie): orders top-k candidates (ALS top-{CANDIDATES} by CF affinity
  plus popular movies, minus what the user rated).

**Why sampled negatives.** The relevance head needs examples of movies a user did *not* rate: for
each rated training example, {ratio} movies the user never rated in
train are drawn uniformly (deterministic hash of user, movie, time and seed) and share the rated
example's point-in-time user state. Without them a P(like) model ranks rarely watched, well-rated
movies first and loses most of nDCG under the published protocol (all test movies are relevant).
The rating head never sees the negatives, so its probabilities stay P(like | rated).

**Point in time.** Every training feature uses only ratings strictly before the example: the user's
own earlier ratings (exact), movie statistics as of the example's timestamp, ALS factors fitted on the
ratings before the preceding cutoff. Evaluation uses train-only features, as serving does.

**Evaluation** ({lineage["split_strategy"]} split, k = 10, all unrated movies ranked):
nDCG {m["ndcg_at_10"]}, precision {m["precision_at_10"]}, recall {m["recall_at_10"]}, MAP {m["map_at_10"]};
liked-only nDCG {m["ndcg_at_10_liked"]}. Baselines, same run: popularity nDCG
{m["baseline_popularity_ndcg_at_10"]}, item co-occurrence nDCG {m["baseline_cooccurrence_ndcg_at_10"]}.

**Lineage.** dataset {lineage["dataset"]} (sha256 {lineage["dataset_checksum"][:16]}...), feature set
{lineage["feature_set"]}, git {lineage["git_commit"][:12]}.

**Limits.** Unknown users get the model without user features (score) or the popularity list (top-k).
Movies first rated after the feature snapshot have no CF vector until the next pipeline run.
"""


def _lineage(settings: Settings, run_id: str) -> dict[str, str]:
    from mlops.layout import raw_prefix
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
        "feature_set": run_id,
        "pipeline_run_id": run_id,
        "git_commit": git_commit(),
    }


def log_and_register(
    settings: Settings,
    run_id: str,
    model: TwoHeadModel,
    metrics: dict[str, float],
    preds: dict[str, np.ndarray],
    data: OfflineData,
    lineage: dict[str, str],
) -> dict[str, Any]:
    """One MLflow run with params, metrics, lineage tags, artifacts, and a registered pyfunc version."""
    import mlflow
    from mlops.registry import client, wait_for_mlflow, with_retries

    wait_for_mlflow(settings)
    c = client(settings)
    with_retries(settings, "set experiment", lambda: mlflow.set_experiment(settings.mlflow_experiment))
    example = pd.DataFrame(
        fx.build_matrix(data.eval_examples.head(5), data.eval_examples.head(5)), columns=fx.FEATURE_NAMES
    )
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=f"train-{run_id}") as run:
        tmpdir = Path(tmp)
        mlflow.set_tags(lineage)
        mlflow.log_params(
            {
                "seed": settings.seed,
                "rounds_rating": ROUNDS["rating"],
                "rounds_relevance": ROUNDS["relevance"],
                **{f"lgb_{k}": v for k, v in lgb_params(settings.seed, ()).items() if k != "monotone_constraints"},
                "n_features": len(fx.FEATURE_NAMES),
                "relevance_features": ",".join(fx.RELEVANCE_FEATURES),
                "n_train_examples": len(data.train_examples),
                "n_eval_examples": len(data.eval_examples),
                "feature_schema_version": fx.SCHEMA_VERSION,
            }
        )
        mlflow.log_metrics(metrics)
        for path in _plots(model, preds, tmpdir):
            mlflow.log_artifact(str(path), "plots")
        (tmpdir / "model_card.md").write_text(model_card(run_id, lineage, metrics, data))
        mlflow.log_artifact(str(tmpdir / "model_card.md"))
        info = model.log_pyfunc(example, tmpdir, registered_model_name=settings.model_name)
        version = info.registered_model_version
        for key in ("feature_set", "pipeline_run_id", "dataset", "split_strategy", "git_commit"):
            c.set_model_version_tag(settings.model_name, version, key, lineage[key])
        c.set_model_version_tag(settings.model_name, version, "feature_names", ",".join(fx.FEATURE_NAMES))
        log.info("train: logged MLflow run %s, registered %s v%s", run.info.run_id, settings.model_name, version)
        return {"mlflow_run_id": run.info.run_id, "version": str(version), "metrics": metrics}


def train_run(settings: Settings, run_id: str, register: bool = True) -> dict[str, Any]:
    """The whole step: load (DataError before any MLflow call), fit, evaluate, log + register."""
    started = time.monotonic()
    data = load_offline(settings, run_id)
    lineage = _lineage(settings, run_id) if register else {}
    log.info("train: %d training examples, %d eval pairs", len(data.train_examples), len(data.eval_examples))
    model = fit(data, settings.seed)
    metrics, preds = evaluate(model, data)
    log.info("train: %s (%.0fs)", {k: round(v, 4) for k, v in sorted(metrics.items())}, time.monotonic() - started)
    if not register:
        return {"metrics": metrics, "model": model}
    return log_and_register(settings, run_id, model, metrics, preds, data, lineage)
