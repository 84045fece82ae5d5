"""Offline evaluation of a trained model: every contract metric, ranking through the serving path.

Ranks for every held-out user with `mlops.model.ranking.RankerCore` (what serving uses), so the offline
figures measure what the consumer would answer. `candidate_recall` says how many held-out movies the
model's candidates could reach at all, for the union and (`candidate_recall_<retriever>`) for each
retriever's own top-N. Every method excludes the movies of its training history. Promotion calls
`ranking_ndcg` to compare champion and candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops import evaluation
from mlops.model.candidates import DEPTH
from mlops.model.families import Family
from mlops.model.learners import candidate_batches
from mlops.model.ranking import RankerCore
from mlops.model.recommender import Recommender
from mlops.model.retrievers import Retrievers
from mlops.training.fit import catalog_of, user_rows
from mlops.training.offline_data import OfflineData
from mlops.training.rating_examples import RatingData, RatingRows, held_out_rows, training_rows

BATCH_USERS = 200  # users ranked per call, like a consumer's micro-batch
CURVE_K = 20  # the rankings the plots draw go to this k (the metrics stop at evaluation.K)


def core_of(model: Recommender, data: OfflineData) -> RankerCore:
    """What serving would rank `data`'s users with: the model over the feature set's catalog."""
    return RankerCore(model, catalog_of(data))


def rank_all(
    model: Recommender, data: OfflineData, users: Sequence[int], k: int = evaluation.K
) -> dict[int, list[int]]:
    """Top-k for `users` through the serving path (candidates + the family's order), batched like the consumer."""
    core = core_of(model, data)
    rows = user_rows(data)
    users = list(users)
    out: dict[int, list[int]] = {}
    for start in range(0, len(users), BATCH_USERS):
        chunk = users[start : start + BATCH_USERS]
        recs, _ = core.recommend([rows.get(u) for u in chunk], [k] * len(chunk))
        out.update({u: [m for m, _ in r] for u, r in zip(chunk, recs, strict=True)})
    return out


def candidate_recall(model: Recommender, data: OfflineData, relevant: dict[int, set[int]]) -> dict[str, float]:
    """Share of held-out movies (pooled over users) among the candidates: `candidate_recall` for the union
    of every retriever's top-N (DEPTH) and `candidate_recall_<retriever>` for each one's alone. An unknown
    user's candidates are the popular fallback list."""
    core = core_of(model, data)
    rows = user_rows(data)
    known = [u for u in sorted(relevant) if u in rows]
    fallback = set(core.catalog.movie_ids[core.catalog.popular[: evaluation.K]].tolist())
    cold_hits = sum(len(relevant[u] & fallback) for u in relevant if u not in rows)
    total = max(1, sum(len(r) for r in relevant.values()))
    out = {}
    for name, depth in [("", DEPTH), *((f"_{r}", {r: n}) for r, n in DEPTH.items())]:
        fam = Family(f"recall{name}", depth, ())
        hits = cold_hits
        for uid, cands in candidate_batches(fam, core.retrievers, core.catalog.matrix, rows, known):
            movies = core.catalog.movie_ids[cands.positions].tolist()
            hits += sum(m in relevant[u] for u, m in zip(uid.tolist(), movies, strict=True))
        out[f"candidate_recall{name}"] = hits / total
    return out


def ranking_ndcg(model: Recommender, data: OfflineData) -> float:
    """ndcg_at_10 of `model` on this data: what promotion compares."""
    relevant, _ = evaluation.relevant_sets(data.test)
    return evaluation.ranking_metrics(rank_all(model, data, sorted(relevant)), relevant)["ndcg_at_10"]


def rating_data(data: OfflineData, retrievers: Retrievers, ease_lambda: float, seed: int) -> RatingData:
    """The rating head's training rows (out of fold) and held-out rows of `data`, whose history `retrievers`
    were fit on: computed once per set, reused by every tuning trial."""
    return RatingData(training_rows(data, retrievers.movie_ids, ease_lambda, seed),
                      held_out_rows(retrievers, data, user_rows(data)))  # fmt: skip


def rating_auc(rating: Any, rows: RatingRows) -> float:
    """A rating head's AUC on held-out rated pairs (liked or not)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(rows.y, rating.predict(rows.x, num_threads=1)))


def evaluate(
    model: Recommender, data: OfflineData, ease_lambda: float | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """All docs/contracts.md metrics on `data`'s held-out pairs, plus what the plots draw: the eval
    predictions (`y`, `p`) and the rankings of the model and the baselines up to CURVE_K with the relevant sets."""
    from sklearn.metrics import log_loss, roc_auc_score

    held_out = held_out_rows(core_of(model, data).retrievers, data, user_rows(data))
    p, y = model.p_like(held_out.x), held_out.y
    metrics = {"test_auc": float(roc_auc_score(y, p)), "test_logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))}
    relevant, liked = evaluation.relevant_sets(data.test)
    users = sorted(relevant)
    recs = rank_all(model, data, users, k=CURVE_K)  # longer than K: the plots' curves over k
    metrics.update(evaluation.ranking_metrics(recs, relevant))
    metrics.update(evaluation.ranking_metrics(recs, liked, suffix="_liked"))
    metrics.update(candidate_recall(model, data, relevant))
    baselines = evaluation.baseline_recommendations(data.train, relevant.keys(), CURVE_K, ease_lambda)
    metrics.update(evaluation.baseline_metrics_of(baselines, relevant))
    return metrics, {"y": y, "p": p, "relevant": relevant, "rankings": {"model": recs, **baselines}}
