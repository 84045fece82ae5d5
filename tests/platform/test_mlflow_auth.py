"""MLflow with its basic-auth app, as `up` starts it (real server, fixture): nobody but the platform's user moves
an alias; anonymous and wrong credentials are refused; a rotated password is taken up; what exists before the
platform's user does is handed to it; a wrong admin password is named."""

from __future__ import annotations

import time

import pytest
import requests

from mlops import registry
from mlops.services import mlflow_auth

pytestmark = pytest.mark.integration


def _api(settings, path: str) -> str:
    return f"{settings.mlflow_tracking_uri.rstrip('/')}/api/2.0/mlflow/{path}"


def _set_alias(settings, name: str, version: str, auth) -> int:
    body = {"name": name, "alias": "champion", "version": version}
    return requests.post(_api(settings, "registered-models/alias"), json=body, auth=auth, timeout=10).status_code


def _admin(settings):
    return mlflow_auth.ADMIN_USER, settings.mlflow_admin_password


@pytest.fixture(scope="module")
def model(base_settings, mlflow_server) -> tuple[str, str]:
    """A registered model with one version, made by the platform's user through the platform's client."""
    settings = base_settings
    client = registry.client(settings)
    name = f"auth-test-{int(time.time() * 1000)}"
    client.create_registered_model(name)
    version = client.create_model_version(name, "s3://nowhere/model", run_id=None)
    return name, str(version.version)


def test_only_the_platform_user_moves_an_alias(base_settings, model) -> None:
    settings = base_settings
    name, version = model
    other = ("analyst", "analyst-password-1")
    created = requests.post(_api(settings, "users/create"), auth=_admin(settings), timeout=10,
                            json={"username": other[0], "password": other[1]})  # fmt: skip
    assert created.status_code in (200, 400), created.text  # 400: made by an earlier test session on this store

    assert _set_alias(settings, name, version, auth=None) == 401
    assert _set_alias(settings, name, version, auth=(settings.mlflow_tracking_username, "not-the-password")) == 401
    assert _set_alias(settings, name, version, auth=other) == 403
    read = requests.get(_api(settings, "registered-models/get"), params={"name": name}, auth=other, timeout=10)
    assert read.status_code == 200  # any signed-in user may read
    assert requests.get(_api(settings, "registered-models/get"), params={"name": name}, timeout=10).status_code == 401
    assert registry.champion_version(settings.replace(model_name=name)) is None

    assert _set_alias(settings, name, version, auth=settings.mlflow_auth) == 200
    assert registry.champion_version(settings.replace(model_name=name)) == version


def test_a_rotated_platform_password_is_set_by_up_and_the_old_one_refused(base_settings, mlflow_server) -> None:
    settings = base_settings
    rotated = settings.replace(mlflow_tracking_password="rotated-platform-password")
    search = _api(settings, "experiments/search")
    try:
        done = mlflow_auth.ensure_platform_user(rotated)
        assert any("set the password" in step for step in done)
        assert requests.get(search, params={"max_results": 1}, auth=rotated.mlflow_auth, timeout=10).ok
        old = requests.get(search, params={"max_results": 1}, auth=settings.mlflow_auth, timeout=10)
        assert old.status_code == 401
        assert not [step for step in mlflow_auth.ensure_platform_user(rotated) if "password" in step]  # idempotent
    finally:
        mlflow_auth.ensure_platform_user(settings)
    assert requests.get(search, params={"max_results": 1}, auth=settings.mlflow_auth, timeout=10).ok


def test_a_model_made_before_the_platform_user_is_handed_to_it(base_settings, mlflow_server) -> None:
    """A store from before authentication (or a model an admin made) is readable only; `up` grants MANAGE."""
    name = f"pre-auth-{int(time.time() * 1000)}"
    settings = base_settings.replace(model_name=name)
    made = requests.post(_api(settings, "registered-models/create"), json={"name": name}, auth=_admin(settings),
                         timeout=10)  # fmt: skip
    assert made.ok, made.text
    tag = {"name": name, "key": "owner-check", "value": "1"}
    assert requests.post(_api(settings, "registered-models/set-tag"), json=tag, auth=settings.mlflow_auth,
                         timeout=10).status_code == 403  # fmt: skip
    assert f"MANAGE on registered_model {name}" in mlflow_auth.ensure_platform_user(settings)
    assert requests.post(_api(settings, "registered-models/set-tag"), json=tag, auth=settings.mlflow_auth,
                         timeout=10).ok  # fmt: skip
    assert not [s for s in mlflow_auth.ensure_platform_user(settings) if name in s]  # held: nothing to do


def test_a_wrong_admin_password_is_named(base_settings, mlflow_server) -> None:
    wrong = base_settings.replace(mlflow_admin_password="not-the-admin-password",
                                  mlflow_tracking_password="another-platform-password")  # fmt: skip
    with pytest.raises(mlflow_auth.MlflowAuthError, match="MLFLOW_ADMIN_PASSWORD"):
        mlflow_auth.ensure_platform_user(wrong)
