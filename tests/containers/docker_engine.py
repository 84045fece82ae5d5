"""A real Docker Engine for the `containers` tests: Debian's `dockerd` on a private socket, Compose v2 beside it.

`./run.sh` picks Docker mode whenever `docker info` answers on the default socket, so the engine started
here listens only on a socket of its own under DOCKER_CACHE and is stopped when the session ends: the
local-mode suite never flips. Compose comes from the engine's CLI plugin when one is installed, else it is
built once from the Go module proxy (docker/compose, pinned below) into DOCKER_CACHE and offered to the
client as a CLI plugin through a private DOCKER_CONFIG. Images, volumes and the build cache live in the
engine's data root under DOCKER_CACHE, so a second run rebuilds nothing that did not change.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from podman_build import CACHE as PODMAN_CACHE
from podman_build import Podman

DOCKER_CACHE = Path(os.environ.get("MLOPS_DOCKER_CACHE", PODMAN_CACHE.parent / "docker"))
DOCKER_INSTALL_HINT = "apt-get install -y docker.io debootstrap (./run.sh test -m containers installs them)"
# docker/compose v5 is Compose v2's line (the module path moved with its major version); its newest release
# that builds with this machine's Go (see the README's Docker section).
COMPOSE_MODULE = "github.com/docker/compose/v5"
COMPOSE_VERSION = "v5.6.0"


def missing_engine() -> list[str]:
    """What the engine needs and is not installed: dockerd and the docker client, debootstrap for the base."""
    search = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    return [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool, path=search) is None]


def compose_plugin(config: Path) -> Path:
    """A `docker-compose` CLI plugin in `config`/cli-plugins: the engine's own when installed, else built once."""
    target = config / "cli-plugins" / "docker-compose"
    target.parent.mkdir(parents=True, exist_ok=True)
    for installed in ("/usr/libexec/docker/cli-plugins/docker-compose", "/usr/lib/docker/cli-plugins/docker-compose",
                      "/usr/local/lib/docker/cli-plugins/docker-compose"):  # fmt: skip
        if Path(installed).is_file():
            shutil.copy(installed, target)
            return target
    built = DOCKER_CACHE / "compose" / f"docker-compose-{COMPOSE_VERSION}"
    if not built.is_file():
        module = built.parent / "module"
        module.mkdir(parents=True, exist_ok=True)
        (module / "go.mod").write_text("module composebuild\n\ngo 1.24\n")
        env = {**os.environ, "GOFLAGS": "-mod=mod"}
        for argv in (["go", "get", f"{COMPOSE_MODULE}/cmd@{COMPOSE_VERSION}"],
                     ["go", "build", "-ldflags", f"-X {COMPOSE_MODULE}/internal.Version={COMPOSE_VERSION}",
                      "-o", str(built.with_suffix(".part")), f"{COMPOSE_MODULE}/cmd"]):  # fmt: skip
            proc = subprocess.run(argv, cwd=module, env=env, capture_output=True, text=True, timeout=1800, check=False)
            if proc.returncode != 0:
                raise AssertionError(f"building Compose {COMPOSE_VERSION} failed: `{' '.join(argv[:3])}`:\n"
                                     f"{proc.stderr[-2000:]}")  # fmt: skip
        built.with_suffix(".part").replace(built)
    shutil.copy(built, target)
    target.chmod(0o755)
    return target


class PrivateDockerd:
    """`dockerd` as a plain process on DOCKER_CACHE/docker.sock (no systemd here); `stop()` ends it."""

    def __init__(self, root: Path = DOCKER_CACHE) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.config = root / "config"
        self.log = root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment a client (docker, compose, ./run.sh) needs to reach this engine and no other."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.config)}

    def answers(self) -> bool:
        probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], env=self.env,
                               capture_output=True, text=True, check=False)  # fmt: skip
        return probe.returncode == 0

    def start(self, timeout: float = 60) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        compose_plugin(self.config)
        if self.answers():  # left running by an interrupted session: reuse it, stop it at the end
            return
        self.socket.unlink(missing_ok=True)
        argv = ["dockerd", "-H", f"unix://{self.socket}", "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid"),
                "--storage-driver", "overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs"]  # fmt: skip
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.stop()
                raise AssertionError(f"dockerd did not answer on {self.socket}:\n{tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to dockerd (it stops the containers and its containerd), then wait for it to exit."""
        pidfile = self.root / "dockerd.pid"
        pid = self.proc.pid if self.proc else int(pidfile.read_text()) if pidfile.exists() else None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            if self.proc and self.proc.poll() is not None:
                return
            time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)


class Docker(Podman):
    """The `docker` client on the private engine, with the Podman helper's verbs (stand-in base, build, run)."""

    binary = "docker"
    build_flags = ("--network=host",)  # the classic builder uses a local FROM image and never pulls it

    def __init__(self, engine: PrivateDockerd) -> None:
        self.cache = engine.root
        self.env = {**engine.env, "DOCKER_BUILDKIT": "0"}  # the classic builder's `Step n/m :` names failing lines

    def image_exists(self, image: str) -> bool:
        return self("image", "inspect", image, check=False).returncode == 0
