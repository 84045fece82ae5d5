"""Where each batch artifact lives in the object store (bucket `S3_BUCKET`).

Every output is scoped by the run id that produced it, so two runs never mix, and each dataset written
there is committed by its `_manifest.json`, written last: a reader that finds no manifest treats the
output as absent. `pointers/` holds the small mutable records that say which run is current.
"""

from __future__ import annotations

import re

_RUN_ID = re.compile(r"^[A-Za-z0-9._:+-]{1,200}$")

MANIFEST = "_manifest.json"


def check_run_id(run_id: str) -> str:
    """Run ids become key prefixes; refuse anything that could escape its prefix."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"run id {run_id!r}: use letters, digits and . _ : + - only")
    return run_id


def run_prefix(run_id: str) -> str:
    """Every key of a run starts here; the run id is checked first, so it cannot escape its prefix."""
    return f"runs/{check_run_id(run_id)}"


def raw_prefix(run_id: str) -> str:
    """The dataset files exactly as ingested, plus a manifest (source, checksums, row counts)."""
    return f"{run_prefix(run_id)}/raw"


def normalized_key(run_id: str, table: str) -> str:
    """Normalized tables: `ratings` (user_id, movie_id, rating, timestamp), `movies` (movie_id, title, year, genres)."""
    return f"{run_prefix(run_id)}/normalized/{table}"


def split_key(run_id: str, part: str) -> str:
    """`train`, `validation` or `test` ratings of the split."""
    return f"{run_prefix(run_id)}/split/{part}"


SELECTION_PREFIX = "validation/"  # feature names under it: built from train only, evaluated on validation
SERVING_PREFIX = "serving/"  # the serving set under it: the online snapshot of every ingested rating


# What a loaded feature set's history means to a user (`load_to_redis` records it in the set's metadata).
SET_KINDS = {"train+validation+test": "serving set: every ingested rating", "train+validation": "evaluation set"}


def set_kind(history: str | None) -> str:
    """The words for a feature set's history, as `status` and the console show it."""
    return SET_KINDS.get(history or "", "set of unknown history")


def evaluation_set_version(run_id: str) -> str:
    """The feature-set version of a run's evaluation set (train + validation history) in Redis: what the
    parity checks serve, beside the serving set `feature_set_version(run_id)` that users are answered from."""
    return evaluation_set_of(feature_set_version(run_id))


def evaluation_set_of(version: str) -> str:
    """The evaluation set that belongs to serving set `version`: it lives and expires with it."""
    return f"{version}.eval"


def features_key(run_id: str, name: str) -> str:
    """Feature tables: offline `train_examples` / `eval_examples`, online `online_users` / `online_items`, ..."""
    return f"{run_prefix(run_id)}/features/{name}"


def quality_report_key(run_id: str, step: str) -> str:
    """The data quality report of one pipeline step of a run (JSON)."""
    return f"{run_prefix(run_id)}/quality/{step}.json"


def manifest_key(dataset_key: str) -> str:
    """The manifest that commits a dataset: written last, a dataset without one is treated as absent."""
    return f"{dataset_key}/{MANIFEST}"


LAST_GOOD_COUNTS = "pointers/last_good_counts.json"


def feature_set_version(run_id: str) -> str:
    """The feature-set version a pipeline run writes, loads into Redis and tags its model with: the run id.

    Named once here so the model's `feature_set` tag, the online store's `fs:{version}:` keys and the
    feature manifests cannot drift apart.
    """
    return check_run_id(run_id)
