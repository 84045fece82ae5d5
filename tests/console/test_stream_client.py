"""`stream_client` against the real broker and Redis with no consumer running: it says why there is no answer."""

from __future__ import annotations

import time

import pytest

from mlops import stream_client

pytestmark = pytest.mark.integration


def test_no_consumer_means_no_answer_said_plainly(settings):
    request = stream_client.topk_request(1, 10, prefix="test-noconsumer")
    began = time.monotonic()
    with pytest.raises(stream_client.NoAnswer, match=r"no answer to request test-noconsumer-\w+ within 2s: is an "
                                                     r"inference consumer running"):  # fmt: skip
        stream_client.ask(settings, request, timeout_s=2)
    assert time.monotonic() - began < 15


def test_a_broker_that_is_down_is_named(base_settings, free_port):
    dead = base_settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(stream_client.NoAnswer, match=r"could not send the request to inference-requests on 127\."):
        stream_client.send(dead, stream_client.topk_request(1), timeout_s=2)


def test_k_is_checked_before_anything_is_sent():
    with pytest.raises(ValueError, match="k is 0"):
        stream_client.topk_request(1, 0)
