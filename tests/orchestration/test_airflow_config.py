"""Local-mode Airflow configuration: everything from the settings, secrets generated once, DB migration idempotent."""

from __future__ import annotations

import json
import stat
import subprocess

from mlops.services.airflow_config import DAGS_FOLDER, airflow_commands, airflow_env, airflow_home, prepare
from mlops.settings import Settings


def test_env_follows_the_settings(base_settings: Settings) -> None:
    s = base_settings.replace(airflow_admin_user="alice", airflow_admin_password="s3cret-pw")
    env = airflow_env(s, base={"PATH": "/usr/bin"})
    home = airflow_home(s)
    port = s.port_of("airflow_url")
    assert home == s.path("local_dir") / "data" / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS_FOLDER)
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["AIRFLOW__API__PORT"] == str(port)
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{s.airflow_url.rstrip('/')}/execution/"
    default_port = airflow_env(s.replace(airflow_url="http://127.0.0.1:8080"), base={})
    assert default_port["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "8793"  # Airflow's default for its default
    if port != 8080:  # a second stack (a test's) gets its own log-server port
        assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] != "8793"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "alice:admin"
    passwords = home / "simple_auth_manager_passwords.json"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(passwords)
    assert json.loads(passwords.read_text()) == {"alice": "s3cret-pw"}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    # tasks see the same settings as this process, and find the venv's tools and the `mlops` package first
    assert env["DATASET"] == s.dataset and env["REDIS_PORT"] == str(s.redis_port)
    assert env["PATH"].endswith("/usr/bin") and env["PATH"] != "/usr/bin"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == s.s3_endpoint_url


def test_secrets_generated_once_and_private(base_settings: Settings) -> None:
    first = airflow_env(base_settings, base={})
    again = airflow_env(base_settings, base={})
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert first[key] and first[key] == again[key], key
    secrets_file = airflow_home(base_settings) / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600


def test_password_change_in_settings_takes_effect(base_settings: Settings) -> None:
    airflow_env(base_settings.replace(airflow_admin_password="old-password"), base={})
    airflow_env(base_settings.replace(airflow_admin_password="new-password"), base={})
    passwords = airflow_home(base_settings) / "simple_auth_manager_passwords.json"
    assert json.loads(passwords.read_text()) == {base_settings.airflow_admin_user: "new-password"}


def test_components_are_named_for_their_pid_files() -> None:
    names = [name for name, _ in airflow_commands()]
    assert names == ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor"]
    assert all(argv[0].endswith("airflow") for _, argv in airflow_commands())


def test_prepare_migrates_and_is_idempotent(base_settings: Settings) -> None:
    prepare(base_settings)
    prepare(base_settings)  # a second start must not fail or reset anything
    env = airflow_env(base_settings)
    check = subprocess.run(["airflow", "db", "check-migrations", "-t", "5"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
