"""Offline evaluation of a trained model: every contract metric, ranking through the serving path.

Ranks for every held-out user with `ranking.RankerCore` and the model's `CandidateCounts` (what serving
uses), so the offline figures measure what the consumer would answer: the model re-ranks its candidates
only, and `candidate_recall` says how many held-out movies those candidates could reach at all.
`full_catalog_ndcg_at_10` ranks every unrated movie with the same relevance head, for comparison with the
baselines, which always rank the full catalog. Every method excludes the movies of its training history.
Promotion calls `ranking_ndcg` to compare champion and candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops import evaluation
from mlops import features as fx
from mlops.ranking import CandidateCounts, Catalog, RankerCore
from mlops.training.model import TwoHeadModel
from mlops.training.offline_data import OfflineData

ROWS_PER_BATCH = 200_000  # user x candidate rows scored per LightGBM call (bounds memory on big catalogs)
CURVE_K = 20  # the rankings the plots draw go to this k (the metrics stop at evaluation.K)
FULL_CATALOG_MAX_ROWS = 20_000_000  # user x movie rows of the full-catalog figure: above, a seeded user sample


def _core(model: TwoHeadModel, data: OfflineData, counts: CandidateCounts) -> RankerCore:
    popular = data.meta.get("popular_movie_ids")
    catalog = Catalog(data.online_items, popular=[] if popular is None else [int(m) for m in popular])
    return RankerCore(model, catalog, counts)


def _user_rows(data: OfflineData, users: Sequence[int]) -> list[dict[str, Any] | None]:
    rows = data.online_users.set_index("user_id")
    out = [rows.loc[u].to_dict() if u in rows.index else None for u in users]
    for row in out:
        if row is not None:
            row[fx.RATED_COLUMN] = [int(m) for m in row[fx.RATED_COLUMN]]
    return out


def rank_all(
    model: TwoHeadModel,
    data: OfflineData,
    users: Sequence[int],
    counts: CandidateCounts | None = None,
    k: int = evaluation.K,
) -> dict[int, list[int]]:
    """Top-k for `users` through the serving path (candidates + re-ranking), batched like the consumer."""
    core = _core(model, data, counts or CandidateCounts())
    user_rows = _user_rows(data, users)
    batch = max(1, min(200, ROWS_PER_BATCH // (core.counts.cf + core.counts.popular)))
    out: dict[int, list[int]] = {}
    for start in range(0, len(users), batch):
        recs, _ = core.recommend(user_rows[start : start + batch], [k] * len(user_rows[start : start + batch]))
        out.update({u: [m for m, _ in r] for u, r in zip(users[start : start + batch], recs, strict=True)})
    return out


def candidate_recall(
    model: TwoHeadModel, data: OfflineData, relevant: dict[int, set[int]], counts: CandidateCounts
) -> float:
    """Share of held-out movies (pooled over users) inside the candidate set top-k re-ranks; an unknown
    user's candidates are the popular fallback list."""
    core = _core(model, data, counts)
    users = sorted(relevant)
    rows = _user_rows(data, users)
    hits = total = 0
    known = [(u, r) for u, r in zip(users, rows, strict=True) if r is not None]
    for start in range(0, len(known), 200):
        chunk = known[start : start + 200]
        positions, valid = core.candidates([r for _, r in chunk], evaluation.K)
        for (u, _), pos, ok in zip(chunk, positions, valid, strict=True):
            cand = set(core.catalog.movie_ids[pos[ok]].tolist())
            hits += len(relevant[u] & cand)
    fallback = set(core.catalog.movie_ids[core.catalog.popular[: evaluation.K]].tolist())
    for u, r in zip(users, rows, strict=True):
        total += len(relevant[u])
        if r is None:
            hits += len(relevant[u] & fallback)
    return hits / max(1, total)


def ranking_ndcg(model: TwoHeadModel, data: OfflineData, counts: CandidateCounts | None = None) -> float:
    """ndcg_at_10 of `model` on this data: what promotion compares."""
    relevant, _ = evaluation.relevant_sets(data.test)
    return evaluation.ranking_metrics(rank_all(model, data, sorted(relevant), counts), relevant)["ndcg_at_10"]


def selection_metrics(model: TwoHeadModel, data: OfflineData, counts: CandidateCounts) -> dict[str, float]:
    """ndcg_at_10 and auc on `data`'s held-out pairs: the figures tuning compares (validation data)."""
    from sklearn.metrics import roc_auc_score

    ev = data.eval_examples
    auc = float(roc_auc_score(ev["label"].to_numpy(), model.p_like(fx.build_matrix(ev, ev))))
    return {"ndcg_at_10": ranking_ndcg(model, data, counts), "auc": auc}


def evaluate(
    model: TwoHeadModel,
    data: OfflineData,
    counts: CandidateCounts | None = None,
    ease_lambda: float | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """All docs/contracts.md metrics on `data`'s held-out pairs, plus what the plots draw: the eval
    predictions (`y`, `p`) and the rankings of the model and the baselines up to CURVE_K with the relevant sets."""
    from sklearn.metrics import log_loss, roc_auc_score

    counts = counts or CandidateCounts()
    ev = data.eval_examples
    p = model.p_like(fx.build_matrix(ev, ev))
    y = ev["label"].to_numpy()
    metrics = {"test_auc": float(roc_auc_score(y, p)), "test_logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))}
    relevant, liked = evaluation.relevant_sets(data.test)
    users = sorted(relevant)
    recs = rank_all(model, data, users, counts, k=CURVE_K)  # longer than K: the plots' curves over k
    metrics.update(evaluation.ranking_metrics(recs, relevant))
    metrics.update(evaluation.ranking_metrics(recs, liked, suffix="_liked"))
    metrics["candidate_recall"] = candidate_recall(model, data, relevant, counts)
    metrics.update(full_catalog_metrics(model, data, relevant))
    baselines = evaluation.baseline_recommendations(data.train, relevant.keys(), CURVE_K, ease_lambda)
    metrics.update(evaluation.baseline_metrics_of(baselines, relevant))
    return metrics, {"y": y, "p": p, "relevant": relevant, "rankings": {"model": recs, **baselines}}


def full_catalog_metrics(model: TwoHeadModel, data: OfflineData, relevant: dict[int, set[int]]) -> dict[str, float]:
    """`full_catalog_*_at_10`: the relevance head ranking every unrated movie, as the baselines do.

    Over every held-out user while users x movies <= FULL_CATALOG_MAX_ROWS, else over a seeded sample of
    users that fits (`full_catalog_users` says how many): on a big catalog it is a comparison figure, not
    worth scoring billions of rows."""
    n_items = len(data.online_items)
    users = evaluation.sample_users(relevant, max(1, FULL_CATALOG_MAX_ROWS // max(1, n_items)))
    everything = CandidateCounts(cf=n_items, popular=0)
    full = evaluation.ranking_metrics(rank_all(model, data, users, everything), {u: relevant[u] for u in users})
    return {f"full_catalog_{k}": v for k, v in full.items()} | {"full_catalog_users": float(len(users))}
