"""The console's login: signed session cookies and credential checks (pure)."""

from __future__ import annotations

from mlops.console import auth


def test_a_session_names_its_user_until_it_expires():
    key = auth.new_key()
    cookie = auth.make_session(key, "admin", now=1000, lifetime_s=60)
    assert auth.session_user(key, cookie, now=1059) == "admin"
    assert auth.session_user(key, cookie, now=1061) is None


def test_a_forged_or_foreign_session_is_refused():
    key = auth.new_key()
    cookie = auth.make_session(key, "admin", now=1000)
    _user, expiry, signature = cookie.split("|")
    assert auth.session_user(key, f"root|{expiry}|{signature}", now=1000) is None  # another user, same signature
    assert auth.session_user(key, f"admin|{int(expiry) + 999}|{signature}", now=1000) is None  # extended expiry
    assert auth.session_user(auth.new_key(), cookie, now=1000) is None  # signed by another process's key
    for junk in ("", "admin", "a|b", "||", None):
        assert auth.session_user(key, junk, now=1000) is None


def test_credentials_must_match_both_fields():
    assert auth.credentials_match("admin", "pw", "admin", "pw")
    assert not auth.credentials_match("admin", "wrong", "admin", "pw")
    assert not auth.credentials_match("root", "pw", "admin", "pw")
    assert not auth.credentials_match("", "", "admin", "pw")


def test_after_login_only_paths_of_this_site():
    assert auth.safe_next("/kafka?topic=x") == "/kafka?topic=x"
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", "", None, "kafka"):
        assert auth.safe_next(target) == "/"
