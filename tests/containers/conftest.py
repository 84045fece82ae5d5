"""The `containers` tests: the project's images built with Podman and run against the native local stack.

They take long (a first run builds the stand-in base image and pip-installs the Python stack into the
images), so they run only when asked for: `./run.sh test -m containers`. Without Podman or debootstrap
they skip with one line saying how to install them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import TIMINGS, Images, Postgres, base_image, our_images, postgres_bin
from podman_build import CACHE, INSTALL_HINT, BuildError, Podman, missing_tools

from mlops.services.compose_spec import compose_spec
from mlops.settings import PROJECT_ROOT

MARKER = "containers"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the `containers` tests unless the -m expression names them (they take many minutes)."""
    if MARKER in (config.getoption("markexpr") or ""):
        return
    chosen = [item for item in items if item.get_closest_marker(MARKER) is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker(MARKER)])
        items[:] = chosen


def pytest_terminal_summary(terminalreporter) -> None:
    if not (TIMINGS.builds or TIMINGS.runs or TIMINGS.peaks):
        return
    terminalreporter.section("containers: build and run times (s)")
    for kind, table in (("build", TIMINGS.builds), ("run", TIMINGS.runs)):
        for name, seconds in table.items():
            terminalreporter.write_line(f"  {kind:<5} {name:<40} {seconds:8.1f}")
    if TIMINGS.peaks:
        terminalreporter.section("containers: peak memory (MiB)")
        for name, mib in sorted(TIMINGS.peaks.items()):
            terminalreporter.write_line(f"  {name:<40} {mib:8.0f}")
        terminalreporter.write_line(f"  {'sum of the peaks above':<40} {sum(TIMINGS.peaks.values()):8.0f}")
        terminalreporter.write_line(f"  {'all together, highest sample':<40} {TIMINGS.together:8.0f}")


@pytest.fixture(scope="session")
def images() -> Images:
    """Stand-in base image, then every image of docker-compose.yml (`--pull=never`; layers cached in CACHE)."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: {INSTALL_HINT}")
    podman = Podman()
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tags = our_images()
    for base in sorted({base_image(PROJECT_ROOT / dockerfile) for dockerfile in tags}):
        TIMINGS.builds[f"stand-in {base}"] = podman.standin(base, logs)
    # The dependency layers are identical in every Dockerfile: the first build pays for them, the others reuse.
    for dockerfile, tag in sorted(tags.items(), key=lambda item: item[0] != "inference/Dockerfile"):
        log = logs / f"build-{tag.replace('/', '_').replace(':', '_')}.log"
        try:
            TIMINGS.builds[tag] = podman.build(PROJECT_ROOT / dockerfile, tag, PROJECT_ROOT, log)
        except BuildError as exc:
            pytest.fail(str(exc), pytrace=False)
    return Images(podman, tags, logs)


@pytest.fixture(scope="session")
def timed() -> Iterator[dict[str, float]]:
    """Record run times: `timed["name"] = seconds`."""
    yield TIMINGS.runs


@pytest.fixture(scope="session")
def postgres(free_port) -> Iterator[Postgres]:
    """Debian's PostgreSQL on a free port, set up as the compose file's `postgres` service is: user and first
    database from its environment, the other metadata databases by docker/postgres/init-databases.sh."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed: apt-get install -y postgresql (./run.sh test -m containers does)")
    env_of = compose_spec()["services"]["postgres"]["environment"]
    pg = Postgres("127.0.0.1", free_port(), env_of["POSTGRES_USER"], "Zq4-t9YwR2_pLx7sKm3vB8nH")
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    # PostgreSQL refuses to run as root: the Debian package's `postgres` user owns the cluster.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(root, "postgres")
    (root / "pw").write_text(pg.password)
    if as_owner:
        shutil.chown(root / "pw", "postgres")
    data = root / "data"
    subprocess.run([*as_owner, str(bin_dir / "initdb"), "-D", str(data), "-U", pg.user, f"--pwfile={root / 'pw'}",
                    "--auth-host=scram-sha-256", "--auth-local=trust"], check=True, capture_output=True)  # fmt: skip
    options = f"-p {pg.port} -k {root} -c listen_addresses={pg.host}"
    subprocess.run([*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                    "-w", "start"], check=True, capture_output=True)  # fmt: skip
    try:
        first = env_of["POSTGRES_DB"]
        pg.psql("postgres", f'CREATE DATABASE "{first}" OWNER "{pg.user}"')
        init = PROJECT_ROOT / "docker" / "postgres" / "init-databases.sh"
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PGHOST": pg.host, "PGPORT": str(pg.port),
               "PGPASSWORD": pg.password, "POSTGRES_USER": pg.user, "POSTGRES_DB": first,
               "METADATA_DATABASES": env_of["METADATA_DATABASES"]}  # fmt: skip
        subprocess.run(["sh", str(init)], env=env, check=True, capture_output=True)
        yield pg
    finally:
        subprocess.run([*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
