"""What a failure means for the stream, decided by what it says rather than by its Python type.

- TRANSIENT: waiting cures it (a connection dropped, a timeout, Redis LOADING/BUSY, a replica that is
  READONLY during a failover). The batch is retried with backoff and nothing is committed.
- PERMANENT: the infrastructure refuses and will keep refusing until someone acts (Redis out of memory
  under `noeviction`, an unknown command on a Redis too old, a wrong password or missing permission).
  Consumption stops, uncommitted, `/healthz` says why; answering every request with an error instead
  would drain the whole stream into the DLQ.
- REQUEST: anything else, e.g. the model raising on one request, or a missing file. The consumer finds
  out whether it is tied to one request (dead-letter it alone) or to every request (stop, as PERMANENT).

A Redis error reaches us as redis-py's exception for its error code, or (from inside a Lua script) as a
generic ResponseError carrying the code in its text: both are read here.
"""

from __future__ import annotations

import enum

import redis
from confluent_kafka import KafkaError

TRANSIENT_REDIS_CODES = ("LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
PERMANENT_REDIS_CODES = ("OOM", "NOAUTH", "WRONGPASS", "NOPERM", "MISCONF")
"""MISCONF: Redis refuses writes after a failed save, until an operator fixes its disk or config."""
PERMANENT_REDIS_PHRASES = ("unknown command", "syntax error", "wrong number of arguments", "used memory > 'maxmemory'")
"""What an older Redis answers to a command or option it does not know (SET ... NX GET needs 7.0), and
the out-of-memory refusal as it reads when raised inside a script."""
PERMANENT_KAFKA_CODES = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION, KafkaError.INVALID_CONFIG,
    KafkaError.POLICY_VIOLATION,
})  # fmt: skip
"""Broker refusals that retrying cannot cure: every other delivery error is waited out."""
RECORD_KAFKA_CODES = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
})  # fmt: skip
"""Refusals of one record (too large, invalid): it can never be produced, but every other record can, so
the record is replaced or dropped (REQUEST), never a reason to stop the partition. Not `INVALID_MSG` (a CRC
failure in transit): the broker treats it as retriable, so it is waited out."""


class Kind(enum.Enum):
    """How the stream reacts to a failure: retry (TRANSIENT), stop (PERMANENT) or judge the request (REQUEST)."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    REQUEST = "request"


def classify(exc: BaseException) -> Kind:
    """TRANSIENT, PERMANENT or REQUEST (see the module docstring)."""
    if isinstance(exc, redis.RedisError):
        return _redis(exc)
    if isinstance(exc, ConnectionError | TimeoutError):  # the builtin socket errors, not every OSError
        return Kind.TRANSIENT
    return Kind.REQUEST


def _redis(exc: redis.RedisError) -> Kind:
    text = str(exc)
    code = text.split(" ", 1)[0]
    refused = redis.AuthenticationError | redis.exceptions.AuthorizationError | redis.exceptions.NoPermissionError
    if isinstance(exc, refused | redis.exceptions.OutOfMemoryError) or code in PERMANENT_REDIS_CODES:
        return Kind.PERMANENT
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.exceptions.ReadOnlyError):
        return Kind.TRANSIENT  # BusyLoadingError is a ConnectionError
    if code in TRANSIENT_REDIS_CODES:
        return Kind.TRANSIENT
    lowered = text.lower()
    if isinstance(exc, redis.ResponseError) and any(p in lowered for p in PERMANENT_REDIS_PHRASES):
        return Kind.PERMANENT
    if isinstance(exc, redis.ResponseError) and code.isupper() and code.isalpha() and code != "ERR":
        return Kind.PERMANENT  # another error code of the server's: about the server, not the request
    return Kind.REQUEST


def kafka_kind(error: KafkaError) -> Kind:
    """TRANSIENT, PERMANENT, or REQUEST (this record alone can never be produced) for a failed delivery or a
    refused produce."""
    if error.code() in RECORD_KAFKA_CODES and not error.fatal():
        return Kind.REQUEST
    return Kind.PERMANENT if error.fatal() or error.code() in PERMANENT_KAFKA_CODES else Kind.TRANSIENT


def describe(exc: BaseException) -> str:
    """One line for logs, /healthz and dead letters: the type and the message, never a traceback."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
