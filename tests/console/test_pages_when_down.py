"""Every page with every service down (nothing listens on the session's ports): a sentence, never a trace.

The app runs in-process (Starlette's test client); the servers it would talk to are simply not started.
"""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from mlops.console.app import create_app

PAGES = ("/", "/stream", "/kafka", "/kafka/dlq", "/model", "/try", "/try?user=1")
HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}


@pytest.fixture
def client(base_settings):
    with TestClient(create_app(base_settings, sample=False), follow_redirects=False) as c:
        yield c


def csrf_of(page: str) -> str:
    """The CSRF token of the first form of a page."""
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the form carries no CSRF token"
    return match.group(1)


def login(client, base_settings, password=None):
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={
            "username": base_settings.airflow_admin_user,
            "password": password or base_settings.airflow_admin_password,
            "next": "/model",
            "csrf": token,
        },
    )


def test_every_page_needs_the_login(client):
    for page in (*PAGES, "/model/artifact?run_id=r&path=plots/x.png"):
        response = client.get(page)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), page
    assert client.get("/healthz").text == "ok"


def test_a_wrong_password_is_refused_and_the_right_one_lets_in(client, base_settings):
    refused = login(client, base_settings, password="not-the-password")
    assert refused.status_code == 401 and "Wrong user name or password" in refused.text
    assert client.get("/").status_code == 303
    accepted = login(client, base_settings)
    assert accepted.status_code == 303 and accepted.headers["location"] == "/model"
    assert client.get("/").status_code == 200


def test_every_page_says_in_words_what_is_down(client, base_settings):
    login(client, base_settings)
    began = time.monotonic()
    bodies = {}
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 200, page
        assert "Traceback" not in response.text and 'File "' not in response.text, page
        bodies[page] = response.text
    assert time.monotonic() - began < 60, "a page waited too long on a dead service"
    overview = bodies["/"]
    for service in ("redis", "kafka", "s3", "mlflow", "airflow", "inference-0"):
        assert f'<td>{service}</td><td class="down">down</td>' in overview, service
    assert (
        f"Could not read the last pipeline run from Airflow: the server at {base_settings.airflow_url} is not "
        "reachable" in overview
    )
    assert "Could not read the champion from MLflow" in overview
    assert "The broker could not be read" in bodies["/stream"]
    assert "0 of 1 inference consumer(s) answer" in bodies["/stream"]
    assert "Could not read the topics from the broker" in bodies["/kafka"]
    assert "is not reachable" in bodies["/kafka"]
    assert "Could not read the dead letters" in bodies["/kafka/dlq"]
    assert "MLflow at" in bodies["/model"] and "is not reachable" in bodies["/model"]
    assert 'value="1"' in bodies["/try?user=1"], "GET only fills the form in"
    asked = client.post("/try", data={"user": "1", "csrf": csrf_of(bodies["/try"])})
    assert asked.status_code == 200 and "The feature store (Redis at" in asked.text


def test_a_bad_user_id_is_answered_in_words(client, base_settings):
    login(client, base_settings)
    token = csrf_of(client.get("/try").text)
    for typed, words in (("abc", "“abc” is not a user id"), ("²", "“²” is not a user id")):
        response = client.post("/try", data={"user": typed, "csrf": token})
        assert response.status_code == 400 and words in response.text, typed


def test_every_answer_carries_the_security_headers(client, base_settings):
    answers = [client.get("/"), client.get("/login"), client.get("/healthz"), client.post("/login", data={})]
    login(client, base_settings)
    answers += [client.get(page) for page in PAGES] + [client.get("/no-such-page")]
    for response in answers:
        assert {k: response.headers.get(k) for k in HEADERS} == HEADERS, response.url
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src" not in policy and "default-src 'none'" in policy


def test_a_state_change_needs_the_forms_csrf_token(client, base_settings):
    """Login, Try-it and logout refuse a post without the token of this browser's form (a page of another site
    can send the post but cannot read the token); a GET changes nothing."""
    no_token = client.post("/login", data={"username": base_settings.airflow_admin_user,
                                           "password": base_settings.airflow_admin_password})  # fmt: skip
    assert no_token.status_code == 403 and "came from another site" in no_token.text
    assert client.get("/").status_code == 303, "no session from a post without the token"
    login(client, base_settings)
    assert client.post("/try", data={"user": "1"}).status_code == 403
    assert client.post("/try", data={"user": "1", "csrf": "0" * 64}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/").status_code == 200, "the refused logout left the session alone"
    assert client.get("/logout").status_code == 405, "logging out is a POST"


def test_logout_revokes_the_session_even_for_a_copied_cookie(client, base_settings):
    login(client, base_settings)
    copied = client.cookies.get("mlops_console_session")
    out = client.post("/logout", data={"csrf": csrf_of(client.get("/try").text)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    client.cookies.set("mlops_console_session", copied)
    assert client.get("/").status_code == 303, "a copy of a logged-out session's cookie is refused"


def test_failed_logins_are_throttled_per_client(client, base_settings):
    for _ in range(5):
        assert login(client, base_settings, password="not-the-password").status_code == 401
    locked = login(client, base_settings)  # even the right password waits
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "Too many failed logins" in locked.text


def test_no_body_over_the_cap_is_read_before_or_after_the_login(client, base_settings):
    big = "x" * 20_000
    assert (
        client.post(
            "/login", content=f"username={big}", headers={"content-type": "application/x-www-form-urlencoded"}
        ).status_code
        == 413
    )
    assert client.post("/try", content=big).status_code == 413  # refused before the login check

    def chunks():  # no Content-Length: the cap holds while reading
        for _ in range(40):
            yield b"a" * 1024

    assert client.post("/login", content=chunks()).status_code == 413
