"""Docker mode: the stack of `docker-compose.yml`, driven through `docker compose` (v2) or `docker-compose` (v1).

`ComposeBackend` is the Docker twin of local mode's backend (same `Backend` protocol, same verbs). Before
anything starts it refuses empty or well-known passwords and offers to write strong ones into `.env`.
The module is also the containers' entry point for the steps they share with local mode:
`python -m mlops.services.compose provision buckets|topics` and `... airflow init|<component>`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml
from dotenv import dotenv_values

from mlops.services.errors import ServiceError
from mlops.settings import PROJECT_ROOT, Settings, get_settings, load_settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
PROJECT = "mlops"  # the compose project name (-p): containers are `mlops-<service>-<n>`
MONITORING = "monitoring"  # the optional profile with Prometheus and Grafana
CONSUMER = "inference"
ONE_SHOT = ("minio-init", "kafka-init", "airflow-init")  # run to completion; exit 0 means done

# Settings a container does not receive (tests/docker checks every other field is passed).
HOST_ONLY_SETTINGS = {
    "LOCAL_DIR": "a host path; containers keep their state in named volumes under their own .local",
    "DATA_CACHE_DIR": "a host path; containers use the default under their own .local",
    "INFERENCE_CONSUMERS": "not read by a consumer: it is the replica count (`--scale inference=N`)",
    "POSTGRES_PASSWORD": "read by the postgres container; our services get it inside their database URLs",
    "GRAFANA_ADMIN_PASSWORD": "read by the grafana container (profile monitoring) only",
}

# --- Passwords ------------------------------------------------------------------------------------

# The settings that are passwords: Docker mode exposes services on ports, so none may be guessable.
PASSWORD_SETTINGS = (
    "redis_password",
    "s3_secret_key",
    "postgres_password",
    "airflow_admin_password",
    "grafana_admin_password",
)
# Embedded in connection URLs (redis://:pw@..., postgresql://user:pw@...): must need no quoting.
URL_EMBEDDED = ("redis_password", "postgres_password")
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
MIN_LENGTH = 8  # also MinIO's minimum for the root password (S3_SECRET_KEY)
WELL_KNOWN = frozenset(
    {
        "password", "passw0rd", "admin", "administrator", "root", "secret", "changeme", "change-me", "default",
        "minioadmin", "minio123", "airflow", "postgres", "redis", "mlflow", "grafana", "kafka", "mlops",
        "123456", "12345678", "123456789", "qwerty", "letmein", "test", "guest",
    }
)  # fmt: skip


@dataclass(frozen=True)
class WeakPassword:
    name: str  # the variable name, e.g. REDIS_PASSWORD
    reason: str


def placeholder_values(example: Path = ENV_EXAMPLE) -> set[str]:
    """The password values `.env.example` ships with: public, so as weak as "password"."""
    if not example.exists():
        return set()
    values = dotenv_values(example)
    return {v for k, v in values.items() if v and k.lower() in PASSWORD_SETTINGS}


def password_problem(setting: str, value: str, placeholders: set[str] = frozenset()) -> str | None:
    """Why `value` may not be used for the password setting `setting`, or None when it may."""
    if not value:
        return "is empty"
    lowered = value.lower()
    if value in placeholders or lowered.startswith("change-me") or lowered in WELL_KNOWN:
        return "is a well-known or placeholder value"
    if len(value) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    if setting in URL_EMBEDDED and not URL_SAFE.match(value):
        return "must use only A-Z a-z 0-9 . _ ~ - (it is embedded in connection URLs)"
    return None


def weak_passwords(settings: Settings, placeholders: set[str] | None = None) -> list[WeakPassword]:
    """Every password setting Docker mode refuses, with the reason. A missing setting counts as empty."""
    placeholders = placeholder_values() if placeholders is None else placeholders
    weak = []
    for name in PASSWORD_SETTINGS:
        problem = password_problem(name, str(getattr(settings, name, "")), placeholders)
        if problem:
            weak.append(WeakPassword(name.upper(), problem))
    return weak


def generate_password() -> str:
    """32 URL-safe characters (192 bits): valid in every URL, config file and shell we pass it through."""
    return secrets.token_urlsafe(24)


def write_env_values(env_file: Path, values: dict[str, str], example: Path = ENV_EXAMPLE) -> None:
    """Set `NAME=value` lines in `.env` (created from `.env.example` if absent), keeping every other line."""
    source = env_file if env_file.exists() else example
    lines = source.read_text().splitlines() if source.exists() else []
    pending = dict(values)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in pending:
            lines[i] = f"{key}={pending.pop(key)}"
    lines += [f"{key}={value}" for key, value in pending.items()]
    tmp = env_file.with_name(env_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    tmp.replace(env_file)


def fix_command() -> str:
    return "python -m mlops.services.compose secrets   (or ./run.sh up --docker --yes)"


def ensure_strong_passwords(
    settings: Settings, env_file: Path, assume_yes: bool, ask: Callable[[str], str] | None = None
) -> Settings:
    """Refuse weak passwords; with consent (prompt on a TTY, or `assume_yes`) write strong ones into `.env`.

    Returns the settings to use (re-read from `.env` when it was changed).
    """
    weak = weak_passwords(settings)
    if not weak:
        return settings
    listing = "\n".join(f"  {w.name} {w.reason}" for w in weak)
    print(f"Docker mode will not start with these passwords:\n{listing}", flush=True)
    if not assume_yes:
        if ask is None and not sys.stdin.isatty():
            raise ServiceError("docker", f"weak passwords in {env_file}; generate strong ones with: {fix_command()}")
        answer = (ask or input)(f"Generate strong random ones into {env_file}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise ServiceError("docker", f"weak passwords in {env_file}; set them yourself or run: {fix_command()}")
    write_env_values(env_file, {w.name: generate_password() for w in weak})
    print(f"wrote {len(weak)} new password(s) into {env_file} (mode 600). Data volumes created earlier keep "
          "their old passwords: `./run.sh down --purge --docker` resets them.", flush=True)  # fmt: skip
    fresh = load_settings(env_file)
    still = weak_passwords(fresh)
    if still:
        names = ", ".join(w.name for w in still)
        raise ServiceError("docker", f"{names} still weak after writing {env_file}: an environment variable overrides")
    return fresh


# --- The compose file -----------------------------------------------------------------------------


def compose_spec(path: Path = COMPOSE_FILE) -> dict:
    """docker-compose.yml as written (before interpolation): enough for literal ports and service names."""
    return yaml.safe_load(path.read_text())


def published_port(spec: dict, service: str, container_port: int) -> tuple[str, str] | None:
    """(host address, host port) that `service` publishes for `container_port`, as written in the file."""
    for entry in spec["services"][service].get("ports", []):
        parts = str(entry).rsplit(":", 2)
        if len(parts) == 3 and parts[2] == str(container_port):
            return parts[0], parts[1]
    return None


# The URL settings whose host ports compose publishes literally: (setting, service, container port).
PUBLISHED_URLS = (
    ("airflow_url", "airflow-apiserver", 8080),
    ("mlflow_tracking_uri", "mlflow", 5000),
    ("s3_endpoint_url", "minio", 9000),
    ("console_url", "console", 8501),
)
LOOPBACK = ("127.0.0.1", "localhost")


def endpoint_mismatches(settings: Settings, spec: dict) -> list[str]:
    """Where the host-side settings would miss what compose publishes (ports bound to 127.0.0.1)."""
    problems = []
    for setting, service, container_port in PUBLISHED_URLS:
        url = urlparse(getattr(settings, setting))
        published = published_port(spec, service, container_port)
        if published is None:
            problems.append(f"docker-compose.yml: {service} publishes no port for {container_port}")
        elif url.hostname not in LOOPBACK or str(url.port) != published[1]:
            problems.append(f"{setting.upper()}={getattr(settings, setting)} but {service} is published on "
                            f"{published[0]}:{published[1]}")  # fmt: skip
    if settings.redis_host not in LOOPBACK:
        problems.append(f"REDIS_HOST={settings.redis_host}: Docker mode publishes Redis on 127.0.0.1")
    # Compose publishes the broker at exactly this address and advertises it: one IPv4 host:port.
    if not re.fullmatch(r"127\.0\.0\.1:\d+", settings.kafka_bootstrap_servers):
        servers = settings.kafka_bootstrap_servers
        problems.append(f"KAFKA_BOOTSTRAP_SERVERS={servers}: Docker mode needs 127.0.0.1:<port>")
    return problems


# --- The backend ----------------------------------------------------------------------------------


def compose_cli() -> list[str]:
    """`docker compose` when the v2 plugin answers, else Debian's `docker-compose` (v1)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise ServiceError("docker", "neither `docker compose` (v2 plugin) nor `docker-compose` is installed")


def engine_answers(timeout: float = 5.0) -> bool:
    """True when a Docker engine answers: what `--docker`/auto mode selection needs."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=timeout, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@dataclass(frozen=True)
class Container:
    service: str
    name: str
    status: str  # created | running | restarting | exited | ...
    exit_code: int
    health: str | None  # healthy | unhealthy | starting | None (no healthcheck)

    @property
    def ready(self) -> bool:
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
            )
        )
    return out


def readiness(containers: list[Container], expected: set[str], exclude: set[str]) -> dict[str, str]:
    """Each expected service's state: done (one-shot), healthy, running (for `exclude`), failed or pending."""
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
        else:
            states[service] = "healthy" if all(c.ready for c in group) else "pending"
    return states


def say(message: str) -> None:
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

    # --- plumbing ------------------------------------------------------------------------------

    def command(self, *args: str, all_profiles: bool = False) -> list[str]:
        """A full compose command line for this project, file and `.env`."""
        if self._cli is None:
            self._cli = compose_cli()
        base = [*self._cli, "-p", PROJECT, "-f", str(COMPOSE_FILE)]
        if self.env_file.exists():
            base += ["--env-file", str(self.env_file)]
        if self.monitoring or all_profiles:
            base += ["--profile", MONITORING]
        return [*base, *args]

    def _run(self, *args: str, capture: bool = False, all_profiles: bool = False) -> str:
        argv = self.command(*args, all_profiles=all_profiles)
        proc = subprocess.run(argv, cwd=PROJECT_ROOT, text=True, capture_output=capture, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] if capture else []
            raise ServiceError("docker", f"`{' '.join(argv[len(self._cli or []):])}` failed (exit {proc.returncode})"
                               + (f": {detail[0]}" if detail else ""))  # fmt: skip
        return proc.stdout or ""

    def containers(self) -> list[Container]:
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if not ids:
            return []
        raw = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=False).stdout
        return parse_inspect(raw)

    def _log_tail(self, service: str, lines: int = 20) -> str:
        argv = self.command("logs", "--no-color", "--tail", str(lines), service)
        proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    def _services(self) -> list[str]:
        return self._run("config", "--services", capture=True).split()

    # --- Backend protocol ----------------------------------------------------------------------

    def up(self) -> None:
        """Build, start (a healthy container is left alone, a dead one restarted), wait for health."""
        self.settings = ensure_strong_passwords(self.settings, self.env_file, self.assume_yes)
        problems = endpoint_mismatches(self.settings, compose_spec())
        if problems:
            raise ServiceError("docker", "; ".join(problems))
        started = time.monotonic()
        say("docker: building images (first build downloads the Python stack, Java and the S3A jars)")
        self._run("build")
        say(f"docker: starting services ({CONSUMER} x{self.settings.inference_consumers})")
        self._run("up", "-d", "--remove-orphans", "--scale", f"{CONSUMER}={self.settings.inference_consumers}")
        # The consumers wait for a champion model, which the first pipeline run registers: here they need
        # only be running; restart_consumers() waits for their health.
        self.wait(exclude={CONSUMER})
        say(f"docker: all services healthy in {time.monotonic() - started:.0f}s")

    def wait(self, exclude: set[str] = frozenset(), only: set[str] | None = None) -> None:
        """Poll until every service is ready (`exclude`: running is enough); fail fast when a one-shot failed."""
        expected = set(only) if only is not None else set(self._services())
        deadline = time.monotonic() + self.timeout_s
        reported: set[str] = set()
        while True:
            states = readiness(self.containers(), expected, exclude)
            for service, state in sorted(states.items()):
                if state == "failed":
                    raise ServiceError(service, f"one-shot job failed:\n{self._log_tail(service)}")
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
        spec = compose_spec()

        def local(service: str, port: int, path: str = "") -> str:
            published = published_port(spec, service, port)
            return f"http://{published[0]}:{published[1]}{path}" if published else f"({service} not published)"

        s = self.settings
        urls = {
            "Console": f"{s.console_url}  (login {s.airflow_admin_user} / AIRFLOW_ADMIN_PASSWORD)",
            "Airflow UI": f"{s.airflow_url}  (login {s.airflow_admin_user} / AIRFLOW_ADMIN_PASSWORD)",
            "MLflow UI": s.mlflow_tracking_uri,
            "Kafka UI": local("kafka-ui", 8080),
            "MinIO console": f"{local('minio', 9001)}  (login S3_ACCESS_KEY / S3_SECRET_KEY)",
            "Spark master UI": local("spark-master", 8080),
            "S3 API": s.s3_endpoint_url,
            "Kafka bootstrap": s.kafka_bootstrap_servers,
            "Redis": f"{s.redis_host}:{s.redis_port}",
        }
        if self.monitoring:
            urls["Grafana"] = f"{local('grafana', 3000)}  (login admin / GRAFANA_ADMIN_PASSWORD)"
            urls["Prometheus"] = local("prometheus", 9090)
        return urls

    def rows(self) -> list:
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

    def status(self) -> int:
        """Containers with state and URL, then the mode-agnostic stream/model report."""
        from mlops.status import print_report

        rows = self.rows()
        print_report(self.settings, rows, mode="docker", logs=None)
        say(f"Kafka UI: {self.urls()['Kafka UI']}")
        running = [r for r in rows if r.state != "done"]
        return 0 if running and all(r.state == "up" for r in running) else 1


# --- Entry points inside the containers -----------------------------------------------------------


def provision(what: str, settings: Settings, attempts: int = 10) -> None:
    """Buckets or topics, by local mode's functions (retried: a healthcheck can pass a moment early)."""
    from mlops.services import provision as prov

    ensure = {"buckets": prov.ensure_buckets, "topics": prov.ensure_topics}[what]
    for attempt in range(1, attempts + 1):
        try:
            created = ensure(settings)
            say(f"{what}: ready" + (f" (created {', '.join(created)})" if created else " (all existed)"))
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            say(f"{what}: attempt {attempt}/{attempts} failed ({exc}); retrying in 3s")
            time.sleep(3)


def airflow_container_env(settings: Settings) -> dict[str, str]:
    """Local mode's Airflow environment, with the `AIRFLOW__*` values compose sets (PostgreSQL, 0.0.0.0) on top."""
    from mlops.services.airflow_config import airflow_env

    compose_overrides = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__")}
    return {**airflow_env(settings), **compose_overrides}


def run_airflow(component: str, settings: Settings) -> None:
    """`init` migrates the metadata DB; any other name execs that component as local mode starts it."""
    from mlops.services.airflow_config import airflow_commands

    env = airflow_container_env(settings)
    if component == "init":
        say("airflow: migrating the metadata database")
        subprocess.run(["airflow", "db", "migrate"], env=env, check=True)
        return
    commands = {name.removeprefix("airflow-"): argv for name, argv in airflow_commands()}
    if component not in commands:
        raise SystemExit(f"unknown Airflow component {component!r}: expected init or one of {sorted(commands)}")
    argv = commands[component]
    os.execvpe(argv[0], argv, env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlops.services.compose", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("secrets", help="write strong random passwords into .env for every weak one")
    p = sub.add_parser("provision", help="(in a container) create the buckets or the topics")
    p.add_argument("what", choices=("buckets", "topics"))
    a = sub.add_parser("airflow", help="(in a container) run an Airflow component with local mode's configuration")
    a.add_argument("component")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.verb == "secrets":
        env_file = PROJECT_ROOT / ".env"
        try:
            settings = ensure_strong_passwords(load_settings(env_file), env_file, assume_yes=True)
            if not weak_passwords(settings):
                say(f"all passwords in {env_file} are strong")
        except ServiceError as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    settings = get_settings()
    if args.verb == "provision":
        provision(args.what, settings)
    else:
        run_airflow(args.component, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
