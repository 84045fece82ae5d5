"""The Stream page's arithmetic: metrics parsing, histogram quantiles, rates between samples (pure)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlops.console import samples
from mlops.console.samples import Sample


def consumer_metrics(answered: dict[str, int], latencies: list[float]) -> str:
    """The text a consumer serves, made by the same client library with the consumer's metric names."""
    registry = CollectorRegistry()
    requests = Counter(samples.REQUESTS_METRIC, "answered", ["type"], registry=registry)
    for kind, n in answered.items():
        requests.labels(type=kind).inc(n)
    latency = Histogram(samples.LATENCY_METRIC, "e2e", buckets=(0.01, 0.02, 0.05, 0.1), registry=registry)
    for value in latencies:
        latency.observe(value)
    return generate_latest(registry).decode()


def test_parse_metrics_sums_request_types_and_reads_the_histogram():
    counters = samples.parse_metrics(consumer_metrics({"score": 30, "topk": 12}, [0.005, 0.015, 0.015, 0.2]))
    assert counters.answered == 42
    assert counters.latency_buckets == ((0.01, 1), (0.02, 3), (0.05, 3), (0.1, 3), (math.inf, 4))


def test_quantile_interpolates_inside_the_bucket_like_prometheus():
    buckets = ((0.01, 0), (0.02, 100), (math.inf, 100))
    assert samples.quantile(0.5, buckets) == pytest.approx(0.015)
    assert samples.quantile(0.99, buckets) == pytest.approx(0.0199)
    assert samples.quantile(0.5, ((0.01, 0), (math.inf, 0))) is None
    assert samples.quantile(0.99, ((0.01, 1), (math.inf, 10))) == 0.01  # beyond the last bound: that bound


def test_a_reset_counter_gives_no_rate_instead_of_a_negative_one():
    before = samples.ConsumerCounters(100, ((0.01, 50), (math.inf, 100)))
    after_restart = samples.ConsumerCounters(5, ((0.01, 5), (math.inf, 5)))
    w = samples.window([Sample(0, before, 1), Sample(2, after_restart, 1)])
    assert w.answered_per_s == [None] and w.p50_ms == [None]


def test_window_rates_percentiles_lag_and_dlq_between_samples():
    first = Sample(0.0, samples.ConsumerCounters(0, ((0.01, 0), (0.02, 0), (math.inf, 0))), 1,
                   {0: 10, 1: 0}, {0: 10}, dlq_end=2)  # fmt: skip
    second = Sample(2.0, samples.ConsumerCounters(200, ((0.01, 100), (0.02, 200), (math.inf, 200))), 1,
                    {0: 210, 1: 50}, {0: 200, 1: 40}, dlq_end=6)  # fmt: skip
    third = Sample(4.0, None, 0, {0: 210, 1: 50}, {0: 210, 1: 50}, dlq_end=6)  # the consumer stopped answering
    w = samples.window([first, second, third])
    assert w.times == [2.0, 4.0]
    assert w.answered_per_s == [100.0, None]
    assert w.incoming_per_s == [125.0, 0.0]
    assert w.p50_ms[0] == pytest.approx(10.0) and w.p99_ms[0] == pytest.approx(19.8)
    assert w.p50_ms[1] is None
    assert w.dlq_per_s == [2.0, 0.0]
    assert w.lag_total == [20.0, 0.0]
    assert samples.lag_per_partition(first) == {0: 0, 1: 0}
    assert samples.lag_per_partition(Sample(0, None, 0, {0: 5, 1: 7}, {0: 2})) == {0: 3, 1: 7}


def test_ring_keeps_the_last_samples():
    ring = samples.Ring(3)
    for i in range(5):
        ring.add(Sample(float(i), None, 0))
    assert [s.at for s in ring.snapshot()] == [2.0, 3.0, 4.0]


def test_a_missed_scrape_widens_the_interval_instead_of_blanking_the_next_point():
    first = Sample(0.0, samples.ConsumerCounters(0, ((0.01, 0), (math.inf, 0))), 1, {0: 0}, {0: 0}, dlq_end=0)
    missed = Sample(2.0, None, 0)  # the consumer's /metrics and the broker both timed out
    third = Sample(4.0, samples.ConsumerCounters(400, ((0.01, 400), (math.inf, 400))), 1, {0: 400}, {0: 400},
                   dlq_end=8)  # fmt: skip
    w = samples.window([first, missed, third])
    assert w.answered_per_s == [None, 100.0] and w.incoming_per_s == [None, 100.0] and w.dlq_per_s == [None, 2.0]
    assert w.p50_ms[1] == pytest.approx(5.0)


def test_no_rate_across_a_gap_longer_than_the_bound():
    first = Sample(0.0, samples.ConsumerCounters(0, ((math.inf, 0),)), 1, {0: 0}, {0: 0}, dlq_end=0)
    late = Sample(samples.MAX_GAP_S + 1, samples.ConsumerCounters(50, ((math.inf, 50),)), 1, {0: 50}, {0: 50},
                  dlq_end=1)  # fmt: skip
    w = samples.window([first, Sample(2.0, None, 0), late])
    assert w.answered_per_s[-1] is None and w.incoming_per_s[-1] is None and w.dlq_per_s[-1] is None
