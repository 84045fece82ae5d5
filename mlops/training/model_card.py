"""The model card logged with every training run: what the model predicts, how it was evaluated, its lineage."""

from __future__ import annotations

from mlops import features as fx
from mlops.training.offline_data import OfflineData


def model_card(run_id: str, lineage: dict[str, str], metrics: dict[str, float], data: OfflineData) -> str:
    """The card as Markdown, filled with this run's metrics and lineage, so a reader of MLflow needs no code."""
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
- `p_relevant` = P(the user rates the movie): orders top-k candidates (ALS top-N by CF affinity plus the
  most popular movies, minus what the user rated; N and the popular count are chosen on validation and
  recorded as the version's `candidates_cf` / `candidates_popular` tags, the counts serving ranks with).

**Why sampled negatives.** The relevance head needs examples of movies a user did *not* rate: for
each rated training example, {ratio} movies the user never rated in
train are drawn uniformly (deterministic hash of user, movie, time and seed) and share the rated
example's point-in-time user state. Without them a P(like) model ranks rarely watched, well-rated
movies first and loses most of nDCG under the published protocol (all test movies are relevant).
The rating head never sees the negatives, so its probabilities stay P(like | rated).

**Point in time.** Every training feature uses only ratings strictly before the example: the user's
own earlier ratings (exact), movie statistics as of the example's timestamp, ALS factors fitted on the
ratings before the preceding cutoff. Held-out pairs get the features of their history only, as serving
does: validation pairs those of train, test pairs those of train + validation.

**Evaluation** ({lineage["split_strategy"]} split into train / validation / test, k = 10). Every
choice (LightGBM parameters of both heads, candidate counts, the EASE baseline's lambda) was made on
validation (features from train only): validation nDCG {m.get("validation_ndcg_at_10")}, AUC
{m.get("validation_auc")}. The chosen parameters were refit on train + validation and scored once on test.
The model is evaluated exactly as serving ranks: only its candidates are re-ranked, and
{m.get("candidate_recall")} of the test movies are inside them (`candidate_recall`); the same head ranking
every unrated movie scores nDCG {m.get("full_catalog_ndcg_at_10")}. Movies in the user's training history are
excluded for the model and every baseline. Test: nDCG {m["ndcg_at_10"]}, precision {m["precision_at_10"]},
recall {m["recall_at_10"]}, MAP {m["map_at_10"]}; liked-only nDCG {m["ndcg_at_10_liked"]}. Baselines, same
run, full catalog: popularity nDCG {m["baseline_popularity_ndcg_at_10"]}, item co-occurrence nDCG
{m["baseline_cooccurrence_ndcg_at_10"]}, EASE^R nDCG {m.get("baseline_ease_ndcg_at_10")}.

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
        f"Two LightGBM heads over {len(fx.FEATURE_NAMES)} features: P(rating >= 4) answers score requests, "
        f"P(the user rates the movie) ranks top-k. Trained by pipeline run {run_id} on {dataset}, "
        f"{lineage['split_strategy']} split ({len(data.train_examples):,} training examples, "
        f"{len(data.eval_examples):,} test pairs). Test nDCG@10 {metrics['ndcg_at_10']:.4f} "
        f"(baselines: {baselines or 'none logged'}), AUC {metrics['test_auc']:.4f}. "
        "The full model card is model_card.md in the training run's artifacts."
    )
