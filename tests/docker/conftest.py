"""Static checks of Docker mode: no engine needed. The compose file is resolved by `docker-compose config`
(Debian's v1 package, which validates against the compose spec and interpolates like `docker compose`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops.services.compose import COMPOSE_FILE, MONITORING
from mlops.settings import PROJECT_ROOT

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


def compose_config(env_file: Path) -> dict:
    """The fully resolved compose file (every profile), as the engine would receive it.

    Run with a bare environment: compose lets environment variables win over `--env-file`, and the test
    session exports its own settings (free ports) into os.environ.
    """
    cli = shutil.which("docker-compose")
    if cli is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); ./run.sh test installs it")
    proc = subprocess.run(
        [cli, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "--profile", MONITORING, "config"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, check=False, env={"PATH": os.environ.get("PATH", "")},
    )  # fmt: skip
    assert proc.returncode == 0, f"docker-compose config failed with {env_file.name}:\n{proc.stderr.strip()}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="session")
def resolved() -> dict:
    return compose_config(ENV_EXAMPLE)


@pytest.fixture(scope="session")
def raw() -> dict:
    """The compose file as written (anchors expanded by YAML, `${VAR}` not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())
