"""The registered model's pyfunc, logged as code (MLflow models-from-code): this file travels with the model.

WHY standalone: a registered model must load wherever its logged requirements install (a fresh virtual
environment, `mlflow models serve`, `spark_udf`, another team's notebook), so this file imports only
public packages, never `mlops`, and nothing is pickled. Each head's input columns are the feature names
LightGBM stored in its booster at training time; the signature (logged from `mlops.features.FEATURE_NAMES`)
makes MLflow reject a missing or mistyped column before `predict` runs.

Input: a DataFrame with the FEATURE_NAMES columns (double; NaN = missing). Output: `p_like` (rating head,
P(rating >= 4 | rated)) and `p_relevant` (relevance head, P(the user rates the movie)).
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import set_model


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Both LightGBM heads, read from the model's `rating` and `relevance` artifacts (LightGBM text files)."""

    def load_context(self, context: Any) -> None:
        """MLflow's load hook: both boosters from the model's artifacts."""
        self.rating = lgb.Booster(model_file=context.artifacts["rating"])
        self.relevance = lgb.Booster(model_file=context.artifacts["relevance"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """`p_like` and `p_relevant` per row; each head selects its own columns by name."""
        return pd.DataFrame(
            {"p_like": _predict(self.rating, model_input), "p_relevant": _predict(self.relevance, model_input)}
        )


def _predict(booster: lgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    return booster.predict(frame[booster.feature_name()].to_numpy(dtype=np.float64), num_threads=1)


set_model(RecommenderModel())
