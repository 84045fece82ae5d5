"""Local-mode Airflow 3: the environment, the component processes, and the metadata-DB migration.

Everything Airflow needs is passed as `AIRFLOW__SECTION__KEY` variables rather than an `airflow.cfg`, so
the configuration lives in one place (here) and follows the settings. State lives under
`<LOCAL_DIR>/data/airflow` (AIRFLOW_HOME): the SQLite metadata DB, task logs, and the generated secrets.
SQLite is enough: Airflow 3 runs the LocalExecutor on it (that is what `airflow standalone` does).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from mlops.services import health
from mlops.services.specs import BIN_DIR, Launch, s3_client_environ, settings_environ, venv_tool
from mlops.settings import PROJECT_ROOT, Settings

DAGS_FOLDER = PROJECT_ROOT / "airflow" / "dags"

# Two cores: load_to_redis and train may run side by side, nothing more.
PARALLELISM = 2

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def airflow_home(settings: Settings) -> Path:
    """AIRFLOW_HOME: the metadata DB, task logs and generated secrets, under LOCAL_DIR so `down --purge` clears it."""
    return settings.path("local_dir") / "data" / "airflow"


def _log_server_ports(api_port: int) -> tuple[int, int]:
    """Worker/triggerer log-server ports derived from the API port: 8080 gives Airflow's defaults 8793/8794,
    and a second stack (a test's) on another API port does not collide with the first."""
    worker = api_port + 713 if api_port + 714 <= 65535 else api_port - 714
    return worker, worker + 1


def _secrets(home: Path) -> dict[str, str]:
    """Signing and encryption keys, generated on first use and kept (never committed: they live under LOCAL_DIR).

    They must be stable across restarts and identical in every component: the scheduler signs task tokens
    that the API server verifies, and the Fernet key decrypts stored connections.
    """
    path = home / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    values = {
        "jwt_secret": secrets.token_urlsafe(48),
        "api_secret_key": secrets.token_urlsafe(48),
        "fernet_key": Fernet.generate_key().decode(),
    }
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def _write_passwords_file(home: Path, settings: Settings) -> Path:
    """SimpleAuthManager reads `{user: password}` JSON; rewriting it each time makes `.env` changes take effect."""
    path = home / "simple_auth_manager_passwords.json"
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({settings.airflow_admin_user: settings.airflow_admin_password}, fh)
    return path


def airflow_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The complete environment for an Airflow process (and the tasks it runs) in local mode.

    `base` (default: this process's environment) supplies PATH, JAVA_HOME and the like; the Airflow
    configuration and the platform settings are laid on top of it. Creates AIRFLOW_HOME, the secrets and
    the passwords file as a side effect.
    """
    home = airflow_home(settings)
    keys = _secrets(home)
    passwords = _write_passwords_file(home, settings)
    url = urlparse(settings.airflow_url)
    api_port = settings.port_of("airflow_url")
    worker_log_port, trigger_log_port = _log_server_ports(api_port)
    base_url = settings.airflow_url.rstrip("/")

    env = dict(os.environ if base is None else base)
    # Task processes (spark-submit, training) load their settings from these, so they see exactly ours.
    env.update(settings_environ(settings))
    env.update(s3_client_environ(settings))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(PARALLELISM),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__HOST": url.hostname or "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
            # Pick up DAG file changes within seconds, parse with one process (two cores in all).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # The DAG and its tasks import `mlops` from the checkout and run the venv's spark-submit.
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p),
            "PATH": os.pathsep.join(p for p in (str(BIN_DIR), env.get("PATH", "")) if p),
        }
    )
    return env


def airflow_commands() -> list[tuple[str, list[str]]]:
    """The long-running components, as (process name, argv); run each with `airflow_env(settings)`.

    No triggerer: the DAG has no deferrable tasks. Names start with `airflow` so their pid files match
    the `airflow*.pid` contract.
    """
    airflow = venv_tool("airflow")
    return [
        ("airflow-api-server", [airflow, "api-server"]),
        ("airflow-scheduler", [airflow, "scheduler"]),
        ("airflow-dag-processor", [airflow, "dag-processor"]),
    ]


class AirflowSetupError(RuntimeError):
    """`airflow db migrate` failed; the message carries the tail of its output."""


def prepare(settings: Settings, timeout: float = 600) -> None:
    """Create or upgrade the metadata DB; safe to run on every start (a migrated DB is left as it is)."""
    env = airflow_env(settings)
    proc = subprocess.run(
        [venv_tool("airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise AirflowSetupError(f"airflow db migrate failed (exit {proc.returncode}):\n{tail}")


AIRFLOW_COMPONENT_HEALTH = {
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag_processor",
    "airflow-triggerer": "triggerer",
}


def launches(settings: Settings) -> list[Launch]:
    """Airflow's components as separate processes, each with `airflow_env`.

    The API server is started first and checked by its health endpoint; the others are checked by the
    heartbeat the API server reports for them.
    """
    env = airflow_env(settings)
    host = health.urlparse(settings.airflow_url).hostname or "127.0.0.1"
    launches = []
    for name, argv in airflow_commands():
        component = AIRFLOW_COMPONENT_HEALTH.get(name)
        api = component is None
        launches.append(
            Launch(
                name=name,
                service="airflow",
                argv=tuple(argv),
                url=settings.airflow_url if api else "",
                check=(lambda: health.airflow_health(settings))
                if api
                else (lambda c=component: health.airflow_component(settings, c)),
                port=settings.port_of("airflow_url") if api else None,
                host=host,
                env=env,
                cwd=airflow_home(settings),
                timeout_s=180,
            )
        )
    return launches
