"""MLflow's basic-auth app, as both modes run it: its configuration, and the platform's user made by the admin.

Why: without authentication anyone who reaches MLflow can move the `champion` alias, and the consumers
hot-swap to it within seconds. MLflow creates its `admin` (MLFLOW_ADMIN_PASSWORD) at the server's first
start; `ensure_platform_user` then creates the platform's user (MLFLOW_TRACKING_USERNAME / _PASSWORD) or
sets its password after a rotation, and gives it MANAGE on the experiment and the registered model.
Every client signs in as that user; any other user may only read (`default_permission = READ`), and an
anonymous request is refused (401), so only the platform moves aliases.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from mlops.settings import Settings

ADMIN_USER = "admin"
CONFIG_NAME = "basic_auth.ini"
TIMEOUT_S = 10.0
# A verified password is remembered this long by the (single-process) server: without it every request pays
# a password hash, 0.1-0.6 s on a 2-core machine. MLflow drops the entry itself when the password changes.
AUTH_CACHE_SECONDS = 300


class MlflowAuthError(RuntimeError):
    """The admin could not sign in or manage the platform's user; the message names the setting to check."""


def config_text(database_uri: str) -> str:
    """The basic-auth app's configuration (no secret in it: the admin password comes from the environment)."""
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n"
    )


def server_environ(settings: Settings, config_path: Path) -> dict[str, str]:
    """What `mlflow server --app-name basic-auth` reads: the configuration, the admin's first password, and
    the key of its login forms' CSRF tokens (derived from the admin password: stable across restarts and
    workers, and secret as long as that password is)."""
    key = hmac.new(settings.mlflow_admin_password.encode(), b"mlflow-flask-secret-key", hashlib.sha256).hexdigest()
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config_path),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER,
        "MLFLOW_AUTH_ADMIN_PASSWORD": settings.mlflow_admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": key,
    }


def ensure_platform_user(settings: Settings) -> list[str]:
    """Make MLFLOW_TRACKING_USERNAME sign in with MLFLOW_TRACKING_PASSWORD and own what it writes; returns what
    was done (empty when nothing was needed). Idempotent: `up` calls it at every start."""
    done: list[str] = []
    user = settings.mlflow_tracking_username
    if not _signs_in(settings, settings.mlflow_auth):
        admin = _Admin(settings)
        if admin.get("users/get", username=user).status_code == 404:
            admin.call("POST", "users/create", json={"username": user, "password": settings.mlflow_tracking_password})
            done.append(f"created user {user}")
        else:
            admin.call("PATCH", "users/update-password",
                       json={"username": user, "password": settings.mlflow_tracking_password})  # fmt: skip
            done.append(f"set the password of {user} (MLFLOW_TRACKING_PASSWORD)")
    done += _grant_manage(settings)
    return done


def _signs_in(settings: Settings, auth: tuple[str, str]) -> bool:
    response = requests.get(_api(settings, "experiments/search"), params={"max_results": 1}, auth=auth,
                            timeout=TIMEOUT_S)  # fmt: skip
    return response.status_code == 200


def _grant_manage(settings: Settings) -> list[str]:
    """MANAGE for the platform's user on the experiment and the model when they exist already (made before
    authentication was on, or by another user): what the platform creates itself it owns anyway."""
    targets: list[tuple[str, str, Callable[[], str | None]]] = [
        ("experiment", settings.mlflow_experiment, lambda: _experiment_id(settings)),
        ("registered_model", settings.model_name, lambda: _model_exists(settings)),
    ]
    granted = []
    admin: _Admin | None = None
    for resource_type, name, resource_id_of in targets:
        resource_id = resource_id_of()
        if resource_id is None:
            continue
        admin = admin or _Admin(settings)
        query = {"username": settings.mlflow_tracking_username, "resource_type": resource_type,
                 "resource_id": resource_id}  # fmt: skip
        held = admin.call("GET", "users/permissions/get", version=3, params=query).json().get("permission")
        if held == "MANAGE":
            continue
        admin.call("POST", "users/permissions/revoke", version=3, json=query, ok=(200, 400, 404))
        admin.call("POST", "users/permissions/grant", version=3, json={**query, "permission": "MANAGE"})
        granted.append(f"MANAGE on {resource_type} {name}")
    return granted


def _experiment_id(settings: Settings) -> str | None:
    response = requests.get(_api(settings, "experiments/get-by-name"), auth=settings.mlflow_auth,
                            params={"experiment_name": settings.mlflow_experiment}, timeout=TIMEOUT_S)  # fmt: skip
    return str(response.json()["experiment"]["experiment_id"]) if response.status_code == 200 else None


def _model_exists(settings: Settings) -> str | None:
    response = requests.get(_api(settings, "registered-models/get"), auth=settings.mlflow_auth,
                            params={"name": settings.model_name}, timeout=TIMEOUT_S)  # fmt: skip
    return settings.model_name if response.status_code == 200 else None


def _api(settings: Settings, path: str, version: int = 2) -> str:
    return f"{settings.mlflow_tracking_uri.rstrip('/')}/api/{version}.0/mlflow/{path}"


class _Admin:
    """REST calls as MLflow's admin; a refused sign-in says which setting to check."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.auth = (ADMIN_USER, settings.mlflow_admin_password)

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.call("GET", path, params=params, ok=(200, 404))

    def call(self, method: str, path: str, version: int = 2, ok: tuple[int, ...] = (200,), **kwargs: Any
             ) -> requests.Response:  # fmt: skip
        response = requests.request(method, _api(self.settings, path, version), auth=self.auth, timeout=TIMEOUT_S,
                                    **kwargs)  # fmt: skip
        if response.status_code == 401:
            raise MlflowAuthError(
                f"MLflow at {self.settings.mlflow_tracking_uri} refused its admin: MLFLOW_ADMIN_PASSWORD is not the "
                "admin password the server was first started with (MLflow sets it once; to change it, change it "
                "with the old one through MLflow's users/update-password API, then in .env)"
            )
        if response.status_code not in ok:
            raise MlflowAuthError(f"MLflow {method} {path} as admin: HTTP {response.status_code} {response.text[:200]}")
        return response
