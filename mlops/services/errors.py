"""The one error type of the service manager: it always names the service, the reason and the log."""

from __future__ import annotations

from pathlib import Path


class ServiceError(RuntimeError):
    """A service could not be started, checked or stopped; printed as one line to the user."""

    def __init__(self, service: str, reason: str, log: Path | None = None) -> None:
        self.service = service
        self.reason = reason
        self.log = log
        where = f" (log: {log})" if log else ""
        super().__init__(f"{service}: {reason}{where}")
