"""Podman for the `containers` tests: a local stand-in for the Dockerfiles' base image, builds, runs.

No Docker engine and no container registry are reachable in CI, so the Dockerfiles' `FROM` image is
replaced by a stand-in built here from Debian's own packages (debootstrap bookworm + Debian's Python 3.11
in a venv at /usr/local, where the official image keeps its Python) and tagged with the `FROM` name. Every
build runs with `--pull=never`, so nothing can come from a registry. Podman's configuration and storage
live under CACHE (default ~/.cache/mlops-platform/podman): the stand-in and the image layers are built
once and reused by later runs, and the machine's own Podman storage is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("MLOPS_PODMAN_CACHE", Path.home() / ".cache" / "mlops-platform" / "podman"))
INSTALL_HINT = "apt-get install -y podman runc catatonit debootstrap (./run.sh test -m containers installs them)"
SUITE = "bookworm"
# What python:*-slim-bookworm adds to Debian (docker-library/python): CA certificates, netbase, tzdata, and
# Python with pip (python3-distutils: python3.11-venv needs it, and debootstrap cannot resolve the virtual
# package python3.11-distutils on its own). libgomp1 is absent, as in the official image: the Dockerfiles
# must add it.
STANDIN_PACKAGES = ("python3.11", "python3.11-venv", "python3-distutils", "ca-certificates", "netbase", "tzdata")
STANDIN_LABEL = "org.mlops-platform.standin"
ULIMITS = ("nofile=1024:20000", "nproc=4096:4096")  # runc/crun here cannot raise rlimits beyond these


def missing_tools() -> list[str]:
    """The packages of INSTALL_HINT that are not installed (catatonit is `podman run --init`'s PID 1)."""
    search = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool, path=search) is None]
    return missing + ([] if Path("/usr/libexec/podman/catatonit").exists() else ["catatonit"])


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for match in re.finditer(r"(?:^URIs:\s*|^deb\s+(?:\[[^]]*\]\s+)?)(\S+)", path.read_text(), re.M):
            uri = match.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


class BuildError(AssertionError):
    """A failed `podman build`, naming the Dockerfile line of the failing instruction."""


def instruction_lines(dockerfile: Path) -> list[tuple[int, str]]:
    """(first line number, instruction with continuations joined) for each instruction of a Dockerfile."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(dockerfile.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.startswith("#"):
            continue
        pending.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            out.append((start, " ".join(p for p in pending if p)))
            pending = []
    return out


def failing_line(dockerfile: Path, log: str) -> tuple[int, str] | None:
    """The Dockerfile line of the last step started before failing (buildah's `STEP n/m:`, Docker's `Step n/m :`)."""
    steps = re.findall(r"^(?:STEP|Step) (\d+)/\d+ ?: ", log, re.M)
    if not steps:
        return None
    index = int(steps[-1]) - 1
    lines = instruction_lines(dockerfile)
    return lines[index] if 0 <= index < len(lines) else None


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    seconds: float


class Podman:
    """`podman` with this project's configuration: own storage under CACHE, host network, fixed ulimits."""

    binary = "podman"
    build_flags: tuple[str, ...] = ("--pull=never", "--network=host", "--layers")

    def __init__(self, cache: Path = CACHE) -> None:
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        conf = self.cache / "containers.conf"
        conf.write_text(
            "[containers]\n"
            f"default_ulimits = {json.dumps(list(ULIMITS))}\n"
            'netns = "host"\n'
            "[engine]\n"
            # runc: crun refuses this machine's hybrid cgroup hierarchy
            'runtime = "runc"\n'
            'events_logger = "file"\n'
            'cgroup_manager = "cgroupfs"\n'
        )
        storage = self.cache / "storage.conf"
        storage.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.cache / "storage"}"\nrunroot = "{self.cache / "run"}"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}

    def __call__(self, *args: str, timeout: float = 600, log: Path | None = None, check: bool = True) -> Run:
        argv = [self.binary, *args]
        started = time.monotonic()
        if log is None:
            proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
            output = proc.stdout + proc.stderr
        else:
            with log.open("w") as fh:
                proc = subprocess.run(argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT, text=True,
                                      timeout=timeout, check=False)  # fmt: skip
            output = log.read_text()
        run = Run(proc.returncode, output, time.monotonic() - started)
        if check and run.returncode != 0:
            raise AssertionError(f"`{self.binary} {' '.join(args[:3])} ...` exited {run.returncode}:\n{output[-3000:]}")
        return run

    def image_exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    # --- the stand-in base image ------------------------------------------------------------------

    def standin(self, base: str, log_dir: Path) -> float:
        """Tag a stand-in for `base` (a python:3.11*-slim-bookworm name); seconds spent (0 when cached)."""
        if not re.fullmatch(r"python:3\.11[.\d]*-slim-bookworm", base):
            raise AssertionError(f"no stand-in for base image {base}: only python:3.11*-slim-bookworm is made here")
        if self.image_exists(base) and self._is_standin(base):
            return 0.0
        started = time.monotonic()
        rootfs_image = self._rootfs_image(log_dir)
        # The CA certificates this machine adds to Debian's (an egress proxy that re-signs TLS): without them
        # pip inside a build cannot reach PyPI here. A real Docker host behind such a proxy needs the same.
        context = self.cache / "standin-context"  # never the cache itself, which holds the engine's storage
        extra_ca = context / "extra-ca"
        shutil.rmtree(extra_ca, ignore_errors=True)
        extra_ca.mkdir(parents=True)
        for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(cert, extra_ca / cert.name)
        containerfile = context / "Containerfile.standin"
        containerfile.write_text(
            f"FROM {rootfs_image}\n"
            "COPY extra-ca/ /usr/local/share/ca-certificates/\n"
            "RUN update-ca-certificates\n"
            # A venv at /usr/local: python, python3, pip in /usr/local/bin and site-packages under
            # /usr/local/lib, where the official image has them; no Debian-managed packages to collide with.
            "RUN python3.11 -m venv /usr/local && python --version && pip --version\n"
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8\n"
            f'LABEL {STANDIN_LABEL}="debootstrap {SUITE} + Debian python3.11 (venv at /usr/local)"\n'
            'CMD ["python3"]\n'
        )
        # Tagged with the name Docker gives `python:...` (Podman would otherwise file it under localhost/).
        self("build", *self.build_flags, "-t", f"docker.io/library/{base}", "-f", str(containerfile), str(context),
             log=log_dir / "standin-build.log")  # fmt: skip
        return time.monotonic() - started

    def _is_standin(self, image: str) -> bool:
        labels = self("image", "inspect", "--format", "{{json .Labels}}", image).output
        return STANDIN_LABEL in labels

    def _rootfs_image(self, log_dir: Path) -> str:
        """debootstrap's root filesystem, imported once; the tarball is cached by suite, mirror and packages."""
        key = hashlib.sha256(f"{SUITE} {debian_mirror()} {' '.join(STANDIN_PACKAGES)}".encode()).hexdigest()[:12]
        image = f"localhost/mlops-standin-rootfs:{SUITE}-{key}"
        if self.image_exists(image):
            return image
        tarball = self.cache / f"rootfs-{SUITE}-{key}.tar"
        if not tarball.exists():
            if os.geteuid() != 0:
                raise AssertionError("debootstrap needs root to build the stand-in base image")
            target = self.cache / f"rootfs-{SUITE}-{key}"
            shutil.rmtree(target, ignore_errors=True)
            with (log_dir / "debootstrap.log").open("w") as fh:
                proc = subprocess.run(
                    ["debootstrap", "--variant=minbase", f"--include={','.join(STANDIN_PACKAGES)}", SUITE,
                     str(target), debian_mirror()],
                    stdout=fh, stderr=subprocess.STDOUT, timeout=1800, check=False,
                )  # fmt: skip
            if proc.returncode != 0:
                tail = (log_dir / "debootstrap.log").read_text()[-2000:]
                raise AssertionError(f"debootstrap {SUITE} failed (exit {proc.returncode}):\n{tail}")
            shutil.rmtree(target / "var" / "cache" / "apt" / "archives", ignore_errors=True)
            partial = tarball.with_suffix(".part")
            subprocess.run(["tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), "."], check=True)
            partial.replace(tarball)
            shutil.rmtree(target, ignore_errors=True)
        self("import", "--change", 'CMD ["bash"]', str(tarball), image, timeout=900)
        return image

    # --- the project's images -----------------------------------------------------------------------

    def build(self, dockerfile: Path, tag: str, context: Path, log: Path, timeout: float = 3600) -> float:
        """`build` from local images only; seconds taken. A failure names the Dockerfile line that failed."""
        run = self("build", *self.build_flags, "-f", str(dockerfile), "-t", tag, str(context), log=log,
                   timeout=timeout, check=False)  # fmt: skip
        if run.returncode != 0:
            where = failing_line(dockerfile, run.output)
            at = f"{dockerfile.relative_to(context)}:{where[0]}: {where[1][:160]}" if where else str(dockerfile)
            tail = "\n".join(run.output.rstrip().splitlines()[-25:])
            raise BuildError(f"{self.binary} build of {tag} failed at {at}\n(full log: {log})\n{tail}")
        return run.seconds

    def run(self, image: str, argv: Sequence[str], env: dict[str, str] | None = None, *, timeout: float = 600,
            log: Path | None = None) -> Run:  # fmt: skip
        """A one-off container on the host network (`--rm`); the output is returned, not checked. On a timeout
        or an interrupt the container is removed too (killing the podman client alone would leave it running)."""
        name = f"mlops-test-run-{os.getpid()}-{time.monotonic_ns()}"
        args = ["run", "--rm", "--name", name, "--network=host", "--init"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        try:
            return self(*args, image, *argv, timeout=timeout, log=log, check=False)
        except BaseException:
            self("rm", "-f", "-t", "0", name, check=False)
            raise

    def start(self, name: str, image: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        """A detached container (removed first if a previous run left one behind)."""
        self("rm", "-f", "-t", "0", name, check=False)
        args = ["run", "-d", "--name", name, "--network=host", "--init"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        self(*args, image, *argv)

    def logs(self, name: str) -> str:
        return self("logs", name, check=False).output

    def stop(self, name: str) -> None:
        self("rm", "-f", "-t", "10", name, check=False)
