"""The request parser against hostile input: any bytes end as a request or as InvalidRequest with a reason
code, never as another exception (pure logic, plus a bounded hypothesis fuzz)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops import schemas
from mlops.schemas import InvalidRequest, ScoreRequest, TopKRequest, parse_request

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reason(raw: bytes | None) -> str:
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw)
    assert info.value.reason in schemas.REASONS
    return info.value.reason


@pytest.mark.parametrize("n", [1_100, 10_000, schemas.MAX_MESSAGE_BYTES])
def test_deep_nesting_is_too_deep_not_a_crash(n):
    """~1,100 `[` used to raise RecursionError out of the parser and kill the consumer."""
    assert _reason(b"[" * n) == schemas.TOO_DEEP  # unclosed: the decoder's recursion guard trips first


@pytest.mark.parametrize("n", [schemas.MAX_DEPTH + 1, 1_100, 10_000])
def test_deep_but_well_formed_nesting_is_too_deep(n):
    assert _reason(b"[" * n + b"]" * n) == schemas.TOO_DEEP
    assert _reason(b'{"a":' * n + b"1" + b"}" * n) == schemas.TOO_DEEP
    assert _reason(b'{"request_id": "r", "user_id": 1, "k": 1, "x": ' + b"[" * n + b"]" * n + b"}") == schemas.TOO_DEEP


def test_depth_bound_holds_inside_an_ignored_field():
    nested = 1
    for _ in range(schemas.MAX_DEPTH - 1):  # object + MAX_DEPTH - 1 levels = MAX_DEPTH: accepted
        nested = [nested]
    ok = {"request_id": "r", "user_id": 1, "k": 3, "extra": nested}
    assert parse_request(json.dumps(ok).encode()) == TopKRequest("r", 1, 3)
    ok["extra"] = [nested]
    with pytest.raises(InvalidRequest, match=f"nests {schemas.MAX_DEPTH + 1} levels deep") as info:
        parse_request(json.dumps(ok).encode())
    assert info.value.reason == schemas.TOO_DEEP
    # Brackets inside strings are text, not nesting.
    assert parse_request(json.dumps({"request_id": "[" * 100, "user_id": 1, "k": 1}).encode()).k == 1


@pytest.mark.parametrize(
    ("doc", "reason", "words"),
    [
        ({"request_id": None, "user_id": 1, "k": 1}, schemas.WRONG_TYPE, "'request_id' is null"),
        ({"request_id": "r", "user_id": None, "k": 1}, schemas.WRONG_TYPE, "'user_id' is null"),
        ({"request_id": "r", "user_id": 1, "k": None}, schemas.WRONG_TYPE, "'k' is null"),
        ({"request_id": "r", "user_id": 1, "movie_ids": None}, schemas.WRONG_TYPE, "'movie_ids' is null"),
        ({"request_id": "r", "user_id": 1, "movie_ids": [1, None]}, schemas.WRONG_TYPE, "got null"),
        ({"request_id": "r", "user_id": 1.0, "k": 1}, schemas.WRONG_TYPE, "got number"),
        ({"request_id": "r", "user_id": 1, "movie_ids": [2.0]}, schemas.WRONG_TYPE, "got number"),
        ({"request_id": "r", "user_id": 1, "k": True}, schemas.WRONG_TYPE, "got boolean"),
        ({"request_id": "r", "user_id": 1, "movie_ids": [False]}, schemas.WRONG_TYPE, "got boolean"),
        ({"request_id": "r", "user_id": [1], "k": 1}, schemas.WRONG_TYPE, "got array"),
        ({"request_id": "r", "user_id": {"id": 1}, "k": 1}, schemas.WRONG_TYPE, "got object"),
        ({"request_id": "r", "user_id": 2**63, "k": 1}, schemas.ID_OUT_OF_RANGE, "2**63-1"),
        ({"request_id": "r", "user_id": 1, "movie_ids": [-(2**100)]}, schemas.ID_OUT_OF_RANGE, "digits"),
        ({"request_id": "r", "user_id": 1, "k": 10**30}, schemas.K_OUT_OF_RANGE, "1..100"),
        ({"request_id": "\ud800", "user_id": 1, "k": 1}, schemas.BAD_REQUEST_ID, "surrogate"),
        ({"request_id": ["r"], "user_id": 1, "k": 1}, schemas.BAD_REQUEST_ID, "'request_id'"),
    ],
)
def test_nulls_types_and_ranges_anywhere_have_a_reason(doc, reason, words):
    raw = json.dumps(doc).encode()
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw)
    assert info.value.reason == reason
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", schemas.NOT_JSON),
        (b"\xc3\x28", schemas.NOT_JSON),  # invalid UTF-8
        (b'{"request_id": "r\xff", "user_id": 1, "k": 1}', schemas.NOT_JSON),
        (b'{"request_id": "r", "user_id": ' + b"9" * 5000 + b', "k": 1}', schemas.NOT_JSON),  # int digits limit
        (b'{"request_id": "r", "user_id": NaN, "k": 1}', schemas.WRONG_TYPE),
        (b'{"request_id": "r", "user_id": 1e999, "k": 1}', schemas.WRONG_TYPE),
        (b"null", schemas.NOT_OBJECT),
        (b'"text"', schemas.NOT_OBJECT),
        (b"\x00" * 100, schemas.NOT_JSON),
    ],
)
def test_hostile_bytes_have_a_reason(raw, reason):
    assert _reason(raw) == reason


def test_dlq_record_survives_any_detail_text():
    record = schemas.dlq_record(b"\xff", None, schemas.NOT_JSON, "bad \ud800 text", "t", 0, 1)
    assert schemas.parse_dlq_record(record)["detail"].startswith("bad ")


# --- fuzz ----------------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=12,
)  # fmt: skip
FIELDS = st.sampled_from(["request_id", "user_id", "movie_ids", "k", "extra"])


def _check(raw: bytes) -> None:
    try:
        request = parse_request(raw)
    except InvalidRequest as exc:
        assert exc.reason in schemas.REASONS
        return
    # Accepted: it must be a request the model can take, and survive its own wire form.
    assert isinstance(request, ScoreRequest | TopKRequest)
    assert 0 <= request.user_id <= schemas.MAX_ID
    assert parse_request(schemas.encode_request(request)) == request


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_any_bytes(raw):
    _check(raw)


@settings(FUZZ, max_examples=800)
@given(st.dictionaries(FIELDS, JSON_VALUES, max_size=5))
def test_fuzz_request_shaped_documents(doc):
    try:
        raw = json.dumps(doc).encode("utf-8", errors="surrogatepass")
    except ValueError:
        raw = json.dumps(doc, allow_nan=True).encode("utf-8", errors="surrogatepass")
    _check(raw)


@FUZZ
@given(
    st.builds(
        lambda user, movies: json.dumps({"request_id": "r", "user_id": user, "movie_ids": movies}).encode(),
        st.integers(min_value=0, max_value=1000),
        st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=20),
    ),
    st.data(),
)
def test_fuzz_mutated_valid_requests(raw, data):
    """Flip, cut and splice a valid request's bytes: every mutant parses or has a reason."""
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    insert = data.draw(st.binary(max_size=8) | st.sampled_from([b"[" * 2000, b"{", b"null", b"\xff", b'"']))
    _check(raw[:cut] + insert + raw[cut + data.draw(st.integers(min_value=0, max_value=4)) :])
