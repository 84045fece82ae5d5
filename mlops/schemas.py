"""The Kafka messages of the stream (docs/contracts.md), defined once: requests, results, feedback, dead letters.

Requests are validated by hand rather than with a schema library: the consumer parses thousands per
second, and every rejection must say which field broke which rule, with a short `reason` code that
stays a bounded Prometheus label. `parse_request` accepts any bytes and raises nothing but
`InvalidRequest`: one message must never be able to stop a consumer. JSON nesting deeper than
MAX_DEPTH (a request needs 2: the object and `movie_ids`) is rejected as `too_deep`, and so is input
that reaches the decoder's own recursion guard.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from mlops.variants import CHAMPION

MAX_MESSAGE_BYTES = 64 * 1024
"""Larger requests are rejected before parsing: no legitimate request comes near this."""
MAX_MOVIE_IDS = 1000
MAX_REQUEST_ID_CHARS = 200
MIN_K, MAX_K = 1, 100
MAX_ID = 2**63 - 1
"""Ids are non-negative and fit an int64, the type every feature table and the model's input use."""
MIN_RATING, MAX_RATING = 0.5, 5.0
"""The MovieLens rating scale: the data-quality gate checks ratings against it, and so do feedback events."""
MAX_DEPTH = 8
"""Deepest JSON nesting accepted (objects and arrays). A request needs 2; the slack is for ignored extra
fields. Far below the decoder's recursion limit, which ~1,000 `[` would otherwise hit."""

# Reason codes of rejected messages (DLQ `reason`, metric label `reason`).
OVERSIZED = "oversized"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
AMBIGUOUS = "ambiguous_request"
K_OUT_OF_RANGE = "k_out_of_range"
EMPTY_MOVIE_IDS = "empty_movie_ids"
TOO_MANY_MOVIE_IDS = "too_many_movie_ids"
BAD_REQUEST_ID = "bad_request_id"
ID_OUT_OF_RANGE = "id_out_of_range"
TOO_DEEP = "too_deep"
REQUEST_ID_CONFLICT = "request_id_conflict"
"""The request_id already answered a different request (another user, other movies): never answered
with that request's result."""
PROCESSING_ERROR = "processing_error"
"""A well-formed request the model could not answer (a bug, not the client's fault): dead-lettered so that
it cannot block its partition."""
BAD_ORIGIN = "bad_origin"
"""`origin` is neither "user" nor "platform"."""
UNPUBLISHABLE = "unpublishable"
"""A record the broker refused for itself (too large, invalid): in its place the DLQ gets this dead letter,
which keeps only the record's size and digest, so that nothing can stop the partition."""
REASONS = (
    OVERSIZED, NOT_JSON, NOT_OBJECT, MISSING_FIELD, WRONG_TYPE, AMBIGUOUS,
    K_OUT_OF_RANGE, EMPTY_MOVIE_IDS, TOO_MANY_MOVIE_IDS, BAD_REQUEST_ID, ID_OUT_OF_RANGE, TOO_DEEP,
    REQUEST_ID_CONFLICT, BAD_ORIGIN, PROCESSING_ERROR, UNPUBLISHABLE,
)  # fmt: skip

# Reasons of dead-lettered feedback events (the feedback DLQ's `reason`), beyond the shared ones above.
RATING_OUT_OF_RANGE = "rating_out_of_range"
BAD_TIMESTAMP = "bad_timestamp"
EARLIEST_FEEDBACK = datetime(1995, 1, 1, tzinfo=UTC)
"""No rating is older than MovieLens' own first ones: an earlier `ts` (epoch 0, milliseconds read as seconds) is
dead-lettered `bad_timestamp`. Events dated ahead of the clock are refused by the feedback reader."""
USER_MISMATCH = "user_mismatch"
"""The event names a request_id whose stored result is for another user: crediting it would be wrong."""
UNKNOWN_MOVIE = "unknown_movie"
"""The event rates a movie the serving catalog does not have: no user history may name it."""
FEEDBACK_REASONS = (
    OVERSIZED, NOT_JSON, NOT_OBJECT, MISSING_FIELD, WRONG_TYPE, BAD_REQUEST_ID, ID_OUT_OF_RANGE, TOO_DEEP,
    RATING_OUT_OF_RANGE, BAD_TIMESTAMP, USER_MISMATCH, UNKNOWN_MOVIE, PROCESSING_ERROR, UNPUBLISHABLE,
)  # fmt: skip

SCORE, TOPK = "score", "topk"
USER, PLATFORM = "user", "platform"
ORIGINS = (USER, PLATFORM)
"""Who sent a request: a user (the default), or the platform itself (`verify`, the poke verbs, the console's
Try-it, `verify --parity`). Platform requests are answered as any other, and never counted in the drift windows,
the online metrics or the feedback join (docs/contracts.md): the platform's own checks must not move what
monitors users."""


class InvalidRequest(ValueError):
    """A request that can never be answered; `reason` is a code from REASONS, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """Score these movies for this user."""

    request_id: str
    user_id: int
    movie_ids: tuple[int, ...]
    origin: str = USER
    kind = SCORE


@dataclass(frozen=True, slots=True)
class TopKRequest:
    """The user's top-k movies among those they have not rated."""

    request_id: str
    user_id: int
    k: int
    origin: str = USER
    kind = TOPK


Request = ScoreRequest | TopKRequest


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass; `true` is not a user id


_JSON_TYPES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object"}  # fmt: skip


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages (`null`, not `NoneType`)."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _shown(number: int) -> str:
    """An integer for an error message: the decoder accepts 4,300 digits, a message needs no more than 25."""
    text = str(number)
    return text if len(text) <= 25 else f"{text[:12]}...({len(text)} digits)"


def _depth(doc: object) -> int:
    """Nesting depth of a decoded document, walked without recursion (1 for a flat object)."""
    deepest, level = 0, [doc]
    while level:
        deepest += 1
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, dict | list)]  # fmt: skip
    return deepest


def _field(doc: dict, name: str) -> object:
    """A required field; absent and null are both refused, each with its own words."""
    if name not in doc:
        raise InvalidRequest(MISSING_FIELD, f"missing field '{name}'")
    value = doc[name]
    if value is None:
        raise InvalidRequest(WRONG_TYPE, f"field '{name}' is null")
    return value


def _decode_object(raw: bytes | None) -> dict:
    """The message as a JSON object, or InvalidRequest: no value, too big, not JSON, too deep, not an object."""
    if raw is None:
        raise InvalidRequest(NOT_JSON, "message has no value (tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidRequest(OVERSIZED, f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        doc = json.loads(raw)
    except RecursionError:  # the C decoder's own guard: a clean exception, raised ~1,000 levels down
        raise InvalidRequest(TOO_DEEP, f"message nests too deep to decode; the limit is {MAX_DEPTH}") from None
    except Exception as exc:  # ValueError, UnicodeDecodeError, the int digits limit, ...: whatever it raises
        raise InvalidRequest(NOT_JSON, f"message is not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    # Counting brackets first keeps the walk off the hot path: a request has 2 of them.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and (depth := _depth(doc)) > MAX_DEPTH:
        raise InvalidRequest(TOO_DEEP, f"message nests {depth} levels deep; the limit is {MAX_DEPTH}")
    if not isinstance(doc, dict):
        raise InvalidRequest(NOT_OBJECT, f"message must be a JSON object, got {_json_type(doc)}")
    return doc


def _request_id(doc: dict) -> str:
    request_id = _field(doc, "request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID_CHARS:
        raise InvalidRequest(
            BAD_REQUEST_ID, f"field 'request_id' must be a non-empty string of at most {MAX_REQUEST_ID_CHARS} chars"
        )
    if not _encodable(request_id):
        raise InvalidRequest(BAD_REQUEST_ID, "field 'request_id' must be valid Unicode (it has a lone surrogate)")
    return request_id


def _id_field(doc: dict, name: str) -> int:
    value = _field(doc, name)
    if not _is_int(value):
        raise InvalidRequest(WRONG_TYPE, f"field '{name}' must be an integer, got {_json_type(value)}")
    if not 0 <= value <= MAX_ID:
        raise InvalidRequest(ID_OUT_OF_RANGE, f"field '{name}' is {_shown(value)}; ids are in 0..2**63-1")
    return value


def parse_request(raw: bytes | None) -> Request:
    """Validate one message value; raise InvalidRequest naming the field and the rule it breaks.

    Any other exception here would be a bug: the consumer dead-letters it as `processing_error`."""
    doc = _decode_object(raw)
    request_id = _request_id(doc)
    user_id = _id_field(doc, "user_id")
    origin = doc.get("origin", USER)
    if origin not in ORIGINS:
        shown = origin[:40] if isinstance(origin, str) else _json_type(origin)
        raise InvalidRequest(BAD_ORIGIN, f'field \'origin\' is {shown!r}; it must be "user" or "platform"')

    has_movies, has_k = "movie_ids" in doc, "k" in doc
    if has_movies and has_k:
        raise InvalidRequest(AMBIGUOUS, "give either 'movie_ids' (scoring) or 'k' (top-k), not both")
    if has_movies:
        movie_ids = _field(doc, "movie_ids")
        if not isinstance(movie_ids, list):
            kind = _json_type(movie_ids)
            raise InvalidRequest(WRONG_TYPE, f"field 'movie_ids' must be an array of integers, got {kind}")
        if not movie_ids:
            raise InvalidRequest(EMPTY_MOVIE_IDS, "field 'movie_ids' must not be empty")
        if len(movie_ids) > MAX_MOVIE_IDS:
            raise InvalidRequest(
                TOO_MANY_MOVIE_IDS, f"field 'movie_ids' has {len(movie_ids)} ids; the limit is {MAX_MOVIE_IDS}"
            )
        for i, movie_id in enumerate(movie_ids):
            if not _is_int(movie_id):
                raise InvalidRequest(
                    WRONG_TYPE, f"field 'movie_ids[{i}]' must be an integer, got {_json_type(movie_id)}"
                )
            if not 0 <= movie_id <= MAX_ID:
                raise InvalidRequest(
                    ID_OUT_OF_RANGE, f"field 'movie_ids[{i}]' is {_shown(movie_id)}; ids are in 0..2**63-1"
                )
        return ScoreRequest(request_id, user_id, tuple(movie_ids), origin)
    if has_k:
        k = _field(doc, "k")
        if not _is_int(k):
            raise InvalidRequest(WRONG_TYPE, f"field 'k' must be an integer, got {_json_type(k)}")
        if not MIN_K <= k <= MAX_K:
            raise InvalidRequest(K_OUT_OF_RANGE, f"field 'k' is {_shown(k)}; it must be in {MIN_K}..{MAX_K}")
        return TopKRequest(request_id, user_id, k, origin)
    raise InvalidRequest(MISSING_FIELD, "missing field: give 'movie_ids' (scoring) or 'k' (top-k)")


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _dumps(doc: Any) -> bytes:
    """Compact JSON by orjson (every result is encoded on the consumer's hot path). Parsing stays with the
    json module: it reads integers of any size, so an out-of-range id is named as such, not as "not JSON"."""
    return orjson.dumps(doc)


def encode_request(request: Request) -> bytes:
    """The wire form of a request (what clients, the verifier and the benchmark send)."""
    doc: dict[str, Any] = {"request_id": request.request_id, "user_id": request.user_id}
    if isinstance(request, ScoreRequest):
        doc["movie_ids"] = list(request.movie_ids)
    else:
        doc["k"] = request.k
    if request.origin != USER:
        doc["origin"] = request.origin
    return _dumps(doc)


def request_digest(request: Request) -> str:
    """What a request asks, as a digest of its canonical form: a stored result records it, so that a
    `request_id` reused for another request (another user, other movies) is told apart from a redelivery."""
    return hashlib.sha256(encode_request(request)).hexdigest()


def request_key(user_id: int) -> bytes:
    """Requests and results are keyed by user id as a string (docs/contracts.md)."""
    return str(user_id).encode()


def prediction_key(request_id: str) -> str:
    """Where a result lives in Redis (docs/contracts.md)."""
    return f"prediction:{request_id}"


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with a `Z` suffix and microseconds: the timestamps of our messages."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _origin(request: Request) -> dict[str, str]:
    """A result names its origin only when it is the platform's (what the feedback join must skip)."""
    return {} if request.origin == USER else {"origin": request.origin}


def score_result(
    request: ScoreRequest, scores: dict[int, float], model_version: str, feature_set: str, fallback: bool,
    created_at: str, variant: str = CHAMPION,
) -> bytes:  # fmt: skip
    """A scoring result: `scores` maps movie id (a string key in JSON) to P(rating >= 4)."""
    return _dumps({
        "request_id": request.request_id, "user_id": request.user_id,
        "scores": {str(m): float(s) for m, s in scores.items()},
        "model_version": model_version, "feature_set": feature_set,
        "fallback": fallback, "created_at": created_at,
        "variant": variant, "request_digest": request_digest(request), **_origin(request),
    })  # fmt: skip


def topk_result(
    request: TopKRequest, recommendations: list[tuple[int, float]], model_version: str, feature_set: str,
    fallback: bool, created_at: str, variant: str = CHAMPION,
) -> bytes:  # fmt: skip
    """A top-k result: `recommendations` best first."""
    return _dumps({
        "request_id": request.request_id, "user_id": request.user_id,
        "recommendations": [{"movie_id": int(m), "score": float(s)} for m, s in recommendations],
        "model_version": model_version, "feature_set": feature_set,
        "fallback": fallback, "created_at": created_at,
        "variant": variant, "request_digest": request_digest(request), **_origin(request),
    })  # fmt: skip


def stored_digest(result: bytes) -> str | None:
    """The `request_digest` a stored result records (None for one that cannot be read as a result)."""
    try:
        doc = orjson.loads(result)
    except orjson.JSONDecodeError:
        return None
    return doc.get("request_digest") if isinstance(doc, dict) else None


RESULT_FIELDS = ("request_id", "user_id", "model_version", "feature_set", "fallback", "created_at", "variant")


def parse_result(raw: bytes | str) -> dict[str, Any]:
    """Decode a result and check it has the contract's fields (for clients and the verifier)."""
    doc = json.loads(raw)
    missing = [f for f in RESULT_FIELDS if f not in doc]
    if ("scores" in doc) == ("recommendations" in doc):
        missing.append("scores|recommendations")
    if missing:
        raise ValueError(f"result lacks {', '.join(missing)}: {raw!r:.200}")
    return doc


@dataclass(frozen=True, slots=True)
class Feedback:
    """What a user did with a movie (topic `inference-feedback`); `request_id` None: organic, not a served answer."""

    request_id: str | None
    user_id: int
    movie_id: int
    rating: float
    ts: str

    def epoch(self) -> float:
        """`ts` in seconds since the epoch (a time without an offset is UTC), what feature cutoffs are in."""
        moment = datetime.fromisoformat(self.ts)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_feedback(raw: bytes | None) -> Feedback:
    """Validate one feedback event; raise InvalidRequest with a reason from FEEDBACK_REASONS naming the field.

    `request_id` must be present: a string (the request the user acted on) or null (organic feedback)."""
    doc = _decode_object(raw)
    if "request_id" not in doc:
        raise InvalidRequest(MISSING_FIELD, "missing field 'request_id' (null for feedback on no served answer)")
    request_id = None if doc["request_id"] is None else _request_id(doc)
    user_id = _id_field(doc, "user_id")
    movie_id = _id_field(doc, "movie_id")
    rating = _field(doc, "rating")
    if type(rating) not in (int, float):
        raise InvalidRequest(WRONG_TYPE, f"field 'rating' must be a number, got {_json_type(rating)}")
    if not (math.isfinite(rating) and MIN_RATING <= rating <= MAX_RATING):
        raise InvalidRequest(
            RATING_OUT_OF_RANGE, f"field 'rating' is {str(rating)[:25]}; ratings are in {MIN_RATING}..{MAX_RATING}"
        )
    ts = _field(doc, "ts")
    if not isinstance(ts, str):
        raise InvalidRequest(WRONG_TYPE, f"field 'ts' must be an ISO time string, got {_json_type(ts)}")
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        raise InvalidRequest(BAD_TIMESTAMP, f"field 'ts' is {ts[:40]!r}, not an ISO 8601 time") from None
    if (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) < EARLIEST_FEEDBACK:
        raise InvalidRequest(BAD_TIMESTAMP, f"field 'ts' is {ts[:40]!r}, before {EARLIEST_FEEDBACK:%Y-%m-%d} "
                                            "(MovieLens' first ratings): a clock or unit error")  # fmt: skip
    return Feedback(request_id, user_id, movie_id, float(rating), ts)


def encode_feedback(event: Feedback) -> bytes:
    """The wire form of a feedback event (what clients, `verify --feedback` and the tests send)."""
    return _dumps({"request_id": event.request_id, "user_id": event.user_id, "movie_id": event.movie_id,
                   "rating": event.rating, "ts": event.ts})  # fmt: skip


MAX_DLQ_ORIGINAL_BYTES = 256 * 1024
"""A dead letter keeps at most this much of the original value (base64 grows it by a third);
`original_size`, `original_truncated` and `original_sha256` (of all of it) say what was cut."""
MAX_DLQ_KEY_BYTES = 1024
"""...and of the original key, inside the record and as the dead letter's own Kafka key. Every bound together
keeps any dead letter far below the broker's 1 MB message limit, whatever the original's size (key, value and
headers may each be near that limit): a dead letter that cannot be produced would stop its partition."""
MAX_DLQ_DETAIL_CHARS = 2000


def dlq_key(key: bytes | None) -> bytes | None:
    """The dead letter's Kafka key: the original key, or `sha256:<hex>` of it when longer than MAX_DLQ_KEY_BYTES
    (the same original key still maps to the same DLQ partition)."""
    if key is None or len(key) <= MAX_DLQ_KEY_BYTES:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()


def dlq_record(
    original: bytes | None, key: bytes | None, reason: str, detail: str, topic: str, partition: int, offset: int,
    keep: int = MAX_DLQ_ORIGINAL_BYTES,
) -> bytes:  # fmt: skip
    """A dead letter: the original bytes (base64, so any payload survives), why, and where it came from; bounded
    in size whatever the original's (`keep` bytes of the value, MAX_DLQ_KEY_BYTES of the key, MAX_DLQ_DETAIL_CHARS)."""
    original = original or b""
    keep_key = min(keep, MAX_DLQ_KEY_BYTES)
    return _dumps({
        "original_base64": base64.b64encode(original[:keep]).decode(),
        "original_size": len(original),
        "original_truncated": len(original) > keep,
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "original_key": None if key is None else base64.b64encode(key[:keep_key]).decode(),
        "original_key_size": None if key is None else len(key),
        "original_key_truncated": key is not None and len(key) > keep_key,
        "reason": reason, "detail": detail.encode(errors="replace").decode()[:MAX_DLQ_DETAIL_CHARS],
        "source_topic": topic, "source_partition": partition, "source_offset": offset,
        "failed_at": utc_now_iso(),
    })  # fmt: skip


def unpublishable_record(topic: str, key: bytes | None, value: bytes, error: str) -> bytes:
    """The dead letter that stands in for a record `topic` refused for itself: its size and digest, no bytes."""
    return dlq_record(value, key, UNPUBLISHABLE, f"{topic} refused the record: {error}", topic, -1, -1, keep=0)


def parse_dlq_record(raw: bytes) -> dict[str, Any]:
    """A dead letter with `original` decoded back to bytes."""
    doc = json.loads(raw)
    doc["original"] = base64.b64decode(doc["original_base64"])
    return doc
