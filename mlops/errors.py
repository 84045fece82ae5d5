"""Error types whose class decides what the orchestrator does with a failure."""

from __future__ import annotations


class DataError(Exception):
    """Bad input data or a missing upstream output: retrying cannot help, so the step fails at once.

    The message names the file, line or column, and the rule that was broken.
    """
