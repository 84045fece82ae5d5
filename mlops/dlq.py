"""Reading the dead-letter topic: decoded records, counts by reason, and the verifier's own apart.

`./run.sh verify` sends malformed messages on purpose (to check that each is dead-lettered with the right
reason), so every verify grows the DLQ. Each of those messages carries the verifier's run tag
(`verifier_tag`: `verify-<UTC time>-<6 hex>`) in its bytes, so the report can count them apart from the
dead letters real clients caused. Read-only: the consumer here never joins a group nor commits.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mlops import schemas
from mlops.settings import Settings
from mlops.topic_tail import tail
from mlops.topics import DLQ

TIMEOUT_S = 3.0
SCAN_LIMIT = 50_000  # records per partition read at most (the newest), so a huge DLQ stays a quick report
VERIFIER_PREFIX = "verify-"
_VERIFIER_TAG = re.compile(rb"verify-\d{8}T\d{6}-[0-9a-f]{6}")


def verifier_tag(now: float | None = None) -> str:
    """The tag `verify` puts in every request id and malformed message of one run."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{VERIFIER_PREFIX}{stamp}-{uuid.uuid4().hex[:6]}"


def from_verifier(original: bytes) -> bool:
    """Whether a dead-lettered message was sent by `./run.sh verify` (it carries a verifier tag)."""
    return _VERIFIER_TAG.search(original) is not None


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record decoded, and whether `verify` sent its request on purpose."""

    partition: int
    offset: int
    reason: str
    detail: str
    source: str  # topic p<partition>@<offset> the request came from
    failed_at: str
    original: bytes
    original_size: int
    key: bytes | None
    verifier: bool

    def as_dict(self) -> dict[str, Any]:
        """One JSON line of `./run.sh dlq --json`: bytes shown as text, escapes for what is not UTF-8."""
        return {
            "dlq_partition": self.partition, "dlq_offset": self.offset, "reason": self.reason,
            "detail": self.detail, "source": self.source, "failed_at": self.failed_at,
            "original": self.original.decode("utf-8", errors="backslashreplace"),
            "original_size": self.original_size,
            "key": None if self.key is None else self.key.decode("utf-8", errors="backslashreplace"),
            "from_verify": self.verifier,
        }  # fmt: skip


def decode(partition: int, offset: int, raw: bytes | None) -> DeadLetter:
    """One DLQ record; one that is not in the DLQ format is returned with reason `(unreadable record)`."""
    import base64

    try:
        doc: dict[str, Any] = schemas.parse_dlq_record(raw or b"")
    except (ValueError, KeyError, TypeError) as exc:
        original = raw or b""
        return DeadLetter(partition, offset, "(unreadable record)", f"{type(exc).__name__}: {exc}", "-", "-",
                          original, len(original), None, False)  # fmt: skip
    key = doc.get("original_key")
    return DeadLetter(
        partition=partition,
        offset=offset,
        reason=str(doc.get("reason")),
        detail=str(doc.get("detail")),
        source=f"{doc.get('source_topic')} p{doc.get('source_partition')}@{doc.get('source_offset')}",
        failed_at=str(doc.get("failed_at", "-")),
        original=doc["original"],
        original_size=int(doc.get("original_size", len(doc["original"]))),
        key=base64.b64decode(key) if key else None,
        verifier=from_verifier(doc["original"]),
    )


def read(settings: Settings, topic: str = DLQ, per_partition: int = SCAN_LIMIT) -> list[DeadLetter]:
    """The newest `per_partition` records of each partition of the DLQ, decoded, oldest first."""
    records = tail(settings, topic, per_partition, TIMEOUT_S, TIMEOUT_S * 5)
    records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    return [decode(r.partition, r.offset, r.value) for r in records]


@dataclass(frozen=True)
class Tally:
    """What the DLQ holds: clients' dead letters by reason, and how many `verify` sent on purpose."""

    by_reason: dict[str, int]  # clients' dead letters only
    verifier: int

    @property
    def total(self) -> int:
        """Every dead letter, the verifier's included."""
        return sum(self.by_reason.values()) + self.verifier


def tally(letters: list[DeadLetter]) -> Tally:
    """Count the clients' dead letters by reason, most frequent first, and the verifier's apart."""
    reasons = Counter(letter.reason for letter in letters if not letter.verifier)
    return Tally(dict(reasons.most_common()), sum(letter.verifier for letter in letters))


def select(letters: list[DeadLetter], reason: str | None = None, last: int = 20) -> list[DeadLetter]:
    """The newest `last` records (with `reason`, when given), oldest of them first."""
    chosen = [letter for letter in letters if reason in (None, letter.reason)]
    return chosen[-last:] if last > 0 else []
