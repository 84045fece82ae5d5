"""Failures in words for the pages: what a reader can act on, not a client library's repr."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

SAID_PLAINLY = (ConnectionError, LookupError, PermissionError)
"""Exceptions whose message is already a sentence of ours (`MlflowProblem`, `NoAnswer` subclass RuntimeError
and are listed by the callers that raise them)."""


def describe(exc: BaseException, plain: tuple[type[BaseException], ...] = ()) -> str:
    """An exception as one short sentence: refused or timed-out HTTP connections said plainly, our own
    messages as they are, anything else as `Type: first line`."""
    if isinstance(exc, requests.ConnectionError):
        return f"the server at {_origin(exc)} is not reachable (connection refused or reset)"
    if isinstance(exc, requests.Timeout):
        return f"the server at {_origin(exc)} did not answer in time"
    first = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, SAID_PLAINLY + plain) and first:
        return first[:300]
    return f"{type(exc).__name__}: {first}"[:300]


def _origin(exc: requests.RequestException) -> str:
    url = getattr(exc.request, "url", None) or ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "its address"
