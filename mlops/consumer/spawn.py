"""A consumer process of a tool's own (the benchmarks, `verify --parity`): started on private topics, waited
for until healthy, stopped as the platform stops its consumers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from mlops.settings import PROJECT_ROOT, Settings

STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    """A TCP port free on loopback right now (for a consumer's /metrics)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A consumer process (`python argv...`), logging to LOCAL_DIR/logs/<log_name>.log."""

    def __init__(self, argv: list[str], log_name: str, settings: Settings, env: dict[str, str] | None = None) -> None:
        log_dir = settings.path("local_dir") / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{log_name}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
                                         cwd=PROJECT_ROOT, env={**os.environ, **(env or {})})  # fmt: skip

    def stop(self) -> None:
        """SIGTERM (the consumer commits and leaves its group), SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_healthy(port: int, process: Process) -> None:
    """Until the consumer's /healthz answers 200; RuntimeError naming its log when it exits or never does."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"consumer exited with code {process.proc.returncode}; see {process.log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"consumer not healthy after {STARTUP_TIMEOUT_S}s; see {process.log}")
