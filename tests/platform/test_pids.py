"""`pids.alive`, the one check both the local-mode supervisor and the Spark scratch cleanup decide by."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mlops.pids import alive


def test_a_running_process_is_alive_and_an_exited_unreaped_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert alive(os.getpid()) and alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(child.pid) and time.monotonic() < deadline:  # not reaped: a zombie until `wait`
            time.sleep(0.05)
        assert not alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid)
