"""The recommender model: two LightGBM heads over the same `features.build_matrix` input.

- `rating` head: P(rating >= 4 | the user rates the movie), trained on rated pairs only. This answers
  score requests and is what `test_auc` / `test_logloss` measure.
- `relevance` head: P(the user rates the movie), trained on rated pairs (1) against sampled movies the
  user never rated (0). Top-k ranks candidates by it: the published protocol counts every test movie as
  relevant, so "will the user watch it" is what the ranking must predict; P(like) alone would push
  rarely-watched, well-rated movies up.

Logged to MLflow as a pyfunc whose `predict` takes a DataFrame with FEATURE_NAMES columns and returns
`p_like` and `p_relevant`. The pyfunc is `pyfunc_model.py`, logged as code with public, pinned
requirements, so the registered model loads and serves anywhere (`mlflow models serve`, a fresh venv).
The project itself reads the two boosters from the logged artifacts (`TwoHeadModel.from_logged`), which
works for every version ever registered, including those pickled as `RecommenderPyfunc`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.metadata import version
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
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # logged as the model's code (models-from-code)
# What the logged model needs to load and predict: the imports of PYFUNC_CODE, and scipy, LightGBM's own
# dependency. Pinned at the installed versions, i.e. pyproject's pins: no second list of versions.
PYFUNC_REQUIREMENTS = ("mlflow", "lightgbm", "numpy", "pandas", "scipy")
OUTPUTS = ("p_like", "p_relevant")


@dataclass
class TwoHeadModel:
    """`rating` and `relevance` are LightGBM boosters, or after `compiled()` their native-code versions."""

    rating: Any
    relevance: Any

    def p_like(self, x: np.ndarray) -> np.ndarray:
        """P(rating >= 4) per row of a FEATURE_NAMES matrix: what score requests answer."""
        return self.rating.predict(x, num_threads=1)

    def p_relevant(self, x: np.ndarray) -> np.ndarray:
        """P(the user rates the movie) per row: takes the full matrix, keeps the relevance columns."""
        return self.relevance.predict(x[:, RELEVANCE_INDEX], num_threads=1)

    def compiled(self, cache_dir: Path) -> TwoHeadModel:
        """The same trees as native code (`mlops.compiled_trees`): what serving predicts with."""
        from mlops.compiled_trees import CompiledHead

        return TwoHeadModel(CompiledHead(self.rating, cache_dir), CompiledHead(self.relevance, cache_dir))

    def save(self, directory: Path) -> dict[str, str]:
        """Both heads as LightGBM text files; returns their paths, keyed as the pyfunc's artifacts."""
        directory.mkdir(parents=True, exist_ok=True)
        self.rating.save_model(str(directory / RATING_FILE))
        self.relevance.save_model(str(directory / RELEVANCE_FILE))
        return {"rating": str(directory / RATING_FILE), "relevance": str(directory / RELEVANCE_FILE)}

    @classmethod
    def load(cls, rating_path: str, relevance_path: str) -> TwoHeadModel:
        """Both heads from LightGBM text files, as `save` wrote them."""
        return cls(lgb.Booster(model_file=rating_path), lgb.Booster(model_file=relevance_path))

    @classmethod
    def from_logged(cls, model_uri: str) -> TwoHeadModel:
        """The boosters of a logged model, read as LightGBM files named in its MLmodel.

        Every version keeps them as the pyfunc artifacts `rating` and `relevance`, whether its pyfunc is
        `pyfunc_model.py` (code) or the older pickled `RecommenderPyfunc`, so serving loads old and new
        versions alike and never runs a model's Python code.
        """
        from mlflow.artifacts import download_artifacts
        from mlflow.models import Model

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(download_artifacts(artifact_uri=model_uri, dst_path=tmp))
            artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts") or {}
            if not {"rating", "relevance"} <= set(artifacts):
                raise ValueError(f"{model_uri} is not a recommender: no 'rating'/'relevance' pyfunc artifacts")
            return cls.load(str(local / artifacts["rating"]["path"]), str(local / artifacts["relevance"]["path"]))

    def log_pyfunc(self, example: pd.DataFrame, workdir: Path, registered_model_name: str) -> Any:
        """Log (and register) this model as a self-contained pyfunc; returns MLflow's ModelInfo.

        `example`: a few FEATURE_NAMES rows (the input example). The signature names every feature as a
        required double, so MLflow rejects a missing or mistyped column before the model sees it.
        """
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, DataType, Schema

        heads = {"rating": self.rating.feature_name(), "relevance": self.relevance.feature_name()}
        if heads != {"rating": list(fx.FEATURE_NAMES), "relevance": list(fx.RELEVANCE_FEATURES)}:
            raise ValueError(f"the heads' feature names {heads} differ from mlops.features: refusing to log")
        signature = ModelSignature(
            inputs=Schema([ColSpec(DataType.double, name) for name in fx.FEATURE_NAMES]),
            outputs=Schema([ColSpec(DataType.double, name) for name in OUTPUTS]),
        )
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts=self.save(workdir / "heads"),
            signature=signature,
            input_example=example[list(fx.FEATURE_NAMES)].astype(np.float64),
            pip_requirements=[f"{name}=={version(name)}" for name in PYFUNC_REQUIREMENTS],
            registered_model_name=registered_model_name,
        )


class RecommenderPyfunc(_PythonModel):
    """The pickled pyfunc of versions logged before `pyfunc_model.py`: kept so that they still unpickle here."""

    model: TwoHeadModel

    def load_context(self, context: Any) -> None:
        """MLflow's load hook for old pickled versions: both heads from their artifacts."""
        self.model = TwoHeadModel.load(context.artifacts["rating"], context.artifacts["relevance"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """MLflow's predict for old pickled versions: `p_like` and `p_relevant` per row."""
        missing = [c for c in fx.FEATURE_NAMES if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks feature column(s) {missing}")
        x = model_input[list(fx.FEATURE_NAMES)].to_numpy(dtype=np.float64)
        return pd.DataFrame({"p_like": self.model.p_like(x), "p_relevant": self.model.p_relevant(x)})
