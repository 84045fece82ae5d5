"""MLflow access with bounded retries, model loading by alias, and the champion/challenger I/O.

The rule itself is `mlops.promotion.decide` (pure); `promote` reads what it needs (the candidate's metrics
and tags, the champion, the champion re-scored on this run's test data when the split is the same), applies
it, and writes the alias, tags and promotion.json on the new version's training run.
A champion whose artifacts are confirmed missing is replaced (it cannot serve); one that merely could
not be read (timeout, 5xx) is kept and the promotion fails, to be retried. Serving loads an alias,
never "latest".
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from mlops.errors import ModelFormatError
from mlops.promotion import Champion, decide, needs_champion_score
from mlops.settings import Settings
from mlops.variants import CHALLENGER, CHAMPION  # noqa: F401 (re-exported) the aliases are the online variants' names

log = logging.getLogger(__name__)

PROMOTION_ARTIFACT = "promotion.json"
ATTEMPTS = 4
T = TypeVar("T")

# MLflow's own HTTP client retries for minutes by default; our bounded loop below decides instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


class RegistryUnavailable(RuntimeError):
    """The MLflow tracking server did not answer after the bounded retries."""


class ChampionUnreadable(RuntimeError):
    """The champion's artifacts could not be read, and are not known to be gone: it is not replaced."""


def wait_for_mlflow(settings: Settings, attempts: int = ATTEMPTS, first_delay: float = 1.0) -> None:
    """Probe the tracking server's /health with exponential backoff; `RegistryUnavailable` when it stays down.
    Once it answers, the `mlflow` module's fluent API is pointed at it: a step run by hand, without
    MLFLOW_TRACKING_URI exported, would otherwise log to MLflow 3's default `./mlflow.db`."""
    url = settings.mlflow_tracking_uri.rstrip("/") + "/health"
    delay = first_delay
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            if requests.get(url, timeout=5).status_code == 200:
                sign_in(settings)
                return
            last = "answered with an error status"
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            log.warning(
                "MLflow at %s unreachable (attempt %d/%d): %s; retrying in %.0fs", url, attempt, attempts, last, delay
            )
            time.sleep(delay)
            delay *= 2
    raise RegistryUnavailable(
        f"MLflow tracking server {settings.mlflow_tracking_uri} unreachable after {attempts} attempts ({last}); "
        "start it (./run.sh up) or fix MLFLOW_TRACKING_URI"
    )


def with_retries(settings: Settings, what: str, fn: Callable[[], T]) -> T:
    """Run an MLflow call; on a connection failure wait for the server (bounded) and try once more."""
    try:
        return fn()
    except Exception as exc:
        if not _is_connection_error(exc):
            raise
        log.warning("%s: MLflow connection failed (%s); waiting for the server", what, exc)
        wait_for_mlflow(settings)
        return fn()


def _is_connection_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return isinstance(exc, requests.ConnectionError | ConnectionError) or any(
        s in text for s in ("Connection refused", "Max retries exceeded", "ConnectionError", "Failed to establish")
    )


MISSING_CODES = ("NoSuchKey", "NoSuchBucket", "NotFound", "404", "RESOURCE_DOES_NOT_EXIST")


def artifact_missing(exc: BaseException) -> bool:
    """True only when the failure says the artifact does not exist (S3 404/NoSuchKey, a file not found,
    MLflow's "does not exist"), never for a timeout, a refused connection or a 5xx, which say nothing
    about the artifact. Walks the exception's causes: MLflow wraps the artifact store's errors."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, FileNotFoundError):
            return True
        response = getattr(seen, "response", None)  # botocore's ClientError
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in MISSING_CODES or status == 404:
                return True
        if getattr(seen, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":  # MlflowException
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# MLflow's proxied artifacts go through the tracking server unless it advertises presigned transfers (it does
# for an S3 store): the presigned URLs then carry the object store's address as the server sees it, which in
# Docker mode is `minio:9000`, a name only the compose network resolves. The host's clients (verify, bench,
# the CLI) then fail to download a model. Every client goes through the server: the one address all reach.
PROXIED_TRANSFERS_ONLY = {
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
}


def sign_in(settings: Settings) -> None:
    """Point the `mlflow` module at the tracking server, signed in as the platform's user. MLflow's client
    takes basic-auth credentials only from these environment variables, so they are set for this process
    (with artifact transfers kept on the server, PROXIED_TRANSFERS_ONLY)."""
    import mlflow

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow_auth
    for name, value in PROXIED_TRANSFERS_ONLY.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)


def client(settings: Settings) -> Any:
    """An MLflow client of the configured tracking server; also points the `mlflow` module's fluent API at it."""
    from mlflow import MlflowClient

    sign_in(settings)
    return MlflowClient(settings.mlflow_tracking_uri)


def champion_version(settings: Settings, alias: str = CHAMPION, timeout_s: float = 5.0) -> str | None:
    """The version number behind `alias` (default `champion`), or None when the model or the alias does not exist.

    The one lookup of "which version is champion". Asked over MLflow's REST API: importing the MLflow client
    takes seconds and it retries for minutes when the server is down, which `status` and a polling consumer
    cannot afford; a connection failure raises `requests.ConnectionError`.
    """
    response = requests.get(
        settings.mlflow_tracking_uri.rstrip("/") + "/api/2.0/mlflow/registered-models/alias",
        params={"name": settings.model_name, "alias": alias},
        auth=settings.mlflow_auth,
        timeout=timeout_s,
    )
    if response.status_code == 404 or (response.status_code == 400 and _names_a_missing_alias(response)):
        return None
    if response.status_code == 403 and model_missing(settings, timeout_s):
        return None
    response.raise_for_status()
    return str(response.json()["model_version"]["version"])


def model_missing(settings: Settings, timeout_s: float = 5.0) -> bool:
    """True when MODEL_NAME is not registered. MLflow's basic-auth app answers an alias lookup on a model that
    does not exist with 403 (it denies what it cannot find), but the model lookup itself with 404."""
    response = requests.get(
        settings.mlflow_tracking_uri.rstrip("/") + "/api/2.0/mlflow/registered-models/get",
        params={"name": settings.model_name},
        auth=settings.mlflow_auth,
        timeout=timeout_s,
    )
    return response.status_code == 404


def _names_a_missing_alias(response: requests.Response) -> bool:
    """MLflow answers 400 both for a model that does not exist and for an alias the model does not have."""
    try:
        error = response.json()
    except ValueError:
        return False
    code, message = str(error.get("error_code", "")), str(error.get("message", ""))
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in message)


def version_by_alias(settings: Settings, alias: str) -> Any | None:
    """The model version (with its tags and run) behind `alias`, or None when the model or the alias does not exist."""
    version = with_retries(settings, "alias lookup", lambda: champion_version(settings, alias))
    if version is None:
        return None
    c = client(settings)
    return with_retries(settings, "version lookup", lambda: c.get_model_version(settings.model_name, version))


def load_model(settings: Settings, version: Any) -> Any:
    """The `Recommender` of a registered version, read from its logged files (`ModelFormatError` when this
    code cannot serve it: no model family, or an unknown one)."""
    from mlops.model.recommender import Recommender  # LightGBM and numpy: loaded when a model is

    client(settings)
    uri = f"models:/{settings.model_name}/{version.version}"
    return with_retries(settings, "model load", lambda: Recommender.from_logged(uri))


def load_model_version(settings: Settings, alias: str) -> tuple[Any, Any]:
    """(Recommender, ModelVersion) behind `alias`; `LookupError` when the alias is not set."""
    version = version_by_alias(settings, alias)
    if version is None:
        raise LookupError(f"registered model {settings.model_name!r} has no alias {alias!r} (train and promote first)")
    return load_model(settings, version), version


def version_of_run(settings: Settings, pipeline_run_id: str) -> Any:
    """The newest model version registered by pipeline run `pipeline_run_id` (tag `pipeline_run_id`)."""
    c = client(settings)
    versions = with_retries(
        settings, "version search", lambda: c.search_model_versions(f"name='{settings.model_name}'")
    )
    mine = [v for v in versions if (v.tags or {}).get("pipeline_run_id") == pipeline_run_id]
    if not mine:
        raise LookupError(
            f"no version of {settings.model_name!r} was registered by run {pipeline_run_id!r} (train first)"
        )
    return max(mine, key=lambda v: int(v.version))


def promote(settings: Settings, pipeline_run_id: str, evaluate: Callable[[Any], float]) -> dict[str, Any]:
    """Apply `promotion.decide` to the version trained by `pipeline_run_id`.

    `evaluate(model) -> ndcg_at_10` measures a model on this run's test data; it is called for the current
    champion only when the rule compares with it (same split, candidate above its baselines). A champion
    whose artifacts are confirmed missing is replaced (it could not serve); any other failure to load it
    raises ChampionUnreadable and nothing changes. The reason is tagged on both versions.
    """
    c = client(settings)
    candidate = version_of_run(settings, pipeline_run_id)
    run = with_retries(settings, "run lookup", lambda: c.get_run(candidate.run_id))
    metrics, tags = dict(run.data.metrics), dict(candidate.tags or {})
    current = version_by_alias(settings, CHAMPION)
    champion = None if current is None else Champion(str(current.version), dict(current.tags or {}))
    unloadable = None
    if needs_champion_score(str(candidate.version), metrics, tags, champion):
        try:
            champion = Champion(champion.version, champion.tags, ndcg=float(evaluate(load_model(settings, current))))
        except Exception as exc:
            # Files gone, or a format this code cannot serve (ModelFormatError): no consumer can load it either.
            if not (artifact_missing(exc) or isinstance(exc, ModelFormatError)):
                raise ChampionUnreadable(
                    f"champion v{current.version} could not be loaded ({type(exc).__name__}: {str(exc)[:200]}) "
                    "and its artifacts are not confirmed missing: it stays champion; promote again when the "
                    "artifact store answers"
                ) from exc
            log.warning("promotion: champion v%s cannot be loaded (%s); the candidate replaces it", current.version,
                        exc)  # fmt: skip
            unloadable = f"{type(exc).__name__}: {str(exc)[:200]}"
            champion = Champion(champion.version, champion.tags, gone=unloadable)
    verdict = decide(str(candidate.version), metrics, tags, champion)
    decision, reason, basis = verdict.decision, verdict.reason, verdict.basis
    candidate_ndcg = float(metrics.get("ndcg_at_10", 0.0))
    champion_ndcg = None if champion is None else champion.ndcg
    with_retries(
        settings, "set alias", lambda: c.set_registered_model_alias(settings.model_name, decision, candidate.version)
    )
    record = {
        "decision": decision,
        "basis": basis,
        "version": str(candidate.version),
        "candidate_ndcg_at_10": candidate_ndcg,
        "champion_version": None if champion is None else str(champion.version),
        "champion_ndcg_at_10": champion_ndcg,
        "reason": reason,
    }
    if verdict.replaced:
        record["champion_load_error"] = unloadable
    # Tags say it in one short line (the UI cuts long ones); the whole record is an artifact of the run.
    c.log_dict(candidate.run_id, record, PROMOTION_ARTIFACT)
    c.set_tag(candidate.run_id, "promotion_decision", decision)
    c.set_tag(candidate.run_id, "promotion_basis", basis)
    c.set_tag(candidate.run_id, "promotion_reason", reason)
    c.set_model_version_tag(settings.model_name, candidate.version, "promotion_reason", reason)
    c.set_model_version_tag(settings.model_name, candidate.version, "promotion_basis", basis)
    if verdict.replaced:
        c.set_model_version_tag(settings.model_name, champion.version, "replaced_reason", reason)
    c.log_metric(candidate.run_id, "promotion_candidate_ndcg_at_10", candidate_ndcg)
    if champion_ndcg is not None:
        c.log_metric(candidate.run_id, "promotion_champion_ndcg_at_10", champion_ndcg)
    log.info("promotion: %s v%s -> %s (%s)", settings.model_name, candidate.version, decision, reason)
    return record
