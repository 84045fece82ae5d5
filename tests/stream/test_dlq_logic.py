"""Reading dead letters (pure): decoding, the verifier's tag, counts by reason, the newest N."""

from __future__ import annotations

from mlops import dlq, schemas
from mlops.consumer.verify import malformed_messages


def _letter(offset: int, original: bytes, reason: str) -> dlq.DeadLetter:
    raw = schemas.dlq_record(original, b"7", reason, "why", "inference-requests", 1, offset)
    return dlq.decode(0, offset, raw)


def test_every_message_verify_sends_on_purpose_carries_its_tag_and_nothing_else_does():
    tag = dlq.verifier_tag()
    assert tag.startswith(dlq.VERIFIER_PREFIX)
    for raw, _reason in malformed_messages(tag):
        assert dlq.from_verifier(raw[: schemas.MAX_DLQ_ORIGINAL_BYTES]), raw[:80]
    assert not dlq.from_verifier(b"verify-me please")  # a client's text that merely starts the same way
    assert not dlq.from_verifier(b'{"request_id": "cli-1", "user_id": 1, "k": 0}')


def test_decode_tally_and_select():
    tag = dlq.verifier_tag()
    letters = [
        _letter(0, b"not json at all", schemas.NOT_JSON),
        _letter(1, f"this is not json {tag}".encode(), schemas.NOT_JSON),
        _letter(2, b'{"request_id": "a", "user_id": 1, "k": 0}', schemas.K_OUT_OF_RANGE),
        _letter(3, b'{"request_id": "b", "user_id": 1, "k": 500}', schemas.K_OUT_OF_RANGE),
    ]
    first = letters[0]
    assert (first.reason, first.detail, first.source, first.key, first.verifier) == (
        "not_json",
        "why",
        "inference-requests p1@0",
        b"7",
        False,
    )
    assert letters[1].verifier and letters[1].as_dict()["from_verify"] is True
    counts = dlq.tally(letters)
    assert counts.by_reason == {"k_out_of_range": 2, "not_json": 1} and counts.verifier == 1 and counts.total == 4
    assert [d.offset for d in dlq.select(letters, "k_out_of_range", last=1)] == [3]
    assert [d.offset for d in dlq.select(letters, None, last=2)] == [2, 3]
    assert dlq.select(letters, last=0) == []


def test_a_record_not_in_the_dlq_format_is_shown_not_raised():
    letter = dlq.decode(2, 9, b"\xff garbage")
    assert letter.reason == "(unreadable record)" and letter.original == b"\xff garbage" and not letter.verifier
