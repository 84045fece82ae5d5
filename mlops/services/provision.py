"""Idempotent creation of what the services must hold before anything runs: buckets and topics."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from mlops.consumer.kafka import wait_for_topics
from mlops.services.health import s3_client
from mlops.settings import Settings
from mlops.topics import TOPICS


def ensure_buckets(settings: Settings) -> list[str]:
    """Create the data and MLflow-artifact buckets if missing; returns the ones created."""
    client = s3_client(settings)
    created = []
    for bucket in (settings.s3_bucket, settings.mlflow_artifact_bucket):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
            created.append(bucket)
    return created


def ensure_topics(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Create the topics of `mlops.topics` with their partition counts; returns the ones created.

    An existing topic with fewer partitions than required is an error: the consumers' parallelism
    depends on it, and silently running with fewer would hide the misconfiguration.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    existing = admin.list_topics(timeout=timeout).topics
    missing = [spec for spec in TOPICS if spec.name not in existing]
    for spec in TOPICS:
        if spec.name in existing and len(existing[spec.name].partitions) < spec.partitions:
            raise RuntimeError(
                f"topic {spec.name} has {len(existing[spec.name].partitions)} partition(s), "
                f"needs at least {spec.partitions}; delete it or recreate the broker's data"
            )
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=1) for spec in missing],
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    wait_for_topics(admin, {spec.name: spec.partitions for spec in missing})
    return created
