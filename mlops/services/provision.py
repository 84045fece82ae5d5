"""Idempotent creation of what the services must hold before anything runs: buckets, topics, Kafka access."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from mlops import kafka_auth
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
    admin = AdminClient(kafka_auth.client_config(settings, kafka_auth.ADMIN))
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


def ensure_kafka_access(settings: Settings, timeout: float = 15.0) -> list[str]:
    """As the broker's admin: set every role's SCRAM credentials from the settings (a rotated password takes
    effect here) and make the roles' ACLs exactly `mlops.kafka_auth.GRANTS` (missing ones created, any other
    ACL of those principals deleted). Returns what changed beyond the credentials, which are always set."""
    admin = AdminClient(kafka_auth.client_config(settings, kafka_auth.ADMIN))
    roles = [role for role in kafka_auth.ROLES if role != kafka_auth.ADMIN]
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, kafka_auth.SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(role, info, kafka_auth.password(settings, role).encode()) for role in roles]
    for future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).values():
        future.result(timeout=timeout)
    wanted = {_binding(grant, operation) for grant in kafka_auth.GRANTS for operation in grant.operations}
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)  # fmt: skip
    principals = {f"User:{role}" for role in roles}
    acls = admin.describe_acls(everything, request_timeout=timeout).result(timeout)
    held = {b for b in acls if b.principal in principals}
    changes = []
    missing = sorted(wanted - held, key=str)
    if missing:
        for future in admin.create_acls(missing, request_timeout=timeout).values():
            future.result(timeout=timeout)
        changes.append(f"{len(missing)} ACL(s) created")
    stale = sorted(held - wanted, key=str)
    if stale:
        filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                                    b.permission_type) for b in stale]  # fmt: skip
        for future in admin.delete_acls(filters, request_timeout=timeout).values():
            future.result(timeout=timeout)
        changes.append(f"{len(stale)} stale ACL(s) deleted")
    return changes


def _binding(grant: kafka_auth.Grant, operation: str) -> AclBinding:
    pattern = ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL
    return AclBinding(ResourceType[grant.resource.upper()], grant.name, pattern, f"User:{grant.role}", "*",
                      AclOperation[operation], AclPermissionType.ALLOW)  # fmt: skip
