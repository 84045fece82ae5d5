"""Logging a `Recommender` to MLflow as a self-contained pyfunc, with an input example built as serving builds it.

The pyfunc is `pyfunc_model.py`, logged as code with public, pinned requirements, so the registered model
loads and serves anywhere (`mlflow models serve`, a fresh venv). Its input is one row per (user, candidate
movie): the rating head's RATING_FEATURES plus the family's candidate features (`mlops.model.candidates`);
its output `p_like` (the rating head) and `rank_score` (the family's order: higher first). The project
itself reads the parts from the logged files (`Recommender.from_logged`) and ranks with its own code.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops import features as fx
from mlops.model.ranking import RankerCore
from mlops.model.rating_input import RATING_FEATURES, rating_input
from mlops.model.recommender import Recommender

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # logged as the model's code (models-from-code)
# What the logged model needs to load and predict: the imports of PYFUNC_CODE, and scipy, LightGBM's own
# dependency. Pinned at the installed versions, i.e. pyproject's pins: no second list of versions.
PYFUNC_REQUIREMENTS = ("mlflow", "lightgbm", "numpy", "pandas", "scipy")
OUTPUTS = ("p_like", "rank_score")


def input_columns(model: Recommender) -> list[str]:
    """The pyfunc's input: RATING_FEATURES, then the family's features that are not among them."""
    return [*RATING_FEATURES, *(n for n in model.family.features if n not in RATING_FEATURES)]


def candidate_rows(core: RankerCore, users: list[dict[str, Any]], k: int = 0) -> pd.DataFrame:
    """The pyfunc's input for these users' candidates, computed as serving computes them."""
    model, catalog = core.model, core.catalog
    batch = core.batch(users)
    cands = model.family.candidates(core.retrievers, catalog.matrix, batch, k)
    base = fx.assemble(batch.matrix, catalog.matrix, u_rows=cands.users, i_rows=cands.positions)
    rating = rating_input(base, core.retrievers.by_name["ease"], batch, cands.users, cands.positions)
    frame = pd.DataFrame(rating.astype(np.float64), columns=list(RATING_FEATURES))
    for name in input_columns(model)[len(RATING_FEATURES) :]:
        frame[name] = cands.column(name).astype(np.float64)
    return frame


def log_pyfunc(model: Recommender, example: pd.DataFrame, workdir: Path, registered_model_name: str) -> Any:
    """Log (and register) `model` as a self-contained pyfunc; returns MLflow's ModelInfo.

    `example`: a few rows of `candidate_rows` (the input example). The signature names every input column
    as a required double, so MLflow rejects a missing or mistyped column before the model sees it.
    """
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    if model.rating.feature_name() != list(RATING_FEATURES):
        raise ValueError(f"the rating head's features {model.rating.feature_name()} differ from RATING_FEATURES")
    columns = input_columns(model)
    signature = ModelSignature(
        inputs=Schema([ColSpec(DataType.double, name) for name in columns]),
        outputs=Schema([ColSpec(DataType.double, name) for name in OUTPUTS]),
    )
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_CODE),
        artifacts=model.save(workdir / "model-parts"),
        signature=signature,
        input_example=example[columns].astype(np.float64),
        pip_requirements=[f"{name}=={version(name)}" for name in PYFUNC_REQUIREMENTS],
        registered_model_name=registered_model_name,
    )
