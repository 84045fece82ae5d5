"""The training run's plots: feature importance of both heads, ROC, precision-recall and calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlops.training.model import TwoHeadModel


def plots(model: TwoHeadModel, preds: dict[str, np.ndarray], out: Path) -> list[Path]:
    """PNG files under `out` (feature importance, ROC, PR, calibration) from the eval predictions `preds`."""
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
