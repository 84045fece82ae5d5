"""Error types whose class decides what the orchestrator does with a failure."""

from __future__ import annotations


class DataError(Exception):
    """Bad input data or a missing upstream output: retrying cannot help, so the step fails at once.

    The message names the file, line or column, and the rule that was broken.
    """


class CapacityError(DataError):
    """The input is too large for the configured disk or memory: a retry would fail the same way, so the
    step stops before it starts, naming the sizes and the setting to change."""


class ModelFormatError(ValueError):
    """A registered model this code cannot serve (no model family, or an unknown one): refused at load, with
    why; a consumer keeps the model it has, and promotion treats such a champion as unable to serve."""
