"""Fitting the two LightGBM heads: hyperparameters, rounds, and the fit itself.

Deterministic: fixed seeds, LightGBM's `deterministic` mode, single-threaded histogram construction order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb

from mlops import features as fx
from mlops.training.model import RELEVANCE_INDEX, TwoHeadModel
from mlops.training.offline_data import OfflineData

log = logging.getLogger(__name__)

ROUNDS = {"rating": 300, "relevance": 200}
HEADS = ("rating", "relevance")
# What tuning may change per head (`training.tune`); `rounds` is the number of boosting rounds.
TUNABLE = ("rounds", "learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "lambda_l2")


def default_head_params() -> dict[str, dict[str, Any]]:
    """The untuned choice per head: ROUNDS plus lgb_params' values of the TUNABLE keys."""
    base = lgb_params(0, ())
    return {h: {"rounds": ROUNDS[h], **{k: base[k] for k in TUNABLE if k != "rounds"}} for h in HEADS}


def lgb_params(seed: int, monotone: Sequence[str], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """LightGBM parameters of a head over the features `monotone` (in order), with tuned `overrides`
    (rounds excluded); also logged as the run's params."""
    return {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
        "monotone_constraints": [1 if n in fx.MONOTONE_INCREASING else 0 for n in monotone],
    } | {k: v for k, v in (overrides or {}).items() if k != "rounds"}


def fit(data: OfflineData, seed: int, head_params: dict[str, dict[str, Any]] | None = None) -> TwoHeadModel:
    """Both heads on the point-in-time training examples; `head_params` per head (default_head_params())."""
    hp = head_params or default_head_params()
    ex = data.train_examples.sort_values(["user_id", "timestamp", "movie_id", "is_negative"], kind="stable")
    x = fx.build_matrix(ex, ex)
    rated = ex["is_negative"].to_numpy() == 0
    started = time.monotonic()
    rating = lgb.train(
        lgb_params(seed, fx.FEATURE_NAMES, hp["rating"]),
        lgb.Dataset(x[rated], ex["label"].to_numpy()[rated], feature_name=list(fx.FEATURE_NAMES)),
        int(hp["rating"]["rounds"]),
    )
    log.info("train: rating head on %d rated pairs (%.1fs)", int(rated.sum()), time.monotonic() - started)
    relevance = lgb.train(
        lgb_params(seed, fx.RELEVANCE_FEATURES, hp["relevance"]),
        lgb.Dataset(x[:, RELEVANCE_INDEX], rated.astype(int), feature_name=list(fx.RELEVANCE_FEATURES)),
        int(hp["relevance"]["rounds"]),
    )
    log.info("train: relevance head on %d pairs (%.1fs)", len(x), time.monotonic() - started)
    return TwoHeadModel(rating, relevance)
