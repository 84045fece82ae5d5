"""The training run's plots, one figure (and file) each: feature importance of the learned parts, ROC with its
AUC, precision-recall with its average precision, calibration with the count in each bin, and the ranking
metrics at k = 1..20 beside the baselines'.

Each `*_figure` function builds and returns a matplotlib figure (tested by inspecting its axes); `plots`
saves them as PNGs for the MLflow run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.model.recommender import Recommender
from mlops.training.evaluate import CURVE_K

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LIKE = "rating >= 4"
RANKING_METRICS = (("ndcg", "nDCG@k"), ("precision", "precision@k"), ("recall", "recall@k"), ("map", "MAP@k"))


def _figure(size: tuple[float, float] = (6.4, 5.2)) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")  # not pyplot: no global state, no display needed
    return fig, fig.subplots()


def importance_figure(model: Recommender, top: int = 20) -> Figure:
    """The `top` features by total gain of the rating head, and beside it what the family ranks by: the
    ranker's gains, the blend's weights, or the one retriever score it orders by."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 7), layout="constrained")
    axes = fig.subplots(1, 2)
    gain = model.rating.feature_importance("gain")
    order = np.argsort(gain)[-top:]
    axes[0].barh(np.array(model.rating.feature_name())[order], gain[order])
    axes[0].set(title="feature importance, rating head (P(like))", xlabel="total gain")
    names = np.array(model.family.features)
    if model.family.scorer == "booster":
        values, label = model.learned.feature_importance("gain"), "total gain"
    elif model.family.scorer == "linear":
        values, label = np.asarray(model.learned, dtype=float), "weight"
    else:
        values, label = np.ones(len(names)), "orders by this score alone"
    order = np.argsort(values)[-top:]
    axes[1].barh(names[order], values[order])
    axes[1].set(title=f"top-k family '{model.family.name}'", xlabel=label)
    return fig


def roc_figure(y: np.ndarray, p: np.ndarray) -> Figure:
    """ROC of P(like) on the test pairs, with its AUC against the chance diagonal."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    auc = roc_auc_score(y, p)
    fig, ax = _figure()
    ax.plot(fpr, tpr, label=f"model (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance (AUC = 0.5)")
    ax.set(title=f"ROC: P(like) on {len(y):,} test pairs (AUC {auc:.3f})", xlabel="false positive rate",
           ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))  # fmt: skip
    ax.legend(loc="lower right")
    return fig


def pr_figure(y: np.ndarray, p: np.ndarray) -> Figure:
    """Precision-recall of P(like), against the share liked (what a random score would reach)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, p)
    ap = average_precision_score(y, p)
    base = float(np.mean(y))
    fig, ax = _figure()
    ax.plot(recall, precision, label=f"model (AP = {ap:.3f})")
    ax.axhline(base, linestyle="--", color="grey", label=f"chance (share liked = {base:.3f})")
    ax.set(title=f"precision-recall: P(like), {LIKE} (AP {ap:.3f})", xlabel="recall", ylabel="precision",
           xlim=(0, 1), ylim=(0, 1.01))  # fmt: skip
    ax.legend(loc="lower left")
    return fig


def calibration_figure(y: np.ndarray, p: np.ndarray, bins: int = 10) -> Figure:
    """Observed share liked per predicted-probability bin, with how many pairs each bin holds."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    filled = counts > 0
    mean_p = np.bincount(which, weights=p, minlength=bins)[filled] / counts[filled]
    observed = np.bincount(which, weights=y, minlength=bins)[filled] / counts[filled]
    fig, ax = _figure((6.4, 5.6))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.plot(mean_p, observed, marker="o", label="model")
    for x, obs, n in zip(mean_p, observed, counts[filled], strict=True):
        ax.annotate(f"{n:,}", (x, obs), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
    ax.set(title=f"calibration: P(like) in {bins} bins (labels: pairs per bin)",
           xlabel=f"predicted P({LIKE})", ylabel="observed share liked", xlim=(0, 1), ylim=(0, 1.05))  # fmt: skip
    ax.legend(loc="upper left")
    counts_ax = ax.twinx()
    counts_ax.bar((edges[:-1] + edges[1:]) / 2, counts, width=0.9 / bins, alpha=0.15, color="grey")
    counts_ax.set_ylabel("pairs per bin")
    return fig


def ranking_curves(
    rankings: Mapping[str, Mapping[int, Sequence[int]]], relevant: Mapping[int, set[int]], ks: Sequence[int]
) -> dict[str, dict[str, list[float]]]:
    """metric -> ranker -> value at each k, as `evaluation.ranking_metrics` defines them (ks must be 1..n).

    One pass over the users per ranker (a hits matrix, then cumulative sums for every k at once): the
    per-k loop over `ranking_metrics` would cost 20 passes, minutes on ml-25m's 160k test users.
    """
    n = max(ks)
    users = [u for u, rel in relevant.items() if rel]
    n_rel = np.array([len(relevant[u]) for u in users], dtype=float)
    discounts = 1.0 / np.log2(np.arange(2, n + 2))
    ideal = np.cumsum(discounts)[np.minimum(np.arange(1, n + 1)[None, :], n_rel[:, None]).astype(int) - 1]
    at = np.arange(1, n + 1)
    curves: dict[str, dict[str, list[float]]] = {m: {} for m, _ in RANKING_METRICS}
    for name, recs in rankings.items():
        hits = np.zeros((len(users), n))
        for row, u in enumerate(users):
            ranked = list(recs.get(u, []))[:n]
            hits[row, : len(ranked)] = [m in relevant[u] for m in ranked]
        found = np.cumsum(hits, axis=1)
        values = {
            "ndcg": np.cumsum(hits * discounts, axis=1) / ideal,
            "precision": found / at,
            "recall": found / n_rel[:, None],
            "map": np.cumsum(found / at * hits, axis=1) / np.minimum(at[None, :], n_rel[:, None]),
        }
        for metric, _ in RANKING_METRICS:
            mean = values[metric].mean(axis=0)
            curves[metric][name] = [float(mean[k - 1]) for k in ks]
    return curves


def ranking_figure(curves: Mapping[str, Mapping[str, Sequence[float]]], ks: Sequence[int]) -> Figure:
    """One panel per ranking metric: the model's values at each k beside the baselines'."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (metric, label) in zip(axes, RANKING_METRICS, strict=True):
        for name, values in curves[metric].items():
            style = {"linewidth": 2.5} if name == "model" else {"linestyle": "--"}
            ax.plot(ks, values, marker=".", label=name, **style)
        ax.set(title=f"{label}: model vs baselines", xlabel="k (list length)", ylabel=label, xticks=list(ks)[::2])
        ax.legend()
    fig.suptitle(f"ranking metrics at k = {ks[0]}..{ks[-1]}, all test movies relevant")
    return fig


def plots(model: Recommender, preds: Mapping[str, Any], out: Path) -> list[Path]:
    """PNG files under `out`, one per figure, from what `training.evaluate.evaluate` returned."""
    y, p = np.asarray(preds["y"]), np.asarray(preds["p"])
    figures = {
        "feature_importance.png": importance_figure(model),
        "roc_curve.png": roc_figure(y, p),
        "pr_curve.png": pr_figure(y, p),
        "calibration.png": calibration_figure(y, p),
    }
    if preds.get("rankings"):
        ks = list(range(1, CURVE_K + 1))  # a list shorter than k counts its missing places as misses
        figures["ranking_at_k.png"] = ranking_figure(ranking_curves(preds["rankings"], preds["relevant"], ks), ks)
    files = []
    for name, fig in figures.items():
        files.append(out / name)
        fig.savefig(files[-1], dpi=110)
    return files
