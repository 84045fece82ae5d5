"""The Airflow containers' command, run natively: local mode's configuration with compose's overrides.

`airflow-init` and `airflow-apiserver` run `python -m mlops.services.container_entry airflow init|api-server`
with the compose file's AIRFLOW__* values in their environment. Here SQLite stands in for PostgreSQL
(the override mechanism is what is under test), and the admin login from the settings must work.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from mlops.services.specs import settings_environ
from mlops.settings import PROJECT_ROOT, Settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PASSWORD = "Zq4-t9YwR2_pLx7sKm3vB8nH"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def container_env(tmp_path: Path, port: int) -> dict[str, str]:
    settings = Settings(local_dir=str(tmp_path / "local"), airflow_url=f"http://127.0.0.1:{port}",
                        airflow_admin_password=PASSWORD)  # fmt: skip
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **settings_environ(settings),
        # As docker-compose.yml sets them (a SQLite file instead of the PostgreSQL URL).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'compose-db.sqlite'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
    }


def test_init_then_api_server_use_the_compose_overrides(tmp_path: Path) -> None:
    port = free_port()
    env = container_env(tmp_path, port)
    entry = [sys.executable, "-m", "mlops.services.container_entry", "airflow"]
    init = subprocess.run([*entry, "init"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stdout[-2000:] + init.stderr[-2000:]
    assert (tmp_path / "compose-db.sqlite").exists(), "compose's SQL_ALCHEMY_CONN must win over local mode's"
    assert not (tmp_path / "local" / "data" / "airflow" / "airflow.db").exists()

    log = (tmp_path / "api.log").open("w")
    server = subprocess.Popen([*entry, "api-server"], env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "api.log").read_text()[-2000:]
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=3).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow on a busy machine
                pass
            assert time.monotonic() < deadline, "api-server not healthy in 240 s"
            time.sleep(1)
        good = requests.post(f"{base}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=10)
        assert good.status_code in (200, 201) and good.json().get("access_token")
        bad = requests.post(f"{base}/auth/token", json={"username": "admin", "password": "nope"}, timeout=10)
        assert bad.status_code == 401
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
