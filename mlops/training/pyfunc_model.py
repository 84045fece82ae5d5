"""The registered model's pyfunc, logged as code (MLflow models-from-code): this file travels with the model.

WHY standalone: a registered model must load wherever its logged requirements install (a fresh virtual
environment, `mlflow models serve`, `spark_udf`, another team's notebook), so this file imports only
public packages, never `mlops`, and nothing is pickled. The signature (logged from the platform's feature
definitions) makes MLflow reject a missing or mistyped column before `predict` runs.

Input: one row per (user, candidate movie), the rating head's feature columns plus the family's candidate
features (double; NaN = missing). Output: `p_like` (P(rating >= 4 | rated)) and `rank_score` (the model
family's ranking score for the pair: higher first; `family.json` says which family and how it scores).
"""

from __future__ import annotations

import json
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import set_model


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """The rating head and the family's scorer, read from the model's artifacts (LightGBM text files, JSON)."""

    def load_context(self, context: Any) -> None:
        """MLflow's load hook: the rating booster, the family spec and, for a learned ranker, its booster."""
        self.rating = lgb.Booster(model_file=context.artifacts["rating"])
        with open(context.artifacts["family"]) as f:
            self.family = json.load(f)
        self.ranker = lgb.Booster(model_file=context.artifacts["ranker"]) if "ranker" in context.artifacts else None

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """`p_like` and `rank_score` per row."""
        x = model_input[self.family["features"]].to_numpy(dtype=np.float64)
        if self.family["scorer"] == "booster":
            rank = self.ranker.predict(x, num_threads=1)
        elif self.family["scorer"] == "linear":
            rank = np.nan_to_num(x, nan=-1.0) @ np.asarray(self.family["weights"], dtype=np.float64)
        else:
            rank = np.nan_to_num(x[:, 0], nan=-np.inf)
        return pd.DataFrame({"p_like": _predict(self.rating, model_input), "rank_score": rank})


def _predict(booster: lgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    return booster.predict(frame[booster.feature_name()].to_numpy(dtype=np.float64), num_threads=1)


set_model(RecommenderModel())
