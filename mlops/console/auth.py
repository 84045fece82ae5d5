"""The console's login: signed sessions that logout revokes, CSRF tokens, and a login throttle (pure logic).

A successful login sets a session cookie `sid|user|expiry|signature` (HMAC-SHA256 with a key made at start;
`sid` random). The server keeps only the ids of sessions logged out before they expired (`Sessions`), so a
copied cookie dies with its logout; a restart makes a new key and so logs everyone out.
CSRF: every state-changing form carries `csrf_token(key, binding)`, an HMAC of what binds it to this browser:
the session id once logged in, or, on the login form itself, a random pre-login cookie (double submit). A
page of another site can neither read the token nor forge it.
Login throttle: LOGIN_FAILURES failed logins per client within LOGIN_WINDOW_S lock that client out for the
rest of the window (HTTP 429 with Retry-After); a success clears its record.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

COOKIE = "mlops_console_session"
LOGIN_COOKIE = "mlops_console_login"  # the pre-login CSRF binding
SESSION_SECONDS = 12 * 3600
LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 300.0
MAX_TRACKED_CLIENTS = 10_000  # the throttle forgets the oldest clients past this (bounded memory)


def new_key() -> bytes:
    """A random signing key per process: a restart invalidates every session."""
    return secrets.token_bytes(32)


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def credentials_match(user: str, password: str, expected_user: str, expected_password: str) -> bool:
    """Constant-time comparison of both fields (no early exit that would time-leak which one was wrong)."""
    user_ok = hmac.compare_digest(user.encode(), expected_user.encode())
    password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
    return user_ok and password_ok


def _signature(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def make_session(key: bytes, user: str, now: float | None = None, lifetime_s: float = SESSION_SECONDS) -> str:
    """A signed `sid|user|expiry|signature` cookie value, accepted by `session_of` until it expires."""
    expiry = int((time.time() if now is None else now) + lifetime_s)
    payload = f"{new_nonce()}|{user}|{expiry}"
    return f"{payload}|{_signature(key, payload)}"


@dataclass(frozen=True)
class Session:
    sid: str
    user: str
    expiry: int


def session_of(key: bytes, cookie: str | None, now: float | None = None) -> Session | None:
    """The session of a valid, unexpired cookie; None for anything else (absent, forged, expired)."""
    if not cookie:
        return None
    payload, _, signature = cookie.rpartition("|")
    sid, _, rest = payload.partition("|")
    user, _, expiry = rest.rpartition("|")
    if not sid or not user or not expiry.isascii() or not expiry.isdigit():
        return None
    if not hmac.compare_digest(signature, _signature(key, payload)):
        return None
    if int(expiry) < (time.time() if now is None else now):
        return None
    return Session(sid, user, int(expiry))


def csrf_token(key: bytes, binding: str) -> str:
    """The token a form must echo: bound to the session id (or the pre-login cookie) by the process's key."""
    return _signature(key, f"csrf|{binding}")


def csrf_ok(key: bytes, binding: str | None, token: str | None) -> bool:
    return bool(binding) and bool(token) and hmac.compare_digest(str(token), csrf_token(key, str(binding)))


@dataclass
class Sessions:
    """The process's key and the sessions logged out before their expiry (pruned once they expire)."""

    key: bytes = field(default_factory=new_key)
    revoked: dict[str, int] = field(default_factory=dict)

    def current(self, cookie: str | None, now: float | None = None) -> Session | None:
        session = session_of(self.key, cookie, now)
        return None if session is None or session.sid in self.revoked else session

    def revoke(self, session: Session, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.revoked = {sid: exp for sid, exp in self.revoked.items() if exp >= now}
        self.revoked[session.sid] = session.expiry


@dataclass
class LoginThrottle:
    """Failed logins per client in a sliding window; `retry_after` says how long a locked-out client waits."""

    failures: int = LOGIN_FAILURES
    window_s: float = LOGIN_WINDOW_S
    seen: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds until `client` may try again; 0 when it may now."""
        now = time.monotonic() if now is None else now
        times = self.seen.get(client)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times or len(times) < self.failures:
            return 0
        return max(1, int(times[0] + self.window_s - now + 0.999))

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if client not in self.seen and len(self.seen) >= MAX_TRACKED_CLIENTS:
            self.seen.pop(next(iter(self.seen)))
        self.seen.setdefault(client, deque(maxlen=self.failures)).append(now)

    def succeeded(self, client: str) -> None:
        self.seen.pop(client, None)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (never an open redirect to another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
