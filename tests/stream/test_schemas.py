"""Request validation: each rejection carries the right reason code and names the field (pure logic)."""

from __future__ import annotations

import json

import pytest

from mlops import schemas
from mlops.schemas import InvalidRequest, ScoreRequest, TopKRequest, parse_request


def _raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_valid_score_and_topk_round_trip():
    score = parse_request(_raw({"request_id": "a", "user_id": 7, "movie_ids": [1, 2, 3]}))
    assert score == ScoreRequest("a", 7, (1, 2, 3))
    topk = parse_request(_raw({"request_id": "b", "user_id": 7, "k": 10, "extra": "ignored"}))
    assert topk == TopKRequest("b", 7, 10)
    assert parse_request(schemas.encode_request(score)) == score
    assert parse_request(schemas.encode_request(topk)) == topk


@pytest.mark.parametrize(
    ("raw", "reason", "words"),
    [
        (b"not json", schemas.NOT_JSON, "not JSON"),
        (b"\xff\xfe", schemas.NOT_JSON, "not JSON"),
        (None, schemas.NOT_JSON, "tombstone"),
        (b"[1, 2]", schemas.NOT_OBJECT, "JSON object"),
        (_raw({"user_id": 1, "k": 3}), schemas.MISSING_FIELD, "'request_id'"),
        (_raw({"request_id": "r", "k": 3}), schemas.MISSING_FIELD, "'user_id'"),
        (_raw({"request_id": "r", "user_id": 1}), schemas.MISSING_FIELD, "'movie_ids'"),
        (_raw({"request_id": 5, "user_id": 1, "k": 3}), schemas.BAD_REQUEST_ID, "'request_id'"),
        (_raw({"request_id": "", "user_id": 1, "k": 3}), schemas.BAD_REQUEST_ID, "'request_id'"),
        (_raw({"request_id": "r", "user_id": "1", "k": 3}), schemas.WRONG_TYPE, "'user_id' must be an int"),
        (_raw({"request_id": "r", "user_id": 1.5, "k": 3}), schemas.WRONG_TYPE, "'user_id' must be an int"),
        (_raw({"request_id": "r", "user_id": True, "k": 3}), schemas.WRONG_TYPE, "'user_id' must be an int"),
        (_raw({"request_id": "r", "user_id": 1, "k": "3"}), schemas.WRONG_TYPE, "'k' must be an int"),
        (_raw({"request_id": "r", "user_id": 1, "k": 0}), schemas.K_OUT_OF_RANGE, "1..100"),
        (_raw({"request_id": "r", "user_id": 1, "k": 101}), schemas.K_OUT_OF_RANGE, "1..100"),
        (_raw({"request_id": "r", "user_id": 1, "movie_ids": 3}), schemas.WRONG_TYPE, "'movie_ids' must be an array"),
        (_raw({"request_id": "r", "user_id": 1, "movie_ids": [1, "x"]}), schemas.WRONG_TYPE, "'movie_ids[1]'"),
        (_raw({"request_id": "r", "user_id": 1, "movie_ids": []}), schemas.EMPTY_MOVIE_IDS, "not be empty"),
        (_raw({"request_id": "r", "user_id": 1, "movie_ids": list(range(1001))}), schemas.TOO_MANY_MOVIE_IDS, "1001"),
        (_raw({"request_id": "r", "user_id": 1, "movie_ids": [1], "k": 2}), schemas.AMBIGUOUS, "not both"),
        (_raw({"request_id": "r", "user_id": -1, "k": 2}), schemas.ID_OUT_OF_RANGE, "'user_id' is -1"),
        (_raw({"request_id": "r", "user_id": 2**64, "k": 2}), schemas.ID_OUT_OF_RANGE, "'user_id'"),
        (_raw({"request_id": "r", "user_id": 1, "movie_ids": [3, -5]}), schemas.ID_OUT_OF_RANGE, "'movie_ids[1]'"),
        (b"{" + b" " * schemas.MAX_MESSAGE_BYTES + b"}", schemas.OVERSIZED, "bytes"),
        (_raw({"request_id": "r", "user_id": 1, "k": 2, "origin": "robot"}), schemas.BAD_ORIGIN, "'robot'"),
        (_raw({"request_id": "r", "user_id": 1, "k": 2, "origin": None}), schemas.BAD_ORIGIN, "'null'"),
        (_raw({"request_id": "r", "user_id": 1, "k": 2, "origin": ["user"]}), schemas.BAD_ORIGIN, "'array'"),
    ],
)
def test_rejections_name_reason_and_field(raw, reason, words):
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw)
    assert info.value.reason == reason
    assert reason in schemas.REASONS
    assert words in str(info.value)


def test_results_follow_the_contract():
    score_request = ScoreRequest("r1", 3, (10, 11))
    score = schemas.parse_result(schemas.score_result(score_request, {10: 0.25, 11: 0.5}, "4", "v1", False, "t"))
    assert score["scores"] == {"10": 0.25, "11": 0.5}
    assert (score["model_version"], score["feature_set"], score["fallback"]) == ("4", "v1", False)
    topk_request = TopKRequest("r2", 3, 2)
    topk = schemas.parse_result(schemas.topk_result(topk_request, [(5, 0.9), (6, 0.8)], "4", "v1", True, "t"))
    assert topk["recommendations"] == [{"movie_id": 5, "score": 0.9}, {"movie_id": 6, "score": 0.8}]
    assert topk["fallback"] is True
    assert (score["variant"], topk["variant"]) == ("champion", "champion")
    # Who asked: the digest of the canonical request, equal for the same request however it was spelled.
    assert score["request_digest"] == schemas.request_digest(parse_request(b'{"user_id":3,"movie_ids":[10,11],'
                                                                           b' "request_id": "r1"}'))  # fmt: skip
    assert score["request_digest"] != schemas.request_digest(ScoreRequest("r1", 4, (10, 11)))
    assert score["request_digest"] != schemas.request_digest(ScoreRequest("r1", 3, (10, 12)))
    with pytest.raises(ValueError, match="model_version"):
        schemas.parse_result(b'{"request_id": "x", "user_id": 1, "scores": {}}')


def test_dlq_record_keeps_original_bytes_and_source():
    original = b"\x00\xffnot json"
    doc = schemas.parse_dlq_record(
        schemas.dlq_record(original, b"7", schemas.NOT_JSON, "message is not JSON", "inference-requests", 2, 41)
    )
    assert doc["original"] == original
    assert (doc["reason"], doc["source_topic"], doc["source_partition"], doc["source_offset"]) == (
        schemas.NOT_JSON,
        "inference-requests",
        2,
        41,
    )
    assert doc["failed_at"].endswith("Z")


def test_dlq_record_truncates_huge_originals_and_says_so():
    huge = b"x" * (schemas.MAX_DLQ_ORIGINAL_BYTES + 10)
    doc = schemas.parse_dlq_record(schemas.dlq_record(huge, None, schemas.OVERSIZED, "big", "t", 0, 1))
    assert doc["original"] == huge[: schemas.MAX_DLQ_ORIGINAL_BYTES]
    assert (doc["original_size"], doc["original_truncated"]) == (len(huge), True)


def test_the_origin_is_user_unless_the_platform_says_so_and_travels_to_the_result():
    """`origin` (docs/contracts.md): absent = "user"; a platform request keeps it on the wire and in its
    stored result, where the feedback join reads it; a user request's wire form and result are unchanged."""
    user = parse_request(_raw({"request_id": "a", "user_id": 7, "k": 10}))
    assert user.origin == schemas.USER and user == parse_request(_raw({"request_id": "a", "user_id": 7, "k": 10,
                                                                        "origin": "user"}))  # fmt: skip
    platform = parse_request(_raw({"request_id": "b", "user_id": 7, "movie_ids": [1], "origin": "platform"}))
    assert platform == ScoreRequest("b", 7, (1,), schemas.PLATFORM)
    assert parse_request(schemas.encode_request(platform)) == platform
    assert b"origin" not in schemas.encode_request(user)
    assert schemas.request_digest(platform) != schemas.request_digest(ScoreRequest("b", 7, (1,)))
    stored = schemas.parse_result(schemas.score_result(platform, {1: 0.5}, "4", "v1", False, "t"))
    assert stored["origin"] == "platform"
    assert "origin" not in schemas.parse_result(schemas.topk_result(user, [(5, 0.9)], "4", "v1", False, "t"))
