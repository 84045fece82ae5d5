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

from mlops import features as fx
from mlops import live_ratings
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

    def __init__(self, core: RankerCore, info: RankerInfo, live_cutoff: float | None = None):
        """`live_cutoff`: apply the users' ratings at or after this time (s since the epoch; the serving set's
        snapshot cutoff) from the stream's overlay (`mlops.live_ratings`); None serves the set as loaded."""
        self.core = core
        self.info = info
        self.live_cutoff = live_cutoff

    @property
    def live(self) -> bool:
        """Whether this ranker serves the stream's ratings since its set (the serving set does, parity does not)."""
        return self.live_cutoff is not None

    def users(self, online: Any) -> dict[int, dict[str, Any] | None]:
        """The user rows of `online` (`OnlineFeatures`, read with live=self.live) with the ratings since the
        set's cutoff applied (`features.with_ratings`): what requests are answered from. A user the set does
        not know but the stream does gets a profile of those ratings alone."""
        users = online.users
        if not self.live or not online.live:
            return users
        fresh = dict(users)
        catalog = self.core.catalog
        for user_id, ratings in online.live.items():
            since = [(m, r) for m, r, _ in live_ratings.since(ratings, self.live_cutoff) if m in catalog.position]
            if since:
                fresh[user_id] = fx.with_ratings(users.get(user_id), since, catalog.genres)
        return fresh

    @classmethod
    def load(cls, settings: Settings, store: Any, alias: str = CHAMPION, compiled: bool = True) -> Ranker:
        """Load the model version behind `alias` of MODEL_NAME and the item features of its feature set.

        The feature-set version is the model's lineage tag (`feature_set`, its serving set; with
        SERVE_FEATURE_SET=evaluation its `evaluation_feature_set`), not whatever `fs:current` says: a model
        only ever sees the features it was trained for. Raises `LookupError` when the
        alias does not exist. `compiled` serves the heads as native code (`mlops.compiled_trees`);
        False keeps LightGBM itself, the reference the verifier compares served results with.
        """
        from mlops.registry import load_model_version

        model, version = load_model_version(settings, alias)
        if compiled:
            model = model.compiled(settings.path("local_dir") / "cache" / "compiled-trees")
        serving = settings.serve_feature_set == "serving"
        # A version trained before serving sets existed has one set only: its `feature_set` is its evaluation set.
        feature_set = (version.tags.get("feature_set") if serving else
                       version.tags.get("evaluation_feature_set", version.tags.get("feature_set"))) or ""  # fmt: skip
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
        cutoff = float(meta.get("snapshot_cutoff") or 0) if serving else None
        return cls(RankerCore(model, catalog, serving=serving), info, cutoff)

    def score_with_flags(
        self, users: list[dict[str, Any] | None], movie_ids: list[list[int]], observed: list[bool] | None = None
    ) -> tuple[list[dict[int, float]], list[bool]]:
        """P(rating >= 4) for each user's listed movies, plus per-user fallback flags (True: unknown user).

        Movie ids unknown to the feature set get the catalog's prior like rate (answered, never dropped);
        unknown users are scored by the model without user features."""
        return self.core.score(users, movie_ids, observed)

    def recommend_with_flags(
        self, users: list[dict[str, Any] | None], ks: list[int]
    ) -> tuple[list[list[tuple[int, float]]], list[bool]]:
        """Top-k (movie_id, score), best first, among movies the user has not rated, plus per-user fallback flags.

        The score is the model family's ranking score (what the ranking orders by; see `model_family`); an
        unknown user gets the most popular movies."""
        return self.core.recommend(users, ks)
