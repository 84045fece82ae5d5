"""The stream's figures over the last minutes, from periodic samples kept in a ring buffer.

A sample holds cumulative numbers only: the consumers' counters and latency histogram (from their
`/metrics`) and the broker's end and committed offsets. Rates and percentiles are computed between two
consecutive samples, so a window needs no Prometheus; a counter that went down (a consumer restarted)
gives no rate for that interval rather than a negative one. Pure logic, unit-tested.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise

from prometheus_client.parser import text_string_to_metric_families

REQUESTS_METRIC = "inference_requests"
LATENCY_METRIC = "inference_end_to_end_seconds"
# A rate over a longer gap (a source down for a while) would be an old average drawn as if it were now.
MAX_GAP_S = 30.0


@dataclass(frozen=True)
class ConsumerCounters:
    """What one scrape of a consumer's `/metrics` says, reduced to what the charts need."""

    answered: float  # inference_requests_total, summed over request types
    latency_buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), sorted, +Inf last


def parse_metrics(text: str) -> ConsumerCounters:
    """Counters of the Prometheus text format; metrics a consumer does not export count as zero."""
    answered = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS_METRIC:
            answered += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == LATENCY_METRIC:
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
    return ConsumerCounters(answered, tuple(sorted(buckets.items())))


def merge(counters: Iterable[ConsumerCounters]) -> ConsumerCounters:
    """Several consumers as one: counters and same-bound buckets add up."""
    answered = 0.0
    buckets: dict[float, float] = {}
    for c in counters:
        answered += c.answered
        for le, n in c.latency_buckets:
            buckets[le] = buckets.get(le, 0.0) + n
    return ConsumerCounters(answered, tuple(sorted(buckets.items())))


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' `histogram_quantile`: linear within the bucket holding the q-th observation.

    None when there are no observations; the last finite bound when it falls in the +Inf bucket.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    previous_le, previous_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return previous_le
            inside = count - previous_count
            if inside <= 0:
                return le
            return previous_le + (le - previous_le) * (rank - previous_count) / inside
        previous_le, previous_count = le, count
    return previous_le


def bucket_delta(
    later: tuple[tuple[float, float], ...], earlier: tuple[tuple[float, float], ...]
) -> tuple[tuple[float, float], ...] | None:
    """Observations between two scrapes, per bucket; None when the histogram was reset or changed shape."""
    before = dict(earlier)
    if set(before) != {le for le, _ in later}:
        return None if before else later
    delta = tuple((le, n - before[le]) for le, n in later)
    return None if any(n < 0 for _, n in delta) else delta


@dataclass(frozen=True)
class Sample:
    """One sampling instant, cumulative figures only: rates come from the difference of two samples."""

    at: float  # unix time
    consumers: ConsumerCounters | None  # None: no consumer answered
    consumers_answering: int
    request_ends: dict[int, int] = field(default_factory=dict)  # inference-requests end offset per partition
    committed: dict[int, int] = field(default_factory=dict)  # the consumer group's committed offsets there
    dlq_end: int | None = None  # DLQ records ever written (sum of end offsets)


def _rate(later: float | None, earlier: float | None, seconds: float) -> float | None:
    if later is None or earlier is None or seconds <= 0 or later < earlier:
        return None
    return (later - earlier) / seconds


@dataclass(frozen=True)
class Window:
    """Series over the buffered samples, aligned on `times` (one point per interval between samples)."""

    times: list[float]
    answered_per_s: list[float | None]
    incoming_per_s: list[float | None]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    dlq_per_s: list[float | None]
    lag_total: list[float | None]


def window(samples: list[Sample]) -> Window:
    """One point per sample after the first. Each figure is a rate against the newest earlier sample that
    had that figure, within MAX_GAP_S: a scrape that timed out on a busy machine widens an interval
    instead of blanking the next one too."""
    w = Window([], [], [], [], [], [], [])
    with_consumers: Sample | None = None
    with_ends: Sample | None = None
    with_dlq: Sample | None = None
    for earlier, later in pairwise(samples):
        if earlier.consumers is not None:
            with_consumers = earlier
        if earlier.request_ends:
            with_ends = earlier
        if earlier.dlq_end is not None:
            with_dlq = earlier
        w.times.append(later.at)
        c0 = with_consumers.consumers if _recent(with_consumers, later) else None
        c1 = later.consumers
        dt = later.at - with_consumers.at if with_consumers else 0.0
        w.answered_per_s.append(_rate(c1.answered, c0.answered, dt) if c0 and c1 else None)
        delta = bucket_delta(c1.latency_buckets, c0.latency_buckets) if c0 and c1 else None
        for q, out in ((0.5, w.p50_ms), (0.99, w.p99_ms)):
            value = quantile(q, delta) if delta else None
            out.append(None if value is None else value * 1000)
        ends_now = sum(later.request_ends.values()) if later.request_ends else None
        ends_then = sum(with_ends.request_ends.values()) if _recent(with_ends, later) else None
        w.incoming_per_s.append(_rate(ends_now, ends_then, later.at - with_ends.at) if with_ends else None)
        dlq_then = with_dlq.dlq_end if _recent(with_dlq, later) else None
        w.dlq_per_s.append(_rate(later.dlq_end, dlq_then, later.at - with_dlq.at) if with_dlq else None)
        w.lag_total.append(float(sum(lag_per_partition(later).values())) if later.request_ends else None)
    return w


def _recent(earlier: Sample | None, later: Sample) -> bool:
    return earlier is not None and later.at - earlier.at <= MAX_GAP_S


def lag_per_partition(sample: Sample) -> dict[int, int]:
    """End minus committed offset per partition (a partition never committed counts from offset 0)."""
    return {p: max(end - sample.committed.get(p, 0), 0) for p, end in sorted(sample.request_ends.items())}


class Ring:
    """The last `size` samples, shared between the sampling thread and the page handlers."""

    def __init__(self, size: int) -> None:
        self._samples: deque[Sample] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        """Append under the lock; once the ring is full the oldest sample drops out."""
        with self._lock:
            self._samples.append(sample)

    def snapshot(self) -> list[Sample]:
        """A copy of the samples, oldest first, safe to read while the sampler keeps adding."""
        with self._lock:
            return list(self._samples)
