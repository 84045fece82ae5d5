"""Every page with every service down (nothing listens on the session's ports): a sentence, never a trace.

The app runs in-process (Starlette's test client); the servers it would talk to are simply not started.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from mlops.console.app import create_app

PAGES = ("/", "/stream", "/kafka", "/kafka/dlq", "/model", "/try", "/try?user=1")


@pytest.fixture
def client(base_settings):
    with TestClient(create_app(base_settings, sample=False), follow_redirects=False) as c:
        yield c


def login(client, base_settings, password=None):
    return client.post(
        "/login",
        data={
            "username": base_settings.airflow_admin_user,
            "password": password or base_settings.airflow_admin_password,
            "next": "/model",
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
    assert client.get("/logout").status_code == 303
    client.cookies.clear()
    assert client.get("/").status_code == 303


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
    assert "The feature store (Redis at" in bodies["/try?user=1"]


def test_a_bad_user_id_is_answered_in_words(client, base_settings):
    login(client, base_settings)
    response = client.post("/try", data={"user": "abc"})
    assert response.status_code == 200
    assert "“abc” is not a user id" in response.text
