"""The consumer's metric names and labels as docs/contracts.md lists them (pure: the registry's exposition)."""

from __future__ import annotations

from prometheus_client import generate_latest

from mlops import schemas
from mlops.consumer.metrics import SCORE_KIND, ConsumerMetrics


def test_names_labels_and_no_created_series():
    m = ConsumerMetrics()
    m.requests.labels(type=schemas.SCORE, kind=SCORE_KIND[schemas.SCORE]).inc()
    m.requests.labels(type=schemas.TOPK, kind=SCORE_KIND[schemas.TOPK]).inc(2)
    m.dead_letters.labels(reason=schemas.NOT_JSON).inc()
    m.retries.labels(reason="redis_unavailable").inc()
    m.lag.labels(partition="2").set(7)
    m.model_load_seconds.set(1.25)
    m.latency.observe(0.01)
    text = generate_latest(m.registry).decode()
    assert "_created" not in text
    for line in ('inference_requests_total{kind="p_like",type="score"} 1.0',
                 'inference_requests_total{kind="p_relevant",type="topk"} 2.0',
                 'inference_dead_letters_total{reason="not_json"} 1.0',
                 'inference_retries_total{reason="redis_unavailable"} 1.0',
                 'inference_consumer_lag{partition="2"} 7.0',
                 "inference_model_load_seconds 1.25"):  # fmt: skip
        assert line in text.splitlines(), line
    assert "inference_errors_total" not in text
