"""Local mode: every service a native process under `.local/` (pid files, logs, data), health-checked.

A process counts as ours only when its pid file and the start time recorded beside it still match the
live process, so `down` can never signal a stranger that reused the pid, and nothing is stopped by name.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlops.services import airflow_config, health, jvm, mlflow_auth, process, provision, specs
from mlops.services.errors import ServiceError
from mlops.services.passwords import PASSWORD_SETTINGS
from mlops.services.specs import Launch
from mlops.settings import Settings
from mlops.spark_capacity import scratch_root
from mlops.status import ServiceRow, print_report


def say(message: str) -> None:
    """Print a progress line at once (flushed), so ./run.sh shows it even when its output is piped."""
    print(message, flush=True)


@dataclass(frozen=True)
class Pid:
    """What a pid file recorded of a started process: enough for `owned` to tell it from a reused pid."""

    pid: int
    argv: tuple[str, ...]
    start_time: int | None
    credentials: str | None = None  # `credentials_digest` of what it was started with; None: not recorded


class LocalState:
    """The `.local/` tree: pid files (`run/<name>.pid` + `run/<name>.json`), logs, data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.logs = root / "logs"
        self.data = root / "data"

    def log(self, name: str) -> Path:
        """The log file a service's output goes to."""
        return self.logs / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        """The pid file that says a service was started by us."""
        return self.run / f"{name}.pid"

    def record(self, name: str, proc: subprocess.Popen, argv: tuple[str, ...], credentials: str | None = None) -> None:
        """Remember a started process (pid, command line, start time, which credentials), so later runs can
        find it, stop it, and tell whether `.env` rotated a password it holds."""
        self.run.mkdir(parents=True, exist_ok=True)
        meta = {"pid": proc.pid, "argv": list(argv), "start_time": process.start_time(proc.pid),
                "credentials": credentials}  # fmt: skip
        (self.run / f"{name}.json").write_text(json.dumps(meta))
        self.pid_file(name).write_text(f"{proc.pid}\n")

    def forget(self, name: str) -> None:
        """Drop a service's pid records once it is stopped."""
        self.pid_file(name).unlink(missing_ok=True)
        (self.run / f"{name}.json").unlink(missing_ok=True)

    def read(self, name: str) -> Pid | None:
        """What was recorded of a service's process (None without a readable pid file); metadata dropped if stale."""
        try:
            pid = int(self.pid_file(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            meta = json.loads((self.run / f"{name}.json").read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("pid") != pid:
            meta = {}
        return Pid(pid, tuple(meta.get("argv", ())), meta.get("start_time"), meta.get("credentials"))

    def names(self) -> list[str]:
        """The services with a pid file: what `down` may have to stop, configured now or not."""
        return sorted(p.stem for p in self.run.glob("*.pid")) if self.run.exists() else []


def credentials_digest(launch: Launch, settings: Settings) -> str:
    """A digest of the passwords a process is started with (in its environment or its own configuration
    files): when `.env` rotates one of them, the digest changes and `up` restarts the process, which would
    otherwise go on with the old one (a server refusing the new password, a client signing in with the old)."""
    held = {*launch.env.values(), *launch.secrets}
    used = [str(getattr(settings, name)) for name in PASSWORD_SETTINGS if str(getattr(settings, name)) in held]
    return hashlib.sha256("\0".join(used).encode()).hexdigest()[:32]


def owned(record: Pid, expected_argv: tuple[str, ...] = ()) -> bool:
    """True when the live process with this pid is the one we started (same start time), not a stranger.

    Without a recorded start time (a pid file written by hand), fall back to the command line: the
    executable we would have launched must appear in it.
    """
    if not process.alive(record.pid):
        return False
    if record.start_time is not None:
        return process.start_time(record.pid) == record.start_time
    argv = record.argv or expected_argv
    if not argv:
        return False
    exe = Path(argv[0]).name
    return any(Path(part).name == exe for part in process.cmdline(record.pid))


class LocalBackend:
    """Native processes; the order of `_phases` is the dependency order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = LocalState(settings.path("local_dir"))
        self.include_airflow = True
        self.include_inference = True
        self.include_console = True
        self.include_prometheus = True

    # --- what runs ------------------------------------------------------------------------
    def _core(self) -> list[Launch]:
        data = self.state.data
        return [
            specs.redis(self.settings, data / "redis"),
            specs.kafka(self.settings, data / "kafka"),
            specs.s3(self.settings, data / "s3"),
            *self._spark(),
        ]

    def _spark(self) -> list[Launch]:
        """The standalone Spark master and workers (none unless SPARK_WORKERS > 0)."""
        return specs.spark_cluster(self.settings, self.state.data / "spark", scratch_root(self.settings))

    def _airflow(self) -> list[Launch]:
        if not self.include_airflow:
            return []
        return airflow_config.launches(self.settings)

    def _inference(self) -> list[Launch]:
        if not self.include_inference:
            return []
        launches = specs.inference(self.settings)
        if not launches:
            say(f"inference: skipped ({specs.CONSUMER_SCRIPT} does not exist yet)")
        return launches

    def _prometheus(self) -> Launch:
        return specs.prometheus(self.settings, self.state.data / "prometheus")

    def _known_launches(self) -> list[Launch]:
        """Every launch, for status and down: a service whose binary is missing shows as a placeholder."""
        data = self.state.data
        factories = [
            ("redis", lambda: [specs.redis(self.settings, data / "redis")]),
            ("kafka", lambda: [specs.kafka(self.settings, data / "kafka")]),
            ("s3", lambda: [specs.s3(self.settings, data / "s3")]),
            ("mlflow", lambda: [specs.mlflow(self.settings, data / "mlflow")]),
            ("spark", self._spark),
        ]
        if self.include_airflow:
            factories.append(("airflow", lambda: airflow_config.launches(self.settings)))
        if self.include_inference:
            factories.append(("inference", lambda: specs.inference(self.settings)))
        if self.include_prometheus:
            factories.append(("prometheus", lambda: [self._prometheus()]))
        if self.include_console:
            factories.append(("console", lambda: [specs.console(self.settings)]))
        launches: list[Launch] = []
        for name, factory in factories:
            try:
                launches += factory()
            except ServiceError as exc:
                launches.append(_unavailable(name, exc.reason))
        return launches

    # --- up -------------------------------------------------------------------------------
    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One `up`/`down` at a time per LOCAL_DIR: two would race on the same ports and pid files."""
        self.state.run.mkdir(parents=True, exist_ok=True)
        with (self.state.run / ".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say("another ./run.sh up/down is running on this LOCAL_DIR: waiting for it")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def up(self) -> None:
        """Start every service not already running, in dependency order, and provision buckets and topics."""
        with self._exclusive(), self._interruptible() as started:
            # Every jar first: a failed Maven resolution stops `up` before anything is started or written.
            for component, service in specs.jvm_components(self.settings):
                jvm.classpath(component, service)
            self._ensure(self._core(), started)
            created = self._provision("s3", provision.ensure_buckets)
            say(f"s3: buckets {self.settings.s3_bucket}, {self.settings.mlflow_artifact_bucket} ready"
                + (f" (created {', '.join(created)})" if created else ""))  # fmt: skip
            created = self._provision("kafka", provision.ensure_topics)
            say("kafka: topics ready" + (f" (created {', '.join(created)})" if created else ""))
            changed = self._provision("kafka", provision.ensure_kafka_access)
            say("kafka: credentials and ACLs of the roles set" + (f" ({'; '.join(changed)})" if changed else ""))
            # MLflow starts while Airflow's metadata DB is migrated: the two are independent.
            pending = self._launch([specs.mlflow(self.settings, self.state.data / "mlflow")], started)
            airflow = self._airflow()
            if airflow and not all(self._running_healthy(launch) for launch in airflow):
                say("airflow: migrating the metadata database (first run takes a minute)")
                try:
                    airflow_config.prepare(self.settings)
                except Exception as exc:
                    log = self.state.log("airflow-db-migrate")
                    log.parent.mkdir(parents=True, exist_ok=True)
                    log.write_text(f"{exc}\n")
                    lines = [ln for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
                    raise ServiceError("airflow", f"metadata DB migration failed: {lines[-1].strip()}", log) from exc
            self._await(pending + self._launch(airflow, started), started)
            done = self._provision("mlflow", mlflow_auth.ensure_platform_user)
            user = self.settings.mlflow_tracking_username
            say(f"mlflow: user {user} ready" + (f" ({'; '.join(done)})" if done else ""))
            self._ensure(self._inference(), started)
            if self.include_prometheus:
                self._reload_prometheus_if_targets_changed()
                self._ensure([self._prometheus()], started)
            if self.include_console:
                self._ensure([specs.console(self.settings)], started)

    def _reload_prometheus_if_targets_changed(self) -> None:
        """A running Prometheus whose scrape targets no longer match INFERENCE_CONSUMERS: new config, SIGHUP."""
        launch = self._prometheus()
        record = self.state.read(launch.name)
        if record is None or not owned(record, launch.argv):
            return  # not running: its start writes the configuration
        if specs.write_prometheus_config(self.settings, self.state.data / "prometheus"):
            os.kill(record.pid, signal.SIGHUP)  # Prometheus re-reads its configuration file on SIGHUP
            say(f"prometheus: now scraping {self.settings.inference_consumers} consumer(s) (configuration reloaded)")

    def _provision(self, service: str, step: Callable[[Settings], list[str]]) -> list[str]:
        try:
            return step(self.settings)
        except Exception as exc:
            reason = f"{step.__name__} failed: {exc}".splitlines()[0]
            raise ServiceError(service, reason, self.state.log(service)) from exc

    def _running_healthy(self, launch: Launch) -> bool:
        record = self.state.read(launch.name)
        if record is None or not owned(record, launch.argv):
            return False
        try:
            launch.check()
            return True
        except Exception:
            return False

    def _ensure(self, launches: list[Launch], started: list[str]) -> None:
        self._await(self._launch(launches, started), started)

    def _launch(self, launches: list[Launch], started: list[str]) -> list[tuple[Launch, subprocess.Popen | int]]:
        """Start what is not running, all at once (waiting comes after); keep what runs."""
        pending: list[tuple[Launch, subprocess.Popen | int]] = []
        for launch in launches:
            record = self.state.read(launch.name)
            if record is not None and owned(record, launch.argv):
                if record.credentials == credentials_digest(launch, self.settings):
                    pending.append((launch, record.pid))  # running: give it the chance to be (or become) healthy
                    continue
                say(f"{launch.name}: a password it holds changed in .env; restarting it (pid {record.pid})")
                process.stop(record.pid)  # SIGTERM first: consumers commit, Redis and Kafka flush their logs
            if record is not None:
                self.state.forget(launch.name)
            pending.append((launch, self._spawn(launch, started)))
        return pending

    def _await(self, pending: list[tuple[Launch, subprocess.Popen | int]], started: list[str]) -> None:
        """Wait for each to be healthy; one that runs but stays unhealthy is restarted once."""
        for launch, proc in pending:
            log = self.state.log(launch.name)
            if isinstance(proc, int):
                try:
                    patient = dataclasses.replace(launch, timeout_s=min(launch.timeout_s, 30))
                    detail = process.wait_ready(patient, proc, log)
                    say(f"{launch.name}: already running (pid {proc}), {detail}")
                    continue
                except ServiceError:
                    say(f"{launch.name}: pid {proc} is unhealthy; restarting it")
                    process.stop(proc)
                    self.state.forget(launch.name)
                    proc = self._spawn(launch, started)
            detail = process.wait_ready(launch, proc, log)
            say(f"{launch.name}: started (pid {proc.pid}), {detail}" + (f"; {launch.note}" if launch.note else ""))

    def _spawn(self, launch: Launch, started: list[str]) -> subprocess.Popen:
        proc = process.start(launch, self.state.log(launch.name))
        self.state.record(launch.name, proc, launch.argv, credentials_digest(launch, self.settings))
        started.append(launch.name)
        return proc

    @contextmanager
    def _interruptible(self) -> Iterator[list[str]]:
        """On Ctrl-C or SIGTERM, stop what this `up` started, so no orphan outlives it.

        A service that fails to start does not stop the others: `status` then shows what is up.
        """
        started: list[str] = []
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            yield started
        except KeyboardInterrupt:
            say("\ninterrupted: stopping what this `up` started")
            self._stop_names(reversed(started))
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)

    # --- down / restart -------------------------------------------------------------------
    def down(self, purge: bool) -> None:
        """Stop every service we started, in reverse order; `purge` also deletes the local data."""
        with self._exclusive():
            self._down(purge)

    def _down(self, purge: bool) -> None:
        launches = self._known_launches()
        order = [launch.name for launch in launches]
        names = [n for n in reversed(order) if n in self.state.names()]
        names += [n for n in self.state.names() if n not in names]  # e.g. more consumers than now configured
        self._stop_names(names, expected={launch.name: launch.argv for launch in launches})
        if not names:
            say("nothing to stop")
        if purge:
            shutil.rmtree(self.state.data, ignore_errors=True)
            shutil.rmtree(self.state.run, ignore_errors=True)
            say(f"purged {self.state.data}")

    def _stop_names(self, names: Iterable[str], expected: dict[str, tuple[str, ...]] | None = None) -> None:
        """Stop in waves, each in parallel: consumers first (they commit offsets on the way out), then the
        servers that depend on the core ones, then the core (Redis, Kafka, S3)."""
        waves: dict[int, list[str]] = {}
        for name in names:
            servers = ("airflow", "mlflow", "console", "prometheus")
            tier = 0 if name.startswith("inference") else 1 if name.startswith(servers) else 2
            waves.setdefault(tier, []).append(name)
        for tier in sorted(waves):
            with ThreadPoolExecutor(max_workers=len(waves[tier])) as pool:
                list(pool.map(lambda n: self._stop_one(n, (expected or {}).get(n, ())), waves[tier]))

    def _stop_one(self, name: str, expected_argv: tuple[str, ...]) -> None:
        record = self.state.read(name)
        if record is None:
            self.state.forget(name)
            return
        if not process.alive(record.pid):
            self.state.forget(name)
            say(f"{name}: was not running (stale pid file removed)")
            return
        if not owned(record, expected_argv):
            self.state.forget(name)
            shown = " ".join(process.cmdline(record.pid))[:80]
            say(f"{name}: pid {record.pid} is not a process this project started ({shown!r}); "
                "left it alone, removed the stale pid file")  # fmt: skip
            return
        process.stop(record.pid)
        self.state.forget(name)
        say(f"{name}: stopped (pid {record.pid})")

    def restart_consumers(self, wait_for_model: bool = True, model_timeout_s: float = 180) -> None:
        """Fresh consumer processes (they also hot-reload a new champion; a restart makes it immediate),
        by default waited for until each serves a model: the first load of a version compiles its trees
        (~10 s), and what runs next (verify) should time serving, not that."""
        with self._exclusive(), self._interruptible() as started:
            self._stop_names([n for n in self.state.names() if n.startswith("inference-")])
            launches = self._inference()
            self._ensure(launches, started)
            for launch in launches if wait_for_model else ():
                began = time.monotonic()
                while not (detail := health.consumer_health(launch.port or 0)).startswith("healthy"):
                    if time.monotonic() - began > model_timeout_s:
                        raise ServiceError(launch.name, f"no model after {model_timeout_s:.0f}s: {detail}",
                                           self.state.log(launch.name))  # fmt: skip
                    time.sleep(0.5)
                say(f"{launch.name}: {detail} ({time.monotonic() - began:.1f}s)")

    # --- status / urls --------------------------------------------------------------------
    def rows(self) -> list[ServiceRow]:
        """One status row per known service: up, unhealthy (its check fails) or down, with a note."""
        rows = []
        for launch in self._known_launches():
            record = self.state.read(launch.name)
            pid = record.pid if record is not None and owned(record, launch.argv) else None
            state = "down"
            if pid is not None:
                try:
                    launch.check()
                    state = "up"
                except Exception:
                    state = "unhealthy"
            note = launch.note
            if state == "up" and launch.service == "inference":
                note = health.consumer_health(launch.port or 0)
            if launch.data_dir is not None:
                note += f" ({_human_size(_disk_usage(launch.data_dir))} on disk)"
            rows.append(ServiceRow(launch.name, state, pid, launch.url, note))
        return rows

    def status(self) -> int:
        """Print the status report; exit code 0 only when every service is up."""
        rows = self.rows()
        print_report(self.settings, rows, mode="local", logs=self.state.logs)
        return 0 if all(r.state == "up" for r in rows) else 1

    def urls(self) -> dict[str, str]:
        """Where each service can be reached, printed after `up` (and the consumers' health endpoints)."""
        login = f"login {self.settings.airflow_admin_user} / AIRFLOW_ADMIN_PASSWORD from .env"
        urls = {
            "Console": f"{self.settings.console_url}  ({login})",
            "Airflow UI": f"{self.settings.airflow_url}  ({login})",
            "MLflow UI": f"{self.settings.mlflow_tracking_uri}  "
            f"(login {self.settings.mlflow_tracking_username} / MLFLOW_TRACKING_PASSWORD from .env)",
            "Prometheus": self.settings.prometheus_url,
            "S3 API": self.settings.s3_endpoint_url,
            "Kafka bootstrap": f"{self.settings.kafka_bootstrap_servers}  (SASL platform / KAFKA_PLATFORM_PASSWORD)",
            "Redis": f"{self.settings.redis_host}:{self.settings.redis_port}",
        }
        if self.settings.spark_workers:
            urls["Spark master UI"] = f"{self.settings.spark_master_ui_url}  ({self.settings.spark_master})"
        for launch in specs.inference(self.settings):
            urls[f"Consumer {launch.name}"] = launch.url
        return urls


def _disk_usage(path: Path) -> int:
    """Bytes the files under `path` take on disk (allocated blocks, as `du`; Kafka preallocates indexes)."""
    total = 0
    for file in path.rglob("*") if path.exists() else ():
        try:
            total += file.lstat().st_blocks * 512
        except OSError:
            continue  # deleted while we walk (a segment rolled away)
    return total


def _human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _unavailable(name: str, reason: str) -> Launch:
    """A stand-in for a service that cannot be launched here, so status and down still list it."""

    def check() -> str:
        raise RuntimeError(reason)

    return Launch(name=name, service=name, argv=(), url="", check=check, note=reason)
