"""The console's login: signed sessions that logout revokes, CSRF tokens, credential checks, the throttle (pure)."""

from __future__ import annotations

from mlops.console import auth


def test_a_session_names_its_user_until_it_expires():
    key = auth.new_key()
    cookie = auth.make_session(key, "admin", now=1000, lifetime_s=60)
    assert auth.session_of(key, cookie, now=1059).user == "admin"
    assert auth.session_of(key, cookie, now=1061) is None


def test_a_forged_or_foreign_session_is_refused():
    key = auth.new_key()
    cookie = auth.make_session(key, "admin", now=1000)
    sid, _user, expiry, signature = cookie.split("|")
    assert auth.session_of(key, f"{sid}|root|{expiry}|{signature}", now=1000) is None  # another user
    assert auth.session_of(key, f"{sid}|admin|{int(expiry) + 999}|{signature}", now=1000) is None  # extended
    assert auth.session_of(key, f"other|admin|{expiry}|{signature}", now=1000) is None  # another session id
    assert auth.session_of(auth.new_key(), cookie, now=1000) is None  # signed by another process's key
    for junk in ("", "admin", "a|b", "||", "|||", f"{sid}|admin|²|{signature}", None):
        assert auth.session_of(key, junk, now=1000) is None


def test_logout_revokes_the_session_even_for_a_copy_of_its_cookie():
    sessions = auth.Sessions()
    cookie = auth.make_session(sessions.key, "admin", now=1000, lifetime_s=60)
    other = auth.make_session(sessions.key, "admin", now=1000, lifetime_s=600)
    session = sessions.current(cookie, now=1001)
    sessions.revoke(session, now=1001)
    assert sessions.current(cookie, now=1002) is None
    assert sessions.current(other, now=1002).user == "admin"  # only that session
    sessions.revoke(sessions.current(other, now=1100), now=1100)
    assert list(sessions.revoked) == [other.split("|")[0]]  # the first one expired at 1060: pruned


def test_a_csrf_token_is_bound_to_its_session_and_key():
    key = auth.new_key()
    token = auth.csrf_token(key, "sid-1")
    assert auth.csrf_ok(key, "sid-1", token)
    assert not auth.csrf_ok(key, "sid-2", token)
    assert not auth.csrf_ok(auth.new_key(), "sid-1", token)
    for binding, junk in (("sid-1", ""), ("sid-1", None), (None, token), ("", token)):
        assert not auth.csrf_ok(key, binding, junk)


def test_failed_logins_lock_the_client_out_for_the_rest_of_the_window():
    throttle = auth.LoginThrottle(failures=3, window_s=60)
    for t in (0, 10, 20):
        assert throttle.retry_after("1.2.3.4", now=t) == 0
        throttle.failed("1.2.3.4", now=t)
    assert throttle.retry_after("1.2.3.4", now=21) == 39  # until the first failure leaves the window
    assert throttle.retry_after("5.6.7.8", now=21) == 0  # per client
    assert throttle.retry_after("1.2.3.4", now=61) == 0
    throttle.failed("1.2.3.4", now=62)
    throttle.succeeded("1.2.3.4")
    assert throttle.retry_after("1.2.3.4", now=63) == 0


def test_credentials_must_match_both_fields():
    assert auth.credentials_match("admin", "pw", "admin", "pw")
    assert not auth.credentials_match("admin", "wrong", "admin", "pw")
    assert not auth.credentials_match("root", "pw", "admin", "pw")
    assert not auth.credentials_match("", "", "admin", "pw")


def test_after_login_only_paths_of_this_site():
    assert auth.safe_next("/kafka?topic=x") == "/kafka?topic=x"
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", "", None, "kafka"):
        assert auth.safe_next(target) == "/"
