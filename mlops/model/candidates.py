"""Candidates and their ranking features: the union of each retriever's top-N, and what the ranker sees.

WHY one function for training and serving: the ranker learns on these features and serves on them, so
they must be computed by the same code from the same kind of inputs (a history's retrievers, the feature
set's user and item rows). Every retriever feature is scale-free, so that it means the same thing for a
retriever fit on train (where the ranker learns) and one refit on more ratings (where it serves):
- `<retriever>_score`: the score min-max scaled over the user's top-N of that retriever (1 = its best
  unrated movie, 0 = its N-th, below 0 past it);
- `<retriever>_rank`: log(1 + rank) among the user's unrated movies, capped at N (N = not in its top-N).
Context features are `mlops.features`' own (user, item and pair), taken from the same rows as the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mlops import features as fx
from mlops.model.retrievers import RETRIEVERS, Retrievers, UserBatch

# Top-N each retriever contributes to the candidate set (the union is what top-k ranks).
DEPTH: dict[str, int] = {"ease": 100, "als": 50, "cooccurrence": 30, "popularity": 20}
RETRIEVER_FEATURES: tuple[str, ...] = tuple(f"{r}_{kind}" for r in RETRIEVERS for kind in ("score", "rank"))
CONTEXT_FEATURES: tuple[str, ...] = (
    "u_n_ratings",
    "u_mean_rating",
    "u_like_rate",
    "i_pop_share",
    "i_mean_smoothed",
    "i_like_rate_smoothed",
    "i_std_rating",
    "i_year",
    "cf_cosine",
    "genre_affinity",
    "genre_liked_affinity",
    "taste_gap",
)
RANKER_FEATURES: tuple[str, ...] = RETRIEVER_FEATURES + CONTEXT_FEATURES


@dataclass
class Candidates:
    """A batch's candidates, flattened: row j is user `users[j]` (batch row) and catalog position `positions[j]`."""

    users: np.ndarray
    positions: np.ndarray
    features: np.ndarray  # (candidates, len(names)) float32
    names: tuple[str, ...]

    def column(self, name: str) -> np.ndarray:
        return self.features[:, self.names.index(name)]


@dataclass
class _Ranked:
    """One retriever's view of a batch: its top-N per user and what its features need."""

    top: np.ndarray  # (users, n) catalog positions, best first; -1 past the movies it can score
    rank: np.ndarray  # (users, items) rank among the user's unrated movies, capped at n
    scores: np.ndarray  # (users, items) raw scores
    last: np.ndarray  # (users,) the worst score still in the user's top-N (NaN: none)
    spread: np.ndarray  # (users,) best - last, 1 where that is not positive

    def scaled(self, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Min-max scaled over the user's top-N (1 = best unrated, 0 = N-th); NaN where it has no score."""
        with np.errstate(invalid="ignore", over="ignore"):
            out = (self.scores[users, positions] - self.last[users]) / self.spread[users]
        out[~np.isfinite(out)] = np.nan
        return out


def _ranked(scores: np.ndarray, rated: np.ndarray, n: int) -> _Ranked:
    """Each user's top-N unrated movies by `scores`, their ranks and the scale of the scores."""
    s = np.where(rated, -np.inf, scores)
    n = max(1, min(n, s.shape[1]))
    top = np.argpartition(-s, n - 1, axis=1)[:, :n]
    top_scores = np.take_along_axis(s, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
    rank = np.full(s.shape, n, dtype=np.float32)
    np.put_along_axis(rank, top, np.arange(n, dtype=np.float32)[None, :], axis=1)
    valid = np.isfinite(top_scores)
    # The scale: the user's best unrated score and the worst one still in the top-N (fewer than N may score).
    best = np.where(valid[:, 0], top_scores[:, 0], np.nan)
    last = np.where(valid.any(axis=1), np.where(valid, top_scores, np.inf).min(axis=1), np.nan)
    spread = best - last
    spread = np.where(spread > 0, spread, 1.0)
    return _Ranked(np.where(valid, top, -1), rank, scores, last, spread)


def candidates(
    retrievers: Retrievers,
    item_matrix: np.ndarray,
    batch: UserBatch,
    depth: Mapping[str, int],
    names: tuple[str, ...],
    k: int = 0,
) -> Candidates:
    """The union of each `depth` retriever's top-N unrated movies (N at least `k`), with features `names`."""
    rated = batch.rated_mask
    member = np.zeros(rated.shape, dtype=bool)
    ranked = {}
    for name in dict.fromkeys([*depth, *(n.rsplit("_", 1)[0] for n in names if n in RETRIEVER_FEATURES)]):
        r = ranked[name] = _ranked(retrievers.by_name[name].scores(batch), rated, max(depth.get(name, DEPTH[name]), k))
        if name in depth:
            rows = np.repeat(np.arange(len(r.top)), r.top.shape[1])
            keep = r.top.ravel() >= 0
            member[rows[keep], r.top.ravel()[keep]] = True
    users, positions = np.nonzero(member & ~rated)
    out = np.empty((len(users), len(names)), dtype=np.float32)
    context = [n for n in names if n not in RETRIEVER_FEATURES]
    if context:
        out[:, [names.index(n) for n in context]] = fx.assemble(
            batch.matrix, item_matrix, tuple(context), u_rows=users, i_rows=positions
        )
    for j, name in enumerate(names):
        if name in RETRIEVER_FEATURES:
            retriever, kind = name.rsplit("_", 1)
            r = ranked[retriever]
            out[:, j] = np.log1p(r.rank[users, positions]) if kind == "rank" else r.scaled(users, positions)
    return Candidates(users, positions, out, names)
