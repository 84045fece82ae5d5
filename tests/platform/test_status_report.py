"""`status` reads the real servers: offsets, consumer lag, DLQ size, feature-set version, champion."""

from __future__ import annotations

import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from mlops import kafka_auth
from mlops.status import ServiceRow, services_table, stream_report, topic_offsets
from mlops.topics import CONSUMER_GROUP, DLQ, REQUESTS

pytestmark = pytest.mark.integration


def test_report_shows_offsets_lag_dlq_feature_set_and_champion(settings, mlflow_server):
    from mlflow.tracking import MlflowClient

    before = {t.name: t for t in topic_offsets(settings)}
    producer = Producer(kafka_auth.client_config(settings, kafka_auth.PLATFORM))
    for i in range(6):
        producer.produce(REQUESTS, key=str(i).encode(), value=b"{}")
    producer.produce(DLQ, value=b"rejected")
    assert producer.flush(10) == 0

    # The consumer group commits the first request partition up to its end: lag = what is left elsewhere.
    after = {t.name: t for t in topic_offsets(settings)}
    requests_after = after[REQUESTS]
    assert sum(requests_after.end_offsets.values()) == sum(before[REQUESTS].end_offsets.values()) + 6
    assert after[DLQ].size == before[DLQ].size + 1
    consumer = Consumer({**kafka_auth.client_config(settings, kafka_auth.PLATFORM), "group.id": CONSUMER_GROUP})
    try:
        consumer.commit(offsets=[TopicPartition(REQUESTS, 0, requests_after.end_offsets[0])], asynchronous=False)
    finally:
        consumer.close()
    lagging = {t.name: t for t in topic_offsets(settings)}[REQUESTS]
    expected_lag = sum(end for p, end in requests_after.end_offsets.items() if p != 0)
    assert lagging.lag == expected_lag

    # The MLflow server and Redis are shared by the whole session: a model of its own, and fs:current
    # put back afterwards, so that no other test's champion or feature set changes under it.
    settings = settings.replace(model_name=f"status-test-{uuid.uuid4().hex[:8]}")
    version = f"v-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(settings.redis_url)
    previous = r.get("fs:current")
    r.set("fs:current", version)
    try:
        client = MlflowClient(settings.mlflow_tracking_uri)
        client.create_registered_model(settings.model_name)
        mv = client.create_model_version(settings.model_name, source="s3://nowhere/model")
        client.set_registered_model_alias(settings.model_name, "champion", mv.version)

        report = stream_report(settings)
    finally:
        r.set("fs:current", previous) if previous is not None else r.delete("fs:current")
    line = next(ln for ln in report.splitlines() if ln.strip().startswith(REQUESTS))
    assert f"p0={requests_after.end_offsets[0]}" in line and line.endswith(f"lag {expected_lag}")
    assert f"DLQ size: {after[DLQ].size}" in report
    assert f"feature set (fs:current): {version}" in report
    assert f"@champion): v{mv.version}" in report
    experiment = "online champion/challenger: CHALLENGER_TRAFFIC=0.0; no challenger alias; feedback credited: "
    assert f"{experiment}champion v{mv.version} 0" in report


def test_services_table_aligns_and_shows_dashes():
    table = services_table(
        [ServiceRow("redis", "up", 12, "redis://127.0.0.1:6379"), ServiceRow("airflow-scheduler", "down", None, "")]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["service", "state", "pid", "url"]
    assert lines[2].split() == ["airflow-scheduler", "down", "-", "-"]
    assert lines[1].index("up") == lines[2].index("down")
