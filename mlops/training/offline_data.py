"""The offline sets a training run reads, and the checks that refuse them before anything is trained.

WHY separate: training, evaluation and promotion all read the same sets; an empty or incomplete one must
fail as bad data (exit 3) before any MLflow call, so nothing half-made is registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops import features as fx
from mlops.errors import DataError
from mlops.settings import Settings


@dataclass
class OfflineData:
    """What `feature_engineering` wrote for one run, plus its split: the inputs of fit, evaluation and promotion."""

    train_examples: pd.DataFrame
    eval_examples: pd.DataFrame
    online_users: pd.DataFrame
    online_items: pd.DataFrame
    meta: dict[str, Any]
    test: pd.DataFrame
    train: pd.DataFrame


def _require(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    if frame is None or len(frame) == 0:
        raise DataError(f"features/{name}: empty; run feature_engineering for this run (nothing was registered)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"features/{name}: missing column(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")


def check(data: OfflineData) -> OfflineData:
    """Refuse empty or incomplete feature sets before anything is trained or registered."""
    _require(data.train_examples, "train_examples", ["label", "is_negative", *fx.USER_COLUMNS, *fx.ITEM_COLUMNS])
    _require(data.eval_examples, "eval_examples", ["label", *fx.USER_COLUMNS, *fx.ITEM_COLUMNS])
    _require(data.online_users, "online_users", ["user_id", fx.RATED_COLUMN, fx.LIKED_COLUMN, *fx.USER_COLUMNS])
    _require(data.online_items, "online_items", ["movie_id", *fx.ITEM_COLUMNS])
    rated = data.train_examples[data.train_examples["is_negative"] == 0]
    if rated["label"].nunique() < 2 or data.train_examples["is_negative"].nunique() < 2:
        raise DataError("features/train_examples: needs liked and not-liked ratings and sampled negatives to train")
    if data.eval_examples["label"].nunique() < 2:
        raise DataError("features/eval_examples: all test labels are equal; AUC is undefined")
    return data


SELECTION = "selection"  # features from train only, evaluated on validation: what every choice is made on
FINAL = "final"  # features from train + validation, evaluated on test: the refit, scored once


def load_offline(settings: Settings, run_id: str, stage: str = FINAL) -> OfflineData:
    """The run's offline sets from the object store (`DataError` naming what is missing).

    `stage` FINAL: the test pairs, with train + validation as the history (`train`); SELECTION: the
    validation pairs (as `test`), with train alone as the history.
    """
    from mlops.layout import SELECTION_PREFIX, features_key, split_key
    from mlops.spark_io import read_pandas

    if stage not in (SELECTION, FINAL):
        raise ValueError(f"unknown stage {stage!r}")
    prefix = SELECTION_PREFIX if stage == SELECTION else ""
    frames = {
        name: read_pandas(features_key(run_id, prefix + name), settings)
        for name in ("train_examples", "eval_examples", "online_users", "online_items", "online_meta")
    }
    meta = frames["online_meta"].iloc[0].to_dict() if len(frames["online_meta"]) else {}
    train = read_pandas(split_key(run_id, "train"), settings)
    validation = read_pandas(split_key(run_id, "validation"), settings)
    if stage == FINAL:
        held_out, history = read_pandas(split_key(run_id, "test"), settings), pd.concat([train, validation])
    else:
        held_out, history = validation, train
    return check(
        OfflineData(
            frames["train_examples"],
            frames["eval_examples"],
            frames["online_users"],
            frames["online_items"],
            meta,
            held_out.reset_index(drop=True),
            history.reset_index(drop=True),
        )
    )


def load_serving_catalog(settings: Settings, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(the serving set's online items, every ingested rating): what the serving retrievers are refit on;
    None for a run written before the serving set existed (its evaluation set serves)."""
    from mlops.layout import SERVING_PREFIX, features_key, split_key
    from mlops.spark_io import dataset_exists, read_pandas

    key = features_key(run_id, SERVING_PREFIX + "online_items")
    if not dataset_exists(key, settings):
        return None
    items = read_pandas(key, settings)
    _require(items, "serving/online_items", ["movie_id", *fx.ITEM_COLUMNS])
    ratings = pd.concat([read_pandas(split_key(run_id, part), settings) for part in ("train", "validation", "test")])
    return items, ratings.reset_index(drop=True)
