"""A run's datasets logged by description: schema from the first rows, digest and row count from all of them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mlops.training.dataset_input import SCHEMA_ROWS, DescribedDataset


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"user_id": np.arange(rows), "u_mean": rng.random(rows).astype("float32"),
                         "label": rng.integers(0, 2, rows)})  # fmt: skip


def test_the_entity_carries_source_schema_and_row_count():
    frame = _frame(SCHEMA_ROWS * 5)
    entity = DescribedDataset(
        frame, "s3://bucket/runs/r1/features/train_examples", "synthetic train"
    )._to_mlflow_entity()
    assert entity.name == "synthetic train" and entity.source_type == "s3"
    assert json.loads(entity.source)["uri"] == "s3://bucket/runs/r1/features/train_examples"
    assert json.loads(entity.profile) == {"num_rows": SCHEMA_ROWS * 5, "num_elements": SCHEMA_ROWS * 15}
    columns = {c["name"]: c["type"] for c in json.loads(entity.schema)["mlflow_colspec"]}
    assert columns == {"user_id": "long", "u_mean": "float", "label": "long"}


def test_the_digest_sees_a_change_past_the_schema_rows():
    frame = _frame(SCHEMA_ROWS * 5)
    before = DescribedDataset(frame, "s3://b/x", "x").digest
    assert DescribedDataset(frame.copy(), "s3://b/x", "x").digest == before  # same data, same digest
    changed = frame.copy()
    changed.loc[SCHEMA_ROWS * 4, "u_mean"] = 2.0  # a row the schema never looked at
    assert DescribedDataset(changed, "s3://b/x", "x").digest != before
    assert DescribedDataset(frame.head(-1), "s3://b/x", "x").digest != before
