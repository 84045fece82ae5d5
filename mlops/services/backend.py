"""What the CLI needs from a way of running the stack: native processes (local) or Docker Compose."""

from __future__ import annotations

from typing import Protocol


class Backend(Protocol):
    """Both backends offer these verbs, so `cli` never asks which one runs the stack."""

    def up(self) -> None:
        """Start or repair every service; returns only when all are healthy, raises ServiceError otherwise."""

    def down(self, purge: bool) -> None:
        """Stop what this project started; `purge` also deletes the local state."""

    def status(self) -> int:
        """Print the services table and the stream/model report; non-zero when a service is down."""

    def restart_consumers(self) -> None:
        """(Re)start the inference consumers, e.g. after the pipeline registered a new champion."""

    def urls(self) -> dict[str, str]:
        """The UIs and endpoints a user opens, by name."""
