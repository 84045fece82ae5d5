"""Whether a process id still names a running process.

One check for the two places that decide by it: the local-mode supervisor (is a service still up) and
the Spark scratch cleanup (may a step's directory go). Below both layers, it imports nothing of the package.
"""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int) -> bool:
    """True while `pid` runs: a zombie (exited, not yet reaped) is gone, another user's process is alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
