"""What the `containers` tests share: the images of docker-compose.yml, PostgreSQL, timings, waiting."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from podman_build import Podman

from mlops.services.compose_spec import compose_spec


@dataclass
class Timings:
    """Seconds per build and per run, printed at the end of the session (README quotes them)."""

    builds: dict[str, float] = field(default_factory=dict)
    runs: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)  # container -> its peak memory (MiB, docker stats)
    together: float = 0.0  # all containers at the one sample where their sum was highest (MiB)


TIMINGS = Timings()


@dataclass(frozen=True)
class Images:
    """The project's images as docker-compose.yml names them, built from its Dockerfiles."""

    podman: Podman
    tags: dict[str, str]  # Dockerfile (relative to the project root) -> image tag
    logs: Path

    def of(self, dockerfile: str) -> str:
        return self.tags[dockerfile]


def our_images() -> dict[str, str]:
    """Dockerfile -> tag, from the compose file's build blocks (one source of truth for names)."""
    tags: dict[str, str] = {}
    for svc in compose_spec()["services"].values():
        if "build" in svc:
            tags[svc["build"]["dockerfile"]] = svc["image"]
    return tags


def base_image(dockerfile: Path) -> str:
    froms = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]
    assert len(froms) == 1, f"{dockerfile}: expected one FROM, found {froms}"
    return froms[0]


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        argv = [str(postgres_bin() / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database,
                "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]  # fmt: skip
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.strip()


def wait_http(url: str, timeout: float, alive=lambda: True) -> float:
    """Seconds until `url` answers 200 (fails when `alive()` turns false or on timeout)."""
    import requests

    started = time.monotonic()
    while True:
        assert alive(), f"the server behind {url} exited"
        try:
            if requests.get(url, timeout=3).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        assert time.monotonic() - started < timeout, f"{url} did not answer 200 within {timeout:.0f}s"
        time.sleep(1)
