"""Offline evaluation of a trained model: every contract metric, ranking through the serving path.

Ranks for every test user with `ranking.RankerCore` (what serving uses), so the offline figures measure
what the consumer would answer; promotion calls `ranking_ndcg` to compare champion and candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops import evaluation
from mlops import features as fx
from mlops.ranking import Catalog, RankerCore
from mlops.training.model import TwoHeadModel
from mlops.training.offline_data import OfflineData

CURVE_K = 20


def rank_all(
    model: TwoHeadModel, data: OfflineData, users: Sequence[int], k: int = evaluation.K
) -> dict[int, list[int]]:
    """Top-k for `users` through the serving path (candidates + re-ranking), batched like the consumer."""
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


def evaluate(model: TwoHeadModel, data: OfflineData) -> tuple[dict[str, float], dict[str, Any]]:
    """All docs/contracts.md metrics, plus what the plots draw: the eval predictions (`y`, `p`) and the
    rankings of the model and the baselines up to CURVE_K with the relevant sets."""
    from sklearn.metrics import log_loss, roc_auc_score

    ev = data.eval_examples
    p = model.p_like(fx.build_matrix(ev, ev))
    y = ev["label"].to_numpy()
    metrics = {"test_auc": float(roc_auc_score(y, p)), "test_logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))}
    relevant, liked = evaluation.relevant_sets(data.test)
    recs = rank_all(model, data, sorted(relevant), k=CURVE_K)  # longer than K: the plots' curves over k
    metrics.update(evaluation.ranking_metrics(recs, relevant))
    metrics.update(evaluation.ranking_metrics(recs, liked, suffix="_liked"))
    baselines = evaluation.baseline_recommendations(data.train, relevant.keys(), CURVE_K)
    metrics.update(evaluation.baseline_metrics_of(baselines, relevant))
    return metrics, {"y": y, "p": p, "relevant": relevant, "rankings": {"model": recs, **baselines}}
