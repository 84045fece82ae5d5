"""The consumer's metric names and labels as docs/contracts.md lists them (pure: the registry's exposition)."""

from __future__ import annotations

from prometheus_client import generate_latest

from mlops import schemas
from mlops.consumer.metrics import SCORE_KIND, ConsumerMetrics


def test_names_labels_and_no_created_series():
    m = ConsumerMetrics()
    m.requests.labels(type=schemas.SCORE, kind=SCORE_KIND[schemas.SCORE], variant="champion").inc()
    m.requests.labels(type=schemas.TOPK, kind=SCORE_KIND[schemas.TOPK], variant="challenger").inc(2)
    m.set_model("3", "fs1")
    m.set_model("4", "fs2", "challenger")
    m.set_model("5", "fs3")  # a new champion replaces the old one's series, the challenger's stays
    m.feedback.labels(outcome="credited", variant="challenger").inc()
    m.feedback_dead_letters.labels(reason=schemas.RATING_OUT_OF_RANGE).inc()
    m.dead_letters.labels(reason=schemas.NOT_JSON).inc()
    m.retries.labels(reason="redis_unavailable").inc()
    m.lag.labels(partition="2").set(7)
    m.model_load_seconds.set(1.25)
    m.latency.observe(0.01)
    text = generate_latest(m.registry).decode()
    assert "_created" not in text
    for line in ('inference_requests_total{kind="p_like",type="score",variant="champion"} 1.0',
                 'inference_requests_total{kind="rank_score",type="topk",variant="challenger"} 2.0',
                 'inference_model_info{feature_set="fs3",model_version="5",variant="champion"} 1.0',
                 'inference_model_info{feature_set="fs2",model_version="4",variant="challenger"} 1.0',
                 'inference_feedback_total{outcome="credited",variant="challenger"} 1.0',
                 'inference_feedback_dead_letters_total{reason="rating_out_of_range"} 1.0',
                 'inference_dead_letters_total{reason="not_json"} 1.0',
                 'inference_retries_total{reason="redis_unavailable"} 1.0',
                 'inference_consumer_lag{partition="2"} 7.0',
                 "inference_model_load_seconds 1.25"):  # fmt: skip
        assert line in text.splitlines(), line
    assert "inference_errors_total" not in text
    assert 'model_version="3"' not in text
