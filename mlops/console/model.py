"""The Model page's data (and the champion on the Overview): MLflow's registry over its REST API.

REST rather than the MLflow client: the client takes seconds to import and retries for minutes when the
server is down, where a page must answer at once and say "MLflow is not reachable".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from mlops.orchestration.summary import MLFLOW_VIEW
from mlops.registry import CHALLENGER, CHAMPION, model_missing
from mlops.settings import Settings

TIMEOUT_S = 5.0

# The contract's metrics (CONTRACTS.md), in the order the page lists them; other logged metrics follow.
HEADLINE = ("ndcg_at_10", "test_auc", "precision_at_10", "recall_at_10")
CONTRACT_METRICS = (
    "test_auc", "test_logloss", "ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10",
    "ndcg_at_10_liked", "precision_at_10_liked", "recall_at_10_liked", "map_at_10_liked",
    "baseline_popularity_ndcg_at_10", "baseline_cooccurrence_ndcg_at_10", "baseline_ease_ndcg_at_10",
    "candidate_recall", "validation_ndcg_at_10", "validation_auc",
)  # fmt: skip
LOWER_IS_BETTER = ("logloss",)
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


class MlflowProblem(RuntimeError):
    """MLflow did not answer, or answered with an error: the message says which, for the page."""


@dataclass(frozen=True)
class ModelVersion:
    """One aliased version as the pages show it: its tags, its run's metrics and image artifacts."""

    alias: str
    version: str
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    description: str = ""
    plots: list[str] = field(default_factory=list)

    @property
    def feature_set(self) -> str:
        """The feature-set version it was trained on (its `feature_set` tag); '-' when untagged."""
        return self.tags.get("feature_set", "-")


def _get(settings: Settings, endpoint: str, **params: Any) -> requests.Response:
    """GET an MLflow endpoint; `params` may include `path` (an artifact's), hence the name `endpoint`."""
    url = settings.mlflow_tracking_uri.rstrip("/") + endpoint
    try:
        return requests.get(url, params=params, auth=settings.mlflow_auth, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise MlflowProblem(f"MLflow at {settings.mlflow_tracking_uri} is not reachable ({reason})") from exc


def _json(settings: Settings, endpoint: str, **params: Any) -> dict[str, Any]:
    response = _get(settings, endpoint, **params)
    if not response.ok:
        raise MlflowProblem(f"MLflow answered HTTP {response.status_code} to {endpoint}: {response.text[:200]}")
    return response.json()


def version_by_alias(settings: Settings, alias: str) -> ModelVersion | None:
    """The version behind `alias` with its run's metrics and plots; None when the alias is not set."""
    response = _get(settings, "/api/2.0/mlflow/registered-models/alias", name=settings.model_name, alias=alias)
    # No such model: RESOURCE_DOES_NOT_EXIST; a model without this alias: 400 "alias ... not found".
    if response.status_code in (400, 404) and ("RESOURCE_DOES_NOT_EXIST" in response.text
                                                or "not found" in response.text):  # fmt: skip
        return None
    if response.status_code == 403 and model_missing(settings, TIMEOUT_S):
        return None  # no such model: the basic-auth app denies the alias lookup of what it cannot find
    if not response.ok:
        raise MlflowProblem(f"MLflow answered HTTP {response.status_code} for alias {alias}: {response.text[:200]}")
    mv = response.json()["model_version"]
    run = _json(settings, "/api/2.0/mlflow/runs/get", run_id=mv["run_id"])["run"]
    metrics = {m["key"]: float(m["value"]) for m in run["data"].get("metrics", [])}
    tags = {t["key"]: t["value"] for t in mv.get("tags", [])}
    return ModelVersion(
        alias=alias,
        version=str(mv["version"]),
        run_id=mv["run_id"],
        tags=tags,
        metrics=metrics,
        description=mv.get("description") or "",
        plots=plot_paths(settings, mv["run_id"]),
    )


def plot_paths(settings: Settings, run_id: str) -> list[str]:
    """Image artifacts of a run (top level and `plots/`), sorted."""
    found = []
    for folder in ("", "plots"):
        params = {"run_id": run_id, **({"path": folder} if folder else {})}
        files = _json(settings, "/api/2.0/mlflow/artifacts/list", **params).get("files", [])
        found += [f["path"] for f in files if not f.get("is_dir") and _suffix(f["path"]) in IMAGE_TYPES]
    return sorted(found)


def _suffix(path: str) -> str:
    dot = path.rfind(".")
    return path[dot:].lower() if dot >= 0 else ""


def artifact(settings: Settings, run_id: str, path: str) -> tuple[bytes, str]:
    """An image artifact's bytes and content type, fetched through MLflow's artifact proxy."""
    if ".." in path.split("/") or _suffix(path) not in IMAGE_TYPES:
        raise MlflowProblem(f"{path!r} is not an image artifact of the run")
    response = _get(settings, "/get-artifact", path=path, run_uuid=run_id)
    if not response.ok:
        raise MlflowProblem(f"MLflow answered HTTP {response.status_code} for artifact {path}")
    return response.content, IMAGE_TYPES[_suffix(path)]


def metric_names(*versions: ModelVersion | None) -> list[str]:
    """The contract's metrics first (those logged), then every other metric logged, alphabetically."""
    logged = {k for v in versions if v is not None for k in v.metrics}
    return [m for m in CONTRACT_METRICS if m in logged] + sorted(logged - set(CONTRACT_METRICS))


def better(metric: str, a: float | None, b: float | None) -> int:
    """1 when `a` is better, -1 when `b` is, 0 for a tie or a missing side (loss-like metrics: lower wins)."""
    if a is None or b is None or a == b:
        return 0
    lower = any(s in metric for s in LOWER_IS_BETTER)
    return 1 if (a < b) == lower else -1


def mlflow_version_link(public_mlflow: str, model_name: str, version: str) -> str:
    """The version's page in MLflow's UI, at `public_mlflow` (the address the browser sees)."""
    return f"{public_mlflow.rstrip('/')}/#/models/{quote(model_name, safe='')}/versions/{version}{MLFLOW_VIEW}"


def champion_and_challenger(settings: Settings) -> tuple[ModelVersion | None, ModelVersion | None]:
    """Both aliased versions for the Model page's comparison; either is None when its alias is unset."""
    return version_by_alias(settings, CHAMPION), version_by_alias(settings, CHALLENGER)
