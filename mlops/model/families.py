"""Model families: how top-k orders a user's candidates. One table; training, evaluation and serving read it.

A family names the retrievers whose top-N make its candidates, the candidate features it reads and its
scorer, which turns them into one ranking score:
- `booster`: a learned LightGBM LambdaRank booster over the features (`ranker`);
- `linear`: learned weights of the retrievers' scaled scores (`blend`);
- `column`: the first feature itself, one retriever's score (`ease`, `als`, `cooccurrence`, `popularity`),
  so that a run serves a single retriever when nothing learned beats it on validation.
Adding a family is one entry in FAMILIES (plus a learner in `mlops.model.learners` for a new scorer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops.errors import ModelFormatError
from mlops.model.candidates import DEPTH, RANKER_FEATURES, Candidates, candidates
from mlops.model.retrievers import Retrievers, UserBatch

SINGLE_DEPTH = 100  # candidates of a single-retriever family (top-k needs at most 100)


SCORERS = ("booster", "linear", "column")
BLEND_FEATURES = ("ease_score", "als_score", "cooccurrence_score", "popularity_score")


@dataclass(frozen=True)
class Family:
    """`depth`: retriever -> top-N of its candidates; `features`: what the scorer reads; `scorer`: one of SCORERS."""

    name: str
    depth: Mapping[str, int] = field(hash=False)
    features: tuple[str, ...]
    scorer: str = "column"

    @property
    def learned(self) -> bool:
        """Whether the family has state fit on labels (and so is cross-fitted for its validation figure)."""
        return self.scorer != "column"

    def candidates(self, retrievers: Retrievers, item_matrix: np.ndarray, batch: UserBatch, k: int) -> Candidates:
        return candidates(retrievers, item_matrix, batch, self.depth, self.features, k)

    def scores(self, x: np.ndarray, learned: Any | None) -> np.ndarray:
        """One ranking score per candidate row of `x` (this family's features; higher first)."""
        if self.scorer == "column":
            return np.nan_to_num(x[:, 0], nan=-np.inf).astype(np.float64)
        if learned is None:
            raise ValueError(f"family {self.name!r} has no fitted state")
        if self.scorer == "linear":
            return linear_scores(x, learned)
        return learned.predict(x, num_threads=1) if len(x) else np.zeros(0)


def linear_scores(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The blend: weighted sum of scaled retriever scores; a retriever with no score counts as -1 (below its top-N)."""
    return np.nan_to_num(x.astype(np.float64), nan=-1.0) @ np.asarray(weights, dtype=np.float64)


def _single(retriever: str) -> Family:
    return Family(retriever, {retriever: SINGLE_DEPTH}, (f"{retriever}_score",))


FAMILIES: dict[str, Family] = {
    "ranker": Family("ranker", DEPTH, RANKER_FEATURES, "booster"),
    "blend": Family("blend", DEPTH, BLEND_FEATURES, "linear"),
    "ease": _single("ease"),
    "als": _single("als"),
    "cooccurrence": _single("cooccurrence"),
    "popularity": _single("popularity"),
}


def family(name: str) -> Family:
    """The family called `name`; `ModelFormatError` (naming it and the known ones) otherwise."""
    if name not in FAMILIES:
        raise ModelFormatError(f"model family {name!r} is unknown to this serving code (known: {sorted(FAMILIES)})")
    return FAMILIES[name]


def top_k(
    fam: Family,
    learned: Any | None,
    retrievers: Retrievers,
    item_matrix: np.ndarray,
    batch: UserBatch,
    ks: list[int],
) -> list[list[tuple[int, float]]]:
    """Per user, the best `ks[i]` (catalog position, score) among their candidates, best first."""
    cands = fam.candidates(retrievers, item_matrix, batch, max(ks, default=0))
    scores = fam.scores(cands.features, learned)
    order = np.lexsort((cands.positions, -scores, cands.users))  # by user, then score (ties: catalog order)
    users, positions, ranked = cands.users[order], cands.positions[order], scores[order]
    starts = np.searchsorted(users, np.arange(len(ks) + 1))
    out = []
    for i, k in enumerate(ks):
        a, b = starts[i], min(starts[i + 1], starts[i] + k)
        out.append([(int(p), float(s)) for p, s in zip(positions[a:b], ranked[a:b], strict=True) if np.isfinite(s)])
    return out
