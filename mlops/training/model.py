"""The recommender model: two LightGBM heads over the same `features.build_matrix` input.

- `rating` head: P(rating >= 4 | the user rates the movie), trained on rated pairs only. This answers
  score requests and is what `test_auc` / `test_logloss` measure.
- `relevance` head: P(the user rates the movie), trained on rated pairs (1) against sampled movies the
  user never rated (0). Top-k ranks candidates by it: the published protocol counts every test movie as
  relevant, so "will the user watch it" is what the ranking must predict; P(like) alone would push
  rarely-watched, well-rated movies up.

Logged to MLflow as a pyfunc whose `predict` takes a DataFrame with FEATURE_NAMES columns and returns
`p_like` and `p_relevant`; serving unwraps the boosters for speed. Loading needs only this package's
`features` and `training.model` modules (no training code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from mlops import features as fx

try:  # mlflow is a dependency of the package; the guard only keeps `import` cheap in tools that skip it
    import mlflow.pyfunc

    _PythonModel: Any = mlflow.pyfunc.PythonModel
except ImportError:  # pragma: no cover
    _PythonModel = object

RATING_FILE = "rating_head.txt"
RELEVANCE_FILE = "relevance_head.txt"
RELEVANCE_INDEX = [fx.FEATURE_NAMES.index(n) for n in fx.RELEVANCE_FEATURES]


@dataclass
class TwoHeadModel:
    """`rating` and `relevance` are LightGBM boosters, or after `compiled()` their native-code versions."""

    rating: Any
    relevance: Any

    def p_like(self, x: np.ndarray) -> np.ndarray:
        return self.rating.predict(x, num_threads=1)

    def p_relevant(self, x: np.ndarray) -> np.ndarray:
        return self.relevance.predict(x[:, RELEVANCE_INDEX], num_threads=1)

    def compiled(self, cache_dir: Path) -> TwoHeadModel:
        """The same trees as native code (`mlops.compiled_trees`): what serving predicts with."""
        from mlops.compiled_trees import CompiledHead

        return TwoHeadModel(CompiledHead(self.rating, cache_dir), CompiledHead(self.relevance, cache_dir))

    def save(self, directory: Path) -> dict[str, str]:
        directory.mkdir(parents=True, exist_ok=True)
        self.rating.save_model(str(directory / RATING_FILE))
        self.relevance.save_model(str(directory / RELEVANCE_FILE))
        return {"rating": str(directory / RATING_FILE), "relevance": str(directory / RELEVANCE_FILE)}

    @classmethod
    def load(cls, rating_path: str, relevance_path: str) -> TwoHeadModel:
        return cls(lgb.Booster(model_file=rating_path), lgb.Booster(model_file=relevance_path))


class RecommenderPyfunc(_PythonModel):
    """MLflow pyfunc wrapper: boosters as artifacts, FEATURE_NAMES columns in, probabilities out."""

    model: TwoHeadModel

    def load_context(self, context: Any) -> None:
        self.model = TwoHeadModel.load(context.artifacts["rating"], context.artifacts["relevance"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        missing = [c for c in fx.FEATURE_NAMES if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks feature column(s) {missing}")
        x = model_input[list(fx.FEATURE_NAMES)].to_numpy(dtype=np.float64)
        return pd.DataFrame({"p_like": self.model.p_like(x), "p_relevant": self.model.p_relevant(x)})
