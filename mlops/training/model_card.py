"""The model card logged with every training run: what the model predicts, how it was evaluated, its lineage."""

from __future__ import annotations

from mlops.model.rating_input import RATING_FEATURES
from mlops.training.offline_data import OfflineData


def model_card(run_id: str, lineage: dict[str, str], metrics: dict[str, float], data: OfflineData) -> str:
    """The card as Markdown, filled with this run's metrics and lineage, so a reader of MLflow needs no code."""
    m = {k: round(v, 4) for k, v in metrics.items()}
    family = lineage.get("model_family", "?")
    by_family = ", ".join(
        f"{k.removeprefix('validation_ndcg_at_10_')} {v}"
        for k, v in m.items()
        if k.startswith("validation_ndcg_at_10_")
    )
    recall = ", ".join(
        f"{k.removeprefix('candidate_recall_')} {v}" for k, v in m.items() if k.startswith("candidate_recall_")
    )
    return f"""# Model card: {lineage["model_name"]} (pipeline run {run_id})

**What it predicts.**
- `p_like` = P(rating >= 4 | the user rates the movie), a LightGBM head over {len(RATING_FEATURES)}
  features (user activity and rating profile, movie popularity share, smoothed mean and like rate, genres
  and year, user-by-movie ALS affinity, genre affinity, taste gap, and the user's EASE^R votes for the
  movie from all their ratings and from their likes, out of fold in training): answers score requests; test AUC
  {m["test_auc"]}, log loss {m["test_logloss"]} on {len(data.eval_examples)} test pairs.
- Top-k: two stages. Retrievers (EASE^R, ALS, item co-occurrence, popularity) each propose their top-N
  unrated movies; the model family **{family}** orders the union. Families compared on validation
  (nDCG@10; learned ones out of fold): {by_family or "n/a"}. The family with the best figure is this
  version's (tag `model_family`).

**Point in time.** Every training feature uses only ratings strictly before the example: the user's
own earlier ratings (exact), movie statistics as of the example's timestamp, ALS factors fitted on the
ratings before the preceding cutoff. Held-out pairs get the features of their history only, as serving
does: validation pairs those of train, test pairs those of train + validation.

**Evaluation** ({lineage["split_strategy"]} split into train / validation / test, k = 10). Every
choice (LightGBM parameters, EASE's lambda, the family) was made on validation (features and retrievers
from train only, labels from validation): validation nDCG {m.get("validation_ndcg_at_10")}, AUC
{m.get("validation_auc")}. Validation holds ~10% of each user's ratings and test ~20-25%, so validation
nDCG is lower by construction (fewer relevant movies per user), not a sign of leakage. The parts were
refit on train + validation and scored once on test, ranking exactly as serving ranks: the union of the
retrievers' candidates holds {m.get("candidate_recall")} of the test movies ({recall}). Movies in the
user's training history are excluded for the model and every baseline. Test: nDCG {m["ndcg_at_10"]},
precision {m["precision_at_10"]}, recall {m["recall_at_10"]}, MAP {m["map_at_10"]}; liked-only nDCG
{m["ndcg_at_10_liked"]}. Baselines, same run, full catalog: popularity nDCG
{m["baseline_popularity_ndcg_at_10"]}, item co-occurrence nDCG {m["baseline_cooccurrence_ndcg_at_10"]},
EASE^R nDCG {m.get("baseline_ease_ndcg_at_10")}.

**Lineage.** dataset {lineage["dataset"]} (sha256 {lineage["dataset_checksum"][:16]}...), split
{lineage["split_strategy"]} (test {lineage.get("test_fraction")}, validation {lineage.get("validation_fraction")},
seed {lineage.get("seed")}), feature set {lineage["feature_set"]}, git {lineage["git_commit"][:12]}.

**Limits.** Unknown users get the model without user features (score) or the popularity list (top-k).
Movies first rated after the feature snapshot have no CF vector until the next pipeline run.
"""


def summary(run_id: str, lineage: dict[str, str], metrics: dict[str, float], data: OfflineData) -> str:
    """A few sentences for the registered version's description (what MLflow's model page shows first)."""
    source = lineage.get("dataset_source", "")
    dataset = lineage["dataset"]
    if "synthetic" in source or dataset == "synthetic":
        dataset = f"SYNTHETIC data (not MovieLens: {source or dataset})"
    baselines = ", ".join(
        f"{label} {metrics[key]:.4f}"
        for label, key in (("popularity", "baseline_popularity_ndcg_at_10"),
                           ("co-occurrence", "baseline_cooccurrence_ndcg_at_10"),
                           ("EASE", "baseline_ease_ndcg_at_10"))
        if key in metrics
    )  # fmt: skip
    return (
        f"P(rating >= 4) from a LightGBM head over {len(RATING_FEATURES)} features answers score requests; "
        f"top-k ranks the retrievers' candidates with the '{lineage.get('model_family', '?')}' family "
        f"(chosen on validation). Trained by pipeline run {run_id} on {dataset}, "
        f"{lineage['split_strategy']} split ({len(data.train_examples):,} training examples, "
        f"{len(data.eval_examples):,} test pairs). Test nDCG@10 {metrics['ndcg_at_10']:.4f} "
        f"(baselines: {baselines or 'none logged'}), AUC {metrics['test_auc']:.4f}. "
        "The full model card is model_card.md in the training run's artifacts."
    )
