"""Failures said in words (pure): what the pages show instead of a client library's repr."""

from __future__ import annotations

import requests

from mlops.console import words


def test_a_refused_http_connection_names_the_server_only():
    try:
        requests.get("http://127.0.0.1:1/health", timeout=2)
    except requests.RequestException as exc:
        said = words.describe(exc)
    assert said == "the server at http://127.0.0.1:1 is not reachable (connection refused or reset)"


def test_our_own_sentences_stay_as_they_are_and_others_get_their_type():
    assert words.describe(ConnectionError("nothing listens on 127.0.0.1:9")) == "nothing listens on 127.0.0.1:9"
    assert words.describe(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert words.describe(RuntimeError("ours"), plain=(RuntimeError,)) == "ours"
