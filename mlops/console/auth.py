"""The console's login: the Airflow admin's user and password (one credential for the platform's UIs).

A successful login sets a session cookie `user|expiry|signature` (HMAC-SHA256 with a key made at start),
so nothing is stored on the server and a restart simply logs everyone out. Pure functions, unit-tested.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "mlops_console_session"
SESSION_SECONDS = 12 * 3600


def new_key() -> bytes:
    """A random signing key per process: sessions are never stored, and a restart invalidates them all."""
    return secrets.token_bytes(32)


def credentials_match(user: str, password: str, expected_user: str, expected_password: str) -> bool:
    """Constant-time comparison of both fields (no early exit that would time-leak which one was wrong)."""
    user_ok = hmac.compare_digest(user.encode(), expected_user.encode())
    password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
    return user_ok and password_ok


def _signature(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def make_session(key: bytes, user: str, now: float | None = None, lifetime_s: float = SESSION_SECONDS) -> str:
    """A signed `user|expiry|signature` cookie value, accepted by `session_user` until it expires."""
    expiry = int((time.time() if now is None else now) + lifetime_s)
    payload = f"{user}|{expiry}"
    return f"{payload}|{_signature(key, payload)}"


def session_user(key: bytes, cookie: str | None, now: float | None = None) -> str | None:
    """The user of a valid, unexpired session cookie; None for anything else (absent, forged, expired)."""
    if not cookie:
        return None
    payload, _, signature = cookie.rpartition("|")
    user, _, expiry = payload.rpartition("|")
    if not user or not expiry.isdigit():
        return None
    if not hmac.compare_digest(signature, _signature(key, payload)):
        return None
    if int(expiry) < (time.time() if now is None else now):
        return None
    return user


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (never an open redirect to another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
