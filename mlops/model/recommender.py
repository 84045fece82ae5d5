"""The registered model: the rating head, the top-k family and its state, and the retrievers' arrays.

- `rating`: a LightGBM booster, P(rating >= 4 | the user rates the movie) over
  `rating_input.RATING_FEATURES` (the feature set's columns and the user's history through EASE's weights):
  what score requests answer and `test_auc` measures.
- `family` + `learned`: how top-k orders candidates (`mlops.model.families`); `learned` is the family's
  fitted state (the LambdaRank booster, the blend's weights) or None for a single-retriever family.
- `retrievers`: the arrays of `mlops.model.retrievers` fit on the evaluation history (train + validation:
  EASE's item-item weights, co-occurrence, popularity): what offline evaluation, promotion and the parity
  checks rank with, over the evaluation set; `serving_retrievers`: the same refit on every ingested rating,
  what users are answered with over the serving set (None for a model from before the serving set). Both
  are bound to their feature set's catalog (ALS keys) when a `RankerCore` is built.

Saved as plain files (LightGBM text, JSON, one .npz), which are the registered pyfunc's artifacts: serving
reads them back with `from_logged` and never runs a model's Python code.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from mlops.errors import ModelFormatError
from mlops.model.families import Family, family
from mlops.model.rating_input import RATING_FEATURES

RATING_FILE = "rating_head.txt"
FAMILY_FILE = "family.json"
RETRIEVERS_FILE = "retrievers.npz"
SERVING_RETRIEVERS_FILE = "serving_retrievers.npz"
LEARNED_FILE = {"booster": "ranker.txt", "linear": "blend.json"}


@dataclass
class Recommender:
    """What a model version is, in memory; see the module docstring."""

    rating: Any
    family: Family
    learned: Any | None
    retrievers: dict[str, np.ndarray]
    serving_retrievers: dict[str, np.ndarray] | None = None

    def p_like(self, x: np.ndarray) -> np.ndarray:
        """P(rating >= 4) per row of a RATING_FEATURES matrix: what score requests answer."""
        return self.rating.predict(x, num_threads=1)

    def compiled(self, cache_dir: Path) -> Recommender:
        """The same trees as native code (`mlops.compiled_trees`): what serving predicts with."""
        from mlops.compiled_trees import CompiledHead

        learned = CompiledHead(self.learned, cache_dir) if self.family.scorer == "booster" else self.learned
        return replace(self, rating=CompiledHead(self.rating, cache_dir), learned=learned)

    def describe(self) -> dict[str, Any]:
        """family.json: what the standalone pyfunc needs to score a candidate row without this package."""
        out: dict[str, Any] = {"name": self.family.name, "scorer": self.family.scorer,
                               "features": list(self.family.features)}  # fmt: skip
        if self.family.scorer == "linear":
            out["weights"] = [float(w) for w in self.learned]
        return out

    def save(self, directory: Path) -> dict[str, str]:
        """Every part as a file; returns their paths keyed as the pyfunc's artifacts."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"rating": directory / RATING_FILE, "family": directory / FAMILY_FILE,
                 "retrievers": directory / RETRIEVERS_FILE}  # fmt: skip
        self.rating.save_model(str(paths["rating"]))
        paths["family"].write_text(json.dumps(self.describe(), indent=2))
        np.savez(paths["retrievers"], **self.retrievers)
        if self.serving_retrievers is not None:
            paths["serving_retrievers"] = directory / SERVING_RETRIEVERS_FILE
            np.savez(paths["serving_retrievers"], **self.serving_retrievers)
        if self.family.scorer == "booster":
            paths["ranker"] = directory / LEARNED_FILE["booster"]
            self.learned.save_model(str(paths["ranker"]))
        return {k: str(v) for k, v in paths.items()}

    @classmethod
    def load(cls, paths: dict[str, str]) -> Recommender:
        """From the files `save` wrote; `ModelFormatError` when they are not a family model this code serves."""
        if "family" not in paths:
            raise ModelFormatError(
                "the model has no model family (it predates two-stage retrieval): retrain it with this version"
            )
        rating = lgb.Booster(model_file=paths["rating"])
        if tuple(rating.feature_name()) != RATING_FEATURES:
            raise ModelFormatError(
                f"the rating head reads {len(rating.feature_name())} features, this code computes "
                f"{len(RATING_FEATURES)} (it predates the history features): retrain it with this version"
            )
        spec = json.loads(Path(paths["family"]).read_text())
        fam = family(str(spec.get("name")))
        if list(fam.features) != list(spec.get("features", [])):
            raise ModelFormatError(f"family {fam.name!r} was logged with other features than this code computes")
        learned: Any = None
        if fam.scorer == "booster":
            learned = lgb.Booster(model_file=paths["ranker"])
        elif fam.scorer == "linear":
            learned = np.asarray(spec["weights"], dtype=np.float64)
        arrays = {
            name: _arrays(paths[name]) if name in paths else None for name in ("retrievers", "serving_retrievers")
        }
        return cls(rating, fam, learned, arrays["retrievers"] or {},
                   arrays["serving_retrievers"])  # fmt: skip

    @classmethod
    def from_logged(cls, model_uri: str) -> Recommender:
        """The parts of a logged model, read from the files its MLmodel names as pyfunc artifacts."""
        from mlflow.artifacts import download_artifacts
        from mlflow.models import Model

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(download_artifacts(artifact_uri=model_uri, dst_path=tmp))
            artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts") or {}
            if "rating" not in artifacts:
                raise ModelFormatError(f"{model_uri} is not a recommender: no 'rating' pyfunc artifact")
            return cls.load({name: str(local / a["path"]) for name, a in artifacts.items()})


def _arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}
