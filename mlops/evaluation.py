"""Offline evaluation, Microsoft-Recommenders style: ranking metrics at k and the two baselines.

Protocol (the published MovieLens one): for each test user, rank every movie the user did not rate in
train; relevant = all of the user's test movies (suffix `_liked`: only those rated >= 4). Metrics are
averaged over users with at least one relevant movie.
- precision@k = hits in top k / k;  recall@k = hits / relevant;
- nDCG@k with binary gains, ideal = min(k, relevant) hits at the top;
- MAP@k = sum of precision@i over hit ranks i <= k, / min(k, relevant).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mlops.features import LIKE_THRESHOLD

K = 10


def user_metrics(recommended: Sequence[int], relevant: set[int], k: int = K) -> dict[str, float]:
    """The four metrics of one user's ranked list against their relevant set (non-empty)."""
    hits = np.array([m in relevant for m in recommended[:k]], dtype=float)
    n_rel = len(relevant)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(k, n_rel)].sum()
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1) if len(hits) else np.array([])
    return {
        "ndcg": float((hits * discounts[: len(hits)]).sum() / ideal),
        "precision": float(hits.sum() / k),
        "recall": float(hits.sum() / n_rel),
        "map": float((precision_at * hits).sum() / min(k, n_rel)),
    }


def ranking_metrics(
    recommendations: Mapping[int, Sequence[int]], relevant: Mapping[int, set[int]], k: int = K, suffix: str = ""
) -> dict[str, float]:
    """Mean metrics over the users of `relevant` with a non-empty set; a user without recommendations
    counts as all misses. Keys: `ndcg_at_{k}{suffix}` etc."""
    rows = [user_metrics(list(recommendations.get(u, [])), rel, k) for u, rel in relevant.items() if rel]
    if not rows:
        raise ValueError("ranking_metrics: no user has a relevant item")
    return {
        f"{name}_at_{k}{suffix}": float(np.mean([r[name] for r in rows]))
        for name in ("ndcg", "precision", "recall", "map")
    }


def relevant_sets(test: pd.DataFrame) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """(all test movies, liked test movies) per user."""
    all_ = test.groupby("user_id")["movie_id"].apply(lambda s: set(map(int, s))).to_dict()
    liked = (
        test[test["rating"] >= LIKE_THRESHOLD]
        .groupby("user_id")["movie_id"]
        .apply(lambda s: set(map(int, s)))
        .to_dict()
    )
    return all_, liked


def _top_k_excluding(scores: np.ndarray, exclude: Iterable[int], k: int) -> np.ndarray:
    s = scores.astype(float, copy=True)
    s[list(exclude)] = -np.inf
    top = np.argpartition(-s, min(k, len(s) - 1))[:k]
    top = top[np.argsort(-s[top], kind="stable")]
    return top[np.isfinite(s[top])]


def baseline_recommendations(train: pd.DataFrame, users: Iterable[int], k: int = K) -> dict[str, dict[int, list[int]]]:
    """Most-popular and item-to-item co-occurrence top-k (movies rated in train excluded) per user.

    Co-occurrence: score(u, i) = sum over the user's train movies j of #users who rated both i and j
    (a sparse product, so it scales with the ratings, not the catalog squared).
    """
    from scipy import sparse

    movie_ids = np.sort(train["movie_id"].unique())
    user_ids = np.sort(train["user_id"].unique())
    col = np.searchsorted(movie_ids, train["movie_id"].to_numpy())
    row = np.searchsorted(user_ids, train["user_id"].to_numpy())
    r = sparse.csr_matrix((np.ones(len(train)), (row, col)), shape=(len(user_ids), len(movie_ids)))
    r.data[:] = 1.0
    cooc = (r.T @ r).tocsr()
    cooc.setdiag(0)
    popularity = np.asarray(r.sum(axis=0)).ravel()
    out: dict[str, dict[int, list[int]]] = {"popularity": {}, "cooccurrence": {}}
    index = {int(u): i for i, u in enumerate(user_ids)}
    for u in users:
        if u not in index:
            continue
        seen = r[index[u]].indices
        out["popularity"][u] = movie_ids[_top_k_excluding(popularity, seen, k)].tolist()
        co = np.asarray(cooc[seen].sum(axis=0)).ravel()
        out["cooccurrence"][u] = movie_ids[_top_k_excluding(co, seen, k)].tolist()
    return out


def baseline_metrics(train: pd.DataFrame, test: pd.DataFrame, k: int = K) -> dict[str, float]:
    """`baseline_popularity_ndcg_at_10` and `baseline_cooccurrence_ndcg_at_10` (and their other metrics)."""
    rel, _ = relevant_sets(test)
    return baseline_metrics_of(baseline_recommendations(train, rel.keys(), k), rel, k)


def baseline_metrics_of(
    recs: Mapping[str, Mapping[int, Sequence[int]]], relevant: Mapping[int, set[int]], k: int = K
) -> dict[str, float]:
    """The baselines' metrics from their rankings (which may be longer than k: the curves use k up to 20)."""
    out = {}
    for name, by_user in recs.items():
        out.update({f"baseline_{name}_{m}": v for m, v in ranking_metrics(by_user, relevant, k).items()})
    return out
