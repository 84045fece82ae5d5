"""The verifier's comparison and statistics (pure logic): it must be able to fail."""

from __future__ import annotations

import random
from types import SimpleNamespace

from mlops import schemas
from mlops.consumer.verify import compare, make_requests, malformed_messages, percentile
from mlops.schemas import ScoreRequest, TopKRequest

INFO = SimpleNamespace(model_version="3", feature_set="fs1")


def _score(scores, version="3", fallback=False):
    request = ScoreRequest("r", 5, tuple(scores))
    return schemas.parse_result(schemas.score_result(request, scores, version, "fs1", fallback, "t"))


def test_compare_accepts_equal_and_names_each_difference():
    request = ScoreRequest("r", 5, (1, 2))
    expected = {"scores": {"1": 0.25, "2": 0.75}, "fallback": False}
    assert compare(_score({1: 0.25, 2: 0.75}), expected, request, INFO) is None
    assert "score differs" in compare(_score({1: 0.25, 2: 0.7501}), expected, request, INFO)
    assert "scored movies" in compare(_score({1: 0.25}), expected, request, INFO)
    assert "model_version" in compare(_score({1: 0.25, 2: 0.75}, version="2"), expected, request, INFO)
    assert "fallback" in compare(_score({1: 0.25, 2: 0.75}, fallback=True), expected, request, INFO)


def test_compare_top_k_checks_order():
    request = TopKRequest("r", 5, 2)
    got = schemas.parse_result(schemas.topk_result(request, [(7, 0.9), (8, 0.8)], "3", "fs1", False, "t"))
    assert compare(got, {"recommendations": [(7, 0.9), (8, 0.8)], "fallback": False}, request, INFO) is None
    assert "recommended" in compare(got, {"recommendations": [(8, 0.9), (7, 0.8)], "fallback": False}, request, INFO)


def test_request_mix_and_malformed_set():
    requests = make_requests([1, 2, 3], list(range(1, 50)), 200, random.Random(1), "x", unknown_users=4)
    assert len({r.request_id for r in requests}) == 200
    assert sum(r.user_id > 3 for r in requests) == 4
    assert 20 < sum(isinstance(r, TopKRequest) for r in requests) < 100
    for raw, reason in malformed_messages("x"):
        try:
            schemas.parse_request(raw)
        except schemas.InvalidRequest as exc:
            assert exc.reason == reason
        else:
            raise AssertionError(f"{raw[:60]!r} was accepted")


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99, 100)
