"""The session fixtures start real servers: each test talks to one in its own protocol."""

from __future__ import annotations

import io
import shutil
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from mlops import kafka_auth
from mlops.services.health import s3_client
from mlops.settings import get_settings
from mlops.topics import REQUESTS, TOPICS

pytestmark = pytest.mark.integration


def test_redis_requires_the_password_and_stores_values(settings):
    anonymous = redis.Redis(host=settings.redis_host, port=settings.redis_port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    client = redis.Redis.from_url(settings.redis_url)
    key = f"smoke:{uuid.uuid4()}"
    client.set(key, "v", ex=60)
    assert client.get(key) == b"v"


def test_broker_holds_the_topics_and_round_trips_a_message(settings):
    topics = AdminClient(kafka_auth.client_config(settings, kafka_auth.PLATFORM)).list_topics(timeout=10).topics
    for spec in TOPICS:
        assert len(topics[spec.name].partitions) == spec.partitions

    payload = f"smoke-{uuid.uuid4()}".encode()
    producer = Producer(kafka_auth.client_config(settings, kafka_auth.PLATFORM))
    producer.produce(REQUESTS, key=b"7", value=payload)
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            **kafka_auth.client_config(settings, kafka_auth.PLATFORM),
            "group.id": f"inference-smoke-{uuid.uuid4()}",  # the platform role's groups start so
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([REQUESTS])
    seen = []
    deadline = time.monotonic() + 30
    try:
        while payload not in seen and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.append(msg.value())
    finally:
        consumer.close()
    assert payload in seen


def test_s3_has_both_buckets_and_round_trips_an_object(settings):
    client = s3_client(settings)
    names = {b.name for b in client.list_buckets()}
    assert {settings.s3_bucket, settings.mlflow_artifact_bucket} <= names
    data = b"hello object store"
    client.put_object(settings.s3_bucket, "smoke/hello.txt", io.BytesIO(data), len(data))
    assert client.get_object(settings.s3_bucket, "smoke/hello.txt").read() == data


def test_s3_refuses_a_wrong_secret_and_anonymous_reads(settings):
    """Signed requests only: a wrong secret key is refused (nothing listed, nothing written), and so is an
    unsigned GET of an object that exists."""
    import requests
    from minio.error import S3Error

    data = b"only for the key holder"
    s3_client(settings).put_object(settings.s3_bucket, "smoke/private.txt", io.BytesIO(data), len(data))
    wrong = s3_client(settings.replace(s3_secret_key="not-the-secret-key"))
    with pytest.raises(S3Error):
        wrong.list_buckets()
    with pytest.raises(S3Error):
        wrong.put_object(settings.s3_bucket, "smoke/forged.txt", io.BytesIO(b"x"), 1)
    anonymous = requests.get(f"{settings.s3_endpoint_url}/{settings.s3_bucket}/smoke/private.txt", timeout=10)
    assert anonymous.status_code == 403 and data not in anonymous.content
    names = [o.object_name for o in s3_client(settings).list_objects(settings.s3_bucket, prefix="smoke/")]
    assert "smoke/forged.txt" not in names


def test_mlflow_logs_an_artifact_into_the_object_store(settings, mlflow_server, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(f"smoke-{uuid.uuid4()}")
    artifact = tmp_path / "note.txt"
    artifact.write_text("stored in s3")
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.5)
        mlflow.log_artifact(str(artifact))
    fetched = mlflow.get_run(run.info.run_id)
    assert fetched.data.metrics["m"] == 1.5
    # The artifact went through the tracking server into the artifact bucket, not to a local folder.
    keys = [o.object_name for o in s3_client(settings).list_objects(settings.mlflow_artifact_bucket, recursive=True)]
    assert any(k.endswith("note.txt") for k in keys), keys


def test_process_settings_point_at_the_fixture_servers_not_the_developers_stack(settings):
    assert get_settings() == settings
    assert settings.redis_port != 6379
    assert settings.spark_master == "local[2]"


def test_s3_server_log_stays_quiet_under_requests(settings, s3_server):
    """S3Proxy's jar has no logging config of its own: without ours it logged Jetty at DEBUG every second
    (12 GB of s3.log in an afternoon). Requests and idle time must add no DEBUG lines."""
    if shutil.which("minio"):
        pytest.skip("MinIO serves the S3 API here, not S3Proxy")
    client = s3_client(get_settings())
    before = len(s3_server.log.read_text(errors="replace"))
    for i in range(20):
        client.put_object(settings.s3_bucket, f"quiet/{i}", io.BytesIO(b"x"), 1)
        client.get_object(settings.s3_bucket, f"quiet/{i}").read()
    time.sleep(2)
    text = s3_server.log.read_text(errors="replace")
    assert " DEBUG " not in text, text[-2000:]
    assert len(text) - before < 20_000, f"{len(text) - before} characters of log for 40 requests"
