"""A training run's datasets as MLflow inputs, described rather than handed over whole.

Why: `mlflow.data.from_pandas` infers the schema and the digest value by value in Python (a Python object
per value for the digest); on the 3M training and 5M evaluation rows of 25M ratings the train step was
killed for memory inside it, at 19.4 GB.
Here the schema comes from the first rows (a column's type is the same below them), the digest from
pandas' vectorised hashes of every row, and the row count is the frame's length.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import infer_signature

SCHEMA_ROWS = 1_000  # rows a dataset's schema is inferred from


def digest(frame: pd.DataFrame) -> str:
    """8 hex characters that change with any value or the shape of `frame`."""
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(rows.tobytes() + str(frame.shape).encode()).hexdigest()[:8]


class DescribedDataset(MetaDataset):
    """MLflow's metadata-only dataset plus the profile (rows, elements) the UI shows beside it."""

    def __init__(self, frame: pd.DataFrame, source_uri: str, name: str) -> None:
        with warnings.catch_warnings():  # the integer-column hint is about model signatures, not datasets
            warnings.simplefilter("ignore", UserWarning)
            schema = infer_signature(frame.head(SCHEMA_ROWS)).inputs
        self._profile = {"num_rows": len(frame), "num_elements": int(frame.size)}
        super().__init__(resolve_dataset_source(source_uri), name=name, digest=digest(frame), schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        """Row and element counts, as MLflow's own pandas dataset reports them."""
        return self._profile

    def to_dict(self) -> dict[str, str]:
        """MetaDataset's fields and the profile."""
        return {**super().to_dict(), "profile": json.dumps(self._profile)}
