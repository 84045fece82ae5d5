"""Starting, waiting for and stopping one service process.

Each process gets its own session (so its process group can be signalled as a whole: MLflow's and
Airflow's workers go with their parent) and appends its output to a log file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from mlops.pids import alive
from mlops.services.errors import ServiceError
from mlops.services.health import Incompatible, port_owner, tcp_open
from mlops.services.specs import Launch


def last_log_line(log: Path) -> str:
    """The last non-empty line of a log, to put the likely cause in the one-line error."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 4096))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _stays_open(host: str, port: int, grace_s: float = 5.0) -> bool:
    """True when something keeps listening on the port for `grace_s`: a service killed a moment ago (the
    restart `up` is for) can hold it a little longer, e.g. through a child still finishing a save."""
    deadline = time.monotonic() + grace_s
    while tcp_open(host, port):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.2)
    return False


def start(
    launch: Launch, log: Path, extra_env: dict[str, str] | None = None, die_with_parent: bool = False
) -> subprocess.Popen:
    """Prepare and spawn `launch`, refusing when its port is already taken by someone else.

    `die_with_parent` is for throwaway servers (the test fixtures): a test run killed hard leaves none behind.
    Local mode's services must outlive `./run.sh up`, so they do not use it.
    """
    if launch.port is not None and _stays_open(launch.host, launch.port):
        owner = port_owner(launch.port)
        taken = f"port {launch.host}:{launch.port} is already in use by another process"
        raise ServiceError(launch.name, taken + (f" ({owner})" if owner else ""), log)
    log.parent.mkdir(parents=True, exist_ok=True)
    if launch.prepare is not None:
        try:
            launch.prepare()
        except ServiceError as exc:  # already one line naming the service and reason: add the log only
            raise ServiceError(exc.service, exc.reason, exc.log or log) from exc
        except Exception as exc:
            raise ServiceError(launch.name, f"preparation failed: {exc}", log) from exc
    env = {**os.environ, **(extra_env or {}), **launch.env}
    argv = list(launch.argv)
    if die_with_parent and shutil.which("setpriv"):  # util-linux: sets PR_SET_PDEATHSIG, then execs
        argv = ["setpriv", "--pdeathsig", "TERM", *argv]
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(launch.argv)}\n".encode())
        out.flush()
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=launch.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(launch.name, f"cannot execute {launch.argv[0]}: {exc}", log) from exc


def wait_ready(launch: Launch, proc: subprocess.Popen | int, log: Path) -> str:
    """Block until the health check passes; fail fast when the process exits first.

    `proc` is our child (its exit code is known) or the pid of a process started by an earlier `up`.
    """
    deadline = time.monotonic() + launch.timeout_s
    pid = proc if isinstance(proc, int) else proc.pid
    last_error = "no answer yet"
    while True:
        code = proc.poll() if isinstance(proc, subprocess.Popen) else (None if alive(pid) else "?")
        if code is not None:
            hint = last_log_line(log)
            reason = f"exited with code {code} while starting" + (f": {hint}" if hint else "")
            raise ServiceError(launch.name, reason, log)
        try:
            return launch.check()
        except Incompatible as exc:  # answers, but will never do: say so now, not after the timeout
            stop(pid)
            raise ServiceError(launch.name, str(exc), log) from exc
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"[:300]
        if time.monotonic() > deadline:
            stop(pid)
            raise ServiceError(launch.name, f"not healthy after {launch.timeout_s:.0f}s ({last_error})", log)
        time.sleep(0.25)


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot): with the pid, it names one process for good."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """The argv of `pid` ([] if it is gone): tells our service from another process that reuses its pid."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def stop(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group led by `pid` (the process itself if it leads none), then SIGKILL."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return
    target = group if group == pid else None

    def send(sig: int) -> None:
        try:
            if target is not None:
                os.killpg(target, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    send(signal.SIGCONT)  # a stopped (hung, SIGSTOPped) process must run to act on the SIGTERM
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            break
        time.sleep(0.1)
    send(signal.SIGKILL)  # stragglers of the group (workers) even when the leader exited
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
