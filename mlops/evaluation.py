"""Offline evaluation, Microsoft-Recommenders style: ranking metrics at k and the three baselines.

Protocol (the published MovieLens one): for each test user, rank every movie the user did not rate in
train; relevant = all of the user's test movies (suffix `_liked`: only those rated >= 4). Metrics are
averaged over users with at least one relevant movie. Every method (model and baselines) excludes the
movies the user rated in its training history.
- precision@k = hits in top k / k;  recall@k = hits / relevant;
- nDCG@k with binary gains, ideal = min(k, relevant) hits at the top;
- MAP@k = sum of precision@i over hit ranks i <= k, / min(k, relevant).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from mlops.features import LIKE_THRESHOLD
from mlops.model.families import FAMILIES, top_k
from mlops.model.retrievers import (
    EASE_LAMBDAS,
    Cooccurrence,
    Ease,
    Popularity,
    Retrievers,
    UserBatch,
    gram,
    interactions,
    most_rated,
)

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


# Above this many users EASE's lambda is chosen on a fixed random sample of them (all of ml-1m's): scoring
# EASE for every validation user, six times, took 497 s of the train step at 25M ratings (166,667 users).
EASE_LAMBDA_USERS = 20_000
BATCH_USERS = 500


@dataclass(frozen=True)
class _History:
    """A training history as the baselines read it, built once per history: choosing EASE's lambda scores
    six lambdas on it, and the co-occurrence counts it does not need are never built there. Each baseline
    is the single-retriever family of the same name (`mlops.model.families`) over the history's movies, so
    a model serving the `ease` family ranks exactly as the EASE baseline does."""

    movie_ids: np.ndarray
    r: Any  # binary user x movie CSR matrix
    index: dict[int, int]  # user id -> row of r
    kept: np.ndarray  # columns of the EASE_MAX_ITEMS most rated movies, sorted (`retrievers.most_rated`)

    @classmethod
    def of(cls, train: pd.DataFrame) -> _History:
        movie_ids = np.sort(train["movie_id"].unique())
        r = interactions(train, movie_ids)
        user_ids = np.sort(train["user_id"].unique())
        return cls(movie_ids, r, {int(u): i for i, u in enumerate(user_ids)}, most_rated(r))

    @cached_property
    def gram(self) -> np.ndarray:
        """X'X over the kept movies, built once for all of EASE's lambdas."""
        return gram(self.r, self.kept)

    def popular(self, k: int) -> list[int]:
        """The cold-start list: what every method gives a user without history (ties: lower movie id)."""
        counts = np.asarray(self.r.sum(axis=0)).ravel()
        return self.movie_ids[np.lexsort((self.movie_ids, -counts))[:k]].tolist()

    def retriever(self, name: str, lam: float | None = None) -> Any:
        if name == "ease":
            return Ease.fit(self.r, float(lam), self.kept, self.gram)
        if name == "cooccurrence":
            return Cooccurrence.fit(self.r, self.kept, self.gram)
        return Popularity.fit(self.r)

    def rank(self, name: str, users: Iterable[int], k: int, lam: float | None = None) -> dict[int, list[int]]:
        """Top-k of each user by the single-retriever family `name`; the popular list for a cold user."""
        users = list(users)
        retrievers = Retrievers(self.movie_ids, {name: self.retriever(name, lam)}, float(lam or 0.0))
        no_items = np.empty((len(self.movie_ids), 0))
        out = {u: self.popular(k) for u in users if u not in self.index}
        known = [u for u in users if u in self.index]
        for start in range(0, len(known), BATCH_USERS):
            chunk = known[start : start + BATCH_USERS]
            rows = self.r[[self.index[u] for u in chunk]]
            batch = UserBatch([rows[i].indices for i in range(len(chunk))], np.empty((len(chunk), 0)),
                              len(self.movie_ids))  # fmt: skip
            ranked = top_k(FAMILIES[name], None, retrievers, no_items, batch, [k] * len(chunk))
            out.update(
                {u: self.movie_ids[[p for p, _ in best]].tolist() for u, best in zip(chunk, ranked, strict=True)}
            )
        return out


def baseline_recommendations(
    train: pd.DataFrame, users: Iterable[int], k: int = K, ease_lambda: float | None = None
) -> dict[str, dict[int, list[int]]]:
    """Most-popular, item-to-item co-occurrence and (when `ease_lambda` is given) EASE^R top-k per user,
    movies rated in train excluded: the single-retriever families of `mlops.model.retrievers`.

    Co-occurrence: score(u, i) = sum over the user's train movies j of #users who rated both i and j.
    EASE: score(u, .) = x_u B. Both over the EASE_MAX_ITEMS most rated movies (the retrievers' cap): all of
    them in ml-100k, ml-1m and 1M synthetic ratings. A user without training history (a cold user, e.g.
    after a global_temporal cutoff) gets the popular list from every method, as the model's cold-start
    fallback does: no method scores all misses there.
    """
    users = list(users)
    h = _History.of(train)
    names = ["popularity", "cooccurrence", *(["ease"] if ease_lambda is not None else [])]
    return {name: h.rank(name, users, k, ease_lambda) for name in names}


def sample_users(users: Iterable[int], n: int) -> list[int]:
    """`users` sorted, or `n` of them drawn with a fixed seed when there are more: the same sample every run,
    for the figures that would cost too much over every user."""
    everyone = sorted(users)
    if len(everyone) <= n:
        return everyone
    return sorted(int(u) for u in np.random.default_rng(0).choice(everyone, size=n, replace=False))


def choose_ease_lambda(
    train: pd.DataFrame, validation: pd.DataFrame, k: int = K, max_users: int = EASE_LAMBDA_USERS
) -> tuple[float, dict[float, float]]:
    """The EASE lambda of EASE_LAMBDAS with the best validation ndcg@k (ties: the smaller), and every figure;
    on `max_users` validation users drawn with a fixed seed when there are more."""
    rel, _ = relevant_sets(validation)
    rel = {u: rel[u] for u in sample_users(rel, max_users)}
    h = _History.of(train)
    figures = {lam: ranking_metrics(h.rank("ease", rel, k, lam), rel, k)[f"ndcg_at_{k}"] for lam in EASE_LAMBDAS}
    best = max(EASE_LAMBDAS, key=lambda lam: (figures[lam], -lam))
    return best, figures


def baseline_metrics(
    train: pd.DataFrame, test: pd.DataFrame, k: int = K, ease_lambda: float | None = None
) -> dict[str, float]:
    """`baseline_{popularity,cooccurrence,ease}_ndcg_at_10` (and their other metrics); EASE only with a lambda."""
    rel, _ = relevant_sets(test)
    return baseline_metrics_of(baseline_recommendations(train, rel.keys(), k, ease_lambda), rel, k)


def baseline_metrics_of(
    recs: Mapping[str, Mapping[int, Sequence[int]]], relevant: Mapping[int, set[int]], k: int = K
) -> dict[str, float]:
    """The baselines' metrics from their rankings (which may be longer than k: the curves use k up to 20)."""
    out = {}
    for name, by_user in recs.items():
        out.update({f"baseline_{name}_{m}": v for m, v in ranking_metrics(by_user, relevant, k).items()})
    return out
