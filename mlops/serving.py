"""Online scoring: the `Ranker` the inference consumer calls, micro-batch by micro-batch.

WHY this shape: the consumer batches requests, so every API takes lists and answers lists in the same
order. The Ranker holds the item features of the feature set its model was trained for in memory (a
few MB even for large catalogs), so a request costs one Redis read of the user rows (done by the caller
through `RedisFeatureStore.get_online_features`) and one LightGBM call per micro-batch. Features are
computed by `mlops.features.assemble`, the encoding behind the `build_matrix` training used (no training/
serving skew), once per micro-batch: each user row and the catalog matrix once, plus row indices.
The ranking itself (candidates, re-ranking, cold start) is `mlops.model.ranking`, shared with offline evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mlops.model.ranking import Catalog, RankerCore
from mlops.registry import CHAMPION
from mlops.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankerInfo:
    """What a prediction must report (docs/contracts.md): the model version and the feature set it serves."""

    model_name: str
    model_version: str
    alias: str
    feature_set: str
    run_id: str


class Ranker:
    """Scores (user, movie) pairs and recommends top-k with the registered model behind an alias.

    `users` arguments are the user rows returned by the feature store (a dict of the user's online
    feature columns, including `rated_movie_ids`), or None for a user the feature set does not know:
    such users get the cold-start fallback, and the per-user flags returned with each answer say which were.
    """

    def __init__(self, core: RankerCore, info: RankerInfo):
        self.core = core
        self.info = info

    @classmethod
    def load(cls, settings: Settings, store: Any, alias: str = CHAMPION, compiled: bool = True) -> Ranker:
        """Load the model version behind `alias` of MODEL_NAME and the item features of its feature set.

        The feature-set version is the model's lineage tag (`feature_set`), not whatever `fs:current`
        says: a model only ever sees the features it was trained for. Raises `LookupError` when the
        alias does not exist. `compiled` serves the heads as native code (`mlops.compiled_trees`);
        False keeps LightGBM itself, the reference the verifier compares served results with.
        """
        from mlops.registry import load_model_version

        model, version = load_model_version(settings, alias)
        if compiled:
            model = model.compiled(settings.path("local_dir") / "cache" / "compiled-trees")
        feature_set = version.tags.get("feature_set") or ""
        if not feature_set:
            raise LookupError(f"model {settings.model_name} v{version.version} has no feature_set tag")
        meta = store.metadata(feature_set)
        catalog = Catalog(store.get_all_items(feature_set), popular=meta.get("popular_movie_ids"))
        info = RankerInfo(settings.model_name, str(version.version), alias, feature_set, version.run_id)
        log.info(
            "ranker: %s v%s (@%s) on feature set %s, %d items",
            info.model_name,
            info.model_version,
            alias,
            feature_set,
            len(catalog.movie_ids),
        )
        return cls(RankerCore(model, catalog, serving=True), info)

    def score_with_flags(
        self, users: list[dict[str, Any] | None], movie_ids: list[list[int]]
    ) -> tuple[list[dict[int, float]], list[bool]]:
        """P(rating >= 4) for each user's listed movies, plus per-user fallback flags (True: unknown user).

        Movie ids unknown to the feature set get the catalog's prior like rate (answered, never dropped);
        unknown users are scored by the model without user features."""
        return self.core.score(users, movie_ids)

    def recommend_with_flags(
        self, users: list[dict[str, Any] | None], ks: list[int]
    ) -> tuple[list[list[tuple[int, float]]], list[bool]]:
        """Top-k (movie_id, score), best first, among movies the user has not rated, plus per-user fallback flags.

        The score is the model family's ranking score (what the ranking orders by; see `model_family`); an
        unknown user gets the most popular movies."""
        return self.core.recommend(users, ks)
