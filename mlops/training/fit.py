"""Fitting a model version's parts: the rating head, the retrievers, and the chosen family's state.

Deterministic: fixed seeds, LightGBM's `deterministic` mode, single-threaded histogram construction order.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from mlops import features as fx
from mlops.model import learners
from mlops.model.families import family
from mlops.model.ranking import Catalog
from mlops.model.rating_input import RATING_FEATURES
from mlops.model.recommender import Recommender
from mlops.model.retrievers import Retrievers
from mlops.training.offline_data import OfflineData
from mlops.training.rating_examples import RatingRows, training_rows

log = logging.getLogger(__name__)

ROUNDS = {"rating": 300, "ranker": learners.ROUNDS}
HEADS = ("rating", "ranker")  # what tuning searches: the rating head and the LambdaRank family
# What tuning may change per head (`training.tune`); `rounds` is the number of boosting rounds.
TUNABLE = ("rounds", "learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "lambda_l2")
DEFAULT_EASE_LAMBDA = 400.0  # what the tests' tiny data and a run without a validation choice use


def default_head_params() -> dict[str, dict[str, Any]]:
    """The untuned choice per head: its rounds plus its parameters' values of the TUNABLE keys."""
    base = {"rating": lgb_params(0, ()), "ranker": learners.ranker_params(0)}
    return {h: {"rounds": ROUNDS[h], **{k: base[h][k] for k in TUNABLE if k != "rounds"}} for h in HEADS}


def lgb_params(seed: int, monotone: tuple[str, ...], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """LightGBM parameters of the rating head over the features `monotone` (in order), with tuned `overrides`
    (rounds excluded); also logged as the run's params."""
    return learners.lightgbm_params(
        seed,
        {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
         "monotone_constraints": [1 if n in fx.MONOTONE_INCREASING else 0 for n in monotone]},
        overrides,
    )  # fmt: skip


def fit_rating(rows: RatingRows, seed: int, params: dict[str, Any] | None = None) -> lgb.Booster:
    """The rating head, P(rating >= 4 | rated), on the rated pairs of `rating_examples.training_rows`."""
    params = params or default_head_params()["rating"]
    started = time.monotonic()
    booster = lgb.train(
        lgb_params(seed, RATING_FEATURES, params),
        lgb.Dataset(rows.x, rows.y, feature_name=list(RATING_FEATURES)),
        int(params["rounds"]),
    )
    log.info("train: rating head on %d rated pairs (%.1fs)", len(rows.y), time.monotonic() - started)
    return booster


def catalog_of(data: OfflineData) -> Catalog:
    """The feature set's catalog (its online items), with its popular list: what serving loads too."""
    popular = data.meta.get("popular_movie_ids")
    return Catalog(data.online_items, popular=[] if popular is None else [int(m) for m in popular])


def user_rows(data: OfflineData) -> dict[int, dict[str, Any]]:
    """The feature set's online user rows by user id, as the online store returns them."""
    rows = {}
    for row in data.online_users.to_dict("records"):
        for column in (fx.RATED_COLUMN, fx.LIKED_COLUMN):
            row[column] = [int(m) for m in row[column]]
        rows[int(row["user_id"])] = row
    return rows


def retrievers_of(data: OfflineData, ease_lambda: float) -> Retrievers:
    """Every retriever fit on `data`'s history over its catalog."""
    catalog = catalog_of(data)
    return Retrievers.fit(data.train, catalog.movie_ids, catalog.keys, ease_lambda)


def serving_retrievers(items: pd.DataFrame, ratings: pd.DataFrame, ease_lambda: float) -> dict[str, np.ndarray]:
    """The retrievers refit on every ingested rating over the serving set's catalog (`items`), with the
    choices made on validation (EASE's lambda): what users are answered with."""
    catalog = Catalog(items)
    return Retrievers.fit(ratings, catalog.movie_ids, catalog.keys, ease_lambda).state()


def labelled_table(data: OfflineData, ease_lambda: float, retrievers: Retrievers | None = None) -> learners.Table:
    """The learned families' training rows: `data`'s world (history, rows) labelled by its held-out ratings."""
    from mlops.evaluation import relevant_sets

    relevant, _ = relevant_sets(data.test)
    retrievers = retrievers or retrievers_of(data, ease_lambda)
    return learners.table(retrievers, catalog_of(data).matrix, user_rows(data), relevant)


def fit(
    data: OfflineData,
    seed: int,
    head_params: dict[str, dict[str, Any]] | None = None,
    family_name: str = "ease",
    table: learners.Table | None = None,
    ease_lambda: float = DEFAULT_EASE_LAMBDA,
) -> Recommender:
    """A model version on `data`'s history: the rating head, the retrievers, and family `family_name`'s state
    learned on `table` (labelled candidates from another world: `labelled_table` of the selection sets)."""
    hp = head_params or default_head_params()
    fam = family(family_name)
    learned = None
    if fam.learned:
        if table is None:
            raise ValueError(f"family {family_name!r} learns from labelled candidates: pass `table`")
        learned = learners.fit(fam, table, seed, hp["ranker"] if fam.scorer == "booster" else None)
    state = retrievers_of(data, ease_lambda).state()
    rows = training_rows(data, catalog_of(data).movie_ids, ease_lambda, seed)
    return Recommender(fit_rating(rows, seed, hp["rating"]), fam, learned, state)
