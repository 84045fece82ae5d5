"""The training plots: one figure per plot with its own axes, the figures a reader needs in the titles
(AUC, average precision, counts per bin), ranking curves at k = 1..20 for the model and each baseline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mlops import evaluation
from mlops.training import plots


@pytest.fixture(scope="module")
def yp() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 2000)
    y = (rng.uniform(0, 1, 2000) < p).astype(int)
    return y, p


def test_roc_names_its_auc_and_has_one_axes(yp):
    y, p = yp
    fig = plots.roc_figure(y, p)
    (ax,) = fig.axes
    auc = roc_auc_score(y, p)
    assert f"AUC {auc:.3f}" in ax.get_title() and ax.get_xlabel() == "false positive rate"
    assert ax.get_ylabel() == "true positive rate"
    assert any(f"AUC = {auc:.3f}" in t.get_text() for t in ax.get_legend().get_texts())


def test_pr_names_its_average_precision(yp):
    y, p = yp
    (ax,) = plots.pr_figure(y, p).axes
    ap = average_precision_score(y, p)
    assert f"AP {ap:.3f}" in ax.get_title() and (ax.get_xlabel(), ax.get_ylabel()) == ("recall", "precision")


def test_calibration_shows_the_count_of_every_bin(yp):
    y, p = yp
    fig = plots.calibration_figure(y, p, bins=10)
    ax, counts_ax = fig.axes  # the curve, and the bars of counts on a twin axis
    assert "10 bins" in ax.get_title() and ax.get_xlabel() == "predicted P(rating >= 4)"
    assert counts_ax.get_ylabel() == "pairs per bin"
    labels = sorted(int(t.get_text().replace(",", "")) for t in ax.texts)
    expected = sorted(np.bincount(np.clip(np.digitize(p, np.linspace(0, 1, 11)[1:-1]), 0, 9), minlength=10))
    assert labels == [int(n) for n in expected if n > 0] and sum(labels) == len(p)


def test_ranking_curves_at_k_for_the_model_and_each_baseline():
    relevant = {1: {10, 11}, 2: {12}}
    rankings = {
        "model": {1: [10, 11, *range(100, 118)], 2: [12, *range(100, 119)]},  # perfect
        "popularity": {1: [*range(100, 118), 10, 11], 2: list(range(100, 120))},  # hits only at 19, 20
    }
    ks = list(range(1, 21))
    curves = plots.ranking_curves(rankings, relevant, ks)
    assert curves["ndcg"]["model"] == [1.0] * 20
    assert curves["recall"]["popularity"][17] == 0.0 and curves["recall"]["popularity"][19] == 0.5
    # The same figures as the metrics' own definition, on random rankings.
    rng = np.random.default_rng(5)
    rel = {u: set(rng.choice(60, size=rng.integers(1, 15), replace=False).tolist()) for u in range(40)}
    rel[40] = set()  # a user without relevant movies is left out, as ranking_metrics does
    recs = {u: rng.permutation(60)[: rng.integers(5, 25)].tolist() for u in range(41)}
    random_curves = plots.ranking_curves({"r": recs}, rel, ks)
    for k in (1, 5, 10, 20):
        expected = evaluation.ranking_metrics(recs, rel, k)
        for metric in ("ndcg", "precision", "recall", "map"):
            assert random_curves[metric]["r"][k - 1] == pytest.approx(expected[f"{metric}_at_{k}"], abs=1e-12)
    fig = plots.ranking_figure(curves, ks)
    assert len(fig.axes) == 4
    for ax, label in zip(fig.axes, ("nDCG@k", "precision@k", "recall@k", "MAP@k"), strict=True):
        assert ax.get_ylabel() == label and ax.get_xlabel() == "k (list length)"
        assert [line.get_label() for line in ax.get_lines()] == ["model", "popularity"]
        assert list(ax.get_lines()[0].get_xdata()) == ks


@pytest.mark.parametrize("family", ["ranker", "blend", "ease"])
def test_plots_writes_one_png_per_figure(tmp_path, yp, family):
    import lightgbm as lgb

    from mlops.model.families import FAMILIES
    from mlops.model.recommender import Recommender

    y, p = yp
    x = np.column_stack([p, np.random.default_rng(0).uniform(size=len(p))])
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(x, y), 5)
    fam = FAMILIES[family]
    learned = {"booster": booster, "linear": np.arange(len(fam.features), dtype=float)}.get(fam.scorer)
    model = Recommender(booster, fam, learned, {})
    preds = {"y": y, "p": p, "relevant": {1: {10}}, "rankings": {"model": {1: [10]}, "popularity": {1: [11]}}}
    files = plots.plots(model, preds, tmp_path)
    assert [f.name for f in files] == ["feature_importance.png", "roc_curve.png", "pr_curve.png", "calibration.png",
                                       "ranking_at_k.png"]  # fmt: skip
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000
