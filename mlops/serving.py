"""Online scoring: the `Ranker` the inference consumer calls, micro-batch by micro-batch.

WHY this shape: the consumer batches requests, so every API takes lists and answers lists in the same
order. The Ranker holds the item features of the feature set its model was trained for in memory (a
few MB even for large catalogs), so a request costs one Redis read of the user rows (done by the caller
through `RedisFeatureStore.get_online_features`) and one LightGBM call per micro-batch. Pair features
are computed by `mlops.features.build_matrix`, the same function training used: no training/serving skew.

Top-k is two-stage so it scales with the catalog: candidates are the best items by the user's
collaborative-filtering vector (a dot product against the item key matrix) plus the most popular
items, minus what the user already rated; LightGBM re-ranks only those candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops.settings import Settings


@dataclass(frozen=True)
class RankerInfo:
    """What a prediction must report (CONTRACTS.md): the model version and the feature set it serves."""

    model_name: str
    model_version: str
    alias: str
    feature_set: str
    run_id: str


class Ranker:
    """Scores (user, movie) pairs and recommends top-k with the registered model behind an alias.

    `users` arguments are the user rows returned by the feature store (a dict of the user's online
    feature columns, including `rated_movie_ids`), or None for a user the feature set does not know:
    such users get the cold-start fallback (popularity) and `last_fallbacks` says which answers were.
    """

    info: RankerInfo
    # One flag per user of the last `score` / `recommend` call: True when the popularity fallback answered.
    last_fallbacks: list[bool]

    @classmethod
    def load(cls, settings: Settings, store: Any, alias: str = "champion") -> Ranker:
        """Load the model version behind `alias` of MODEL_NAME and the item features of its feature set.

        The feature-set version is the model's lineage tag (`feature_set`), not whatever `fs:current`
        says: a model only ever sees the features it was trained for. Raises `LookupError` when the
        alias does not exist.
        """
        raise NotImplementedError

    def score(self, users: list[dict[str, Any] | None], movie_ids: list[list[int]]) -> list[dict[int, float]]:
        """P(rating >= 4) for each user's listed movies; movie ids unknown to the feature set get the
        catalog's prior like rate (they are still answered, never dropped)."""
        raise NotImplementedError

    def recommend(self, users: list[dict[str, Any] | None], ks: list[int]) -> list[list[tuple[int, float]]]:
        """Top-k (movie_id, score), best first, among movies the user has not rated."""
        raise NotImplementedError

    def score_with_flags(
        self, users: list[dict[str, Any] | None], movie_ids: list[list[int]]
    ) -> tuple[list[dict[int, float]], list[bool]]:
        """`score` plus the per-user fallback flags, without relying on `last_fallbacks`."""
        raise NotImplementedError

    def recommend_with_flags(
        self, users: list[dict[str, Any] | None], ks: list[int]
    ) -> tuple[list[list[tuple[int, float]]], list[bool]]:
        """`recommend` plus the per-user fallback flags."""
        raise NotImplementedError
