"""Kafka with SASL and ACLs, as `up` provisions it (real broker, fixture): no credentials or wrong ones get
nothing (produce, consume, topic admin); each role gets only its topics; a rotated password is taken up by
the provisioning step and the old one refused. The grant table's own rules are checked as data."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from mlops import kafka_auth
from mlops.kafka_auth import CONSOLE, FEEDBACK_PRODUCER, GRANTS, KAFKA_UI, PLATFORM, ROLES
from mlops.services import provision
from mlops.topics import FEEDBACK, PREDICTIONS, REQUESTS

TIMEOUT_MS = 4000


def _config(settings, role: str | None, password: str | None = None) -> dict:
    if role is None:
        return {"bootstrap.servers": settings.kafka_bootstrap_servers}
    config = kafka_auth.client_config(settings, role)
    return config if password is None else {**config, "sasl.password": password}


def _produce(config: dict, topic: str) -> KafkaError | None:
    """The delivery error of one record (None: acknowledged)."""
    outcome: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": TIMEOUT_MS, "log_level": 0})
    producer.produce(topic, b"auth-test", b"auth-test", on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(TIMEOUT_MS / 1000 + 5)
    assert outcome, "no delivery report"
    return outcome[0]


def _consume_error(config: dict, topic: str) -> KafkaError | None:
    """The first error reading partition 0 of `topic` from the start (None: a record came back; a clean end is
    _PARTITION_EOF). The group's own refusal (librdkafka looks its coordinator up even for an assignment) is
    passed over: what is asked is whether the topic can be read."""
    errors: list[KafkaError] = []
    consumer = Consumer({**config, "group.id": f"auth-test-{uuid.uuid4().hex}", "enable.partition.eof": True,
                         "error_cb": errors.append, "log_level": 0})  # fmt: skip
    try:
        try:
            refused = consumer.list_topics(topic, timeout=TIMEOUT_MS / 1000).topics[topic].error
        except KafkaException as exc:
            return exc.args[0]
        if refused is not None:  # an unreadable topic: the broker's metadata says so before any fetch
            return refused
        consumer.assign([TopicPartition(topic, 0, 0)])
        for _ in range(20):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return None
            if message is not None and message.error().code() != KafkaError.GROUP_AUTHORIZATION_FAILED:
                return message.error()
            refusals = [e for e in errors if e.code() != KafkaError.GROUP_AUTHORIZATION_FAILED]
            if refusals:
                return refusals[0]
        return KafkaError(KafkaError._TIMED_OUT)
    finally:
        consumer.close()


def _create_topic_error(config: dict) -> Exception | None:
    admin = AdminClient({**config, "log_level": 0})
    name = f"inference-requests.auth-{uuid.uuid4().hex[:8]}"
    try:
        admin.create_topics([NewTopic(name, 1, 1)], request_timeout=TIMEOUT_MS / 1000)[name].result(timeout=15)
    except Exception as exc:
        return exc
    admin.delete_topics([name])[name].result(timeout=15)
    return None


def _end(settings, topic: str) -> int:
    consumer = Consumer({**_config(settings, PLATFORM), "group.id": f"auth-end-{uuid.uuid4().hex}"})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions)  # fmt: skip
    finally:
        consumer.close()


@pytest.mark.integration
@pytest.mark.parametrize("who", ["no credentials", "wrong password"])
def test_a_client_without_valid_credentials_gets_nothing(settings, who: str) -> None:
    config = _config(settings, None) if who == "no credentials" else _config(settings, PLATFORM, "not-the-password")
    before = _end(settings, REQUESTS)
    assert _produce(config, REQUESTS) is not None
    assert _end(settings, REQUESTS) == before  # nothing was written
    assert _consume_error(config, PREDICTIONS) is not None
    assert _create_topic_error(config) is not None


@pytest.mark.integration
def test_each_role_gets_only_its_topics(settings) -> None:
    # The feedback producer writes feedback, and nothing else.
    assert _produce(_config(settings, FEEDBACK_PRODUCER), FEEDBACK) is None
    refused = _produce(_config(settings, FEEDBACK_PRODUCER), REQUESTS)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    read = _consume_error(_config(settings, FEEDBACK_PRODUCER), PREDICTIONS)
    assert read is not None and read.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The console reads the topics (its Kafka page) and sends Try-it requests; it writes nothing else.
    assert _produce(_config(settings, CONSOLE), REQUESTS) is None
    read = _consume_error(_config(settings, CONSOLE), PREDICTIONS)
    assert read is None or read.code() == KafkaError._PARTITION_EOF
    assert _produce(_config(settings, CONSOLE), PREDICTIONS).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _create_topic_error(_config(settings, CONSOLE)) is not None
    # Kafka UI reads and changes nothing.
    read = _consume_error(_config(settings, KAFKA_UI), PREDICTIONS)
    assert read is None or read.code() == KafkaError._PARTITION_EOF  # a record, or the end of an empty partition
    assert _produce(_config(settings, KAFKA_UI), REQUESTS).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The platform's tools may create their namespaced topics (tests, benches).
    assert _create_topic_error(_config(settings, PLATFORM)) is None


@pytest.mark.integration
def test_a_rotated_password_is_set_by_provisioning_and_the_old_one_refused(settings) -> None:
    rotated = settings.replace(kafka_feedback_password="rotated-feedback-password")
    try:
        provision.ensure_kafka_access(rotated)
        assert _produce(_config(rotated, FEEDBACK_PRODUCER), FEEDBACK) is None
        old = _produce(_config(settings, FEEDBACK_PRODUCER), FEEDBACK)
        assert old is not None  # the old password no longer signs in
    finally:
        provision.ensure_kafka_access(settings)
    assert _produce(_config(settings, FEEDBACK_PRODUCER), FEEDBACK) is None


@pytest.mark.integration
def test_provisioning_is_idempotent_and_removes_acls_outside_the_table(settings) -> None:
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    admin = AdminClient(kafka_auth.client_config(settings, kafka_auth.ADMIN))
    extra = AclBinding(ResourceType.TOPIC, REQUESTS, ResourcePatternType.LITERAL, f"User:{FEEDBACK_PRODUCER}", "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW)  # fmt: skip
    admin.create_acls([extra])[extra].result(timeout=15)
    assert _produce(_config(settings, FEEDBACK_PRODUCER), REQUESTS) is None  # the planted ACL works...
    assert provision.ensure_kafka_access(settings) == ["1 stale ACL(s) deleted"]
    refused = _produce(_config(settings, FEEDBACK_PRODUCER), REQUESTS)  # ...until provisioning removes it
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert provision.ensure_kafka_access(settings) == []


def test_the_grant_table_gives_write_and_admin_only_where_needed() -> None:
    """Pure: only the platform's tools may create or delete topics; Kafka UI and the console never read answers
    or write anything but Try-it requests; every role but the admin has a grant; names are the contract's."""
    by_role = {role: [g for g in GRANTS if g.role == role] for role in ROLES}
    assert by_role[kafka_auth.ADMIN] == [] and all(by_role[r] for r in ROLES if r != kafka_auth.ADMIN)
    powerful = {"ALL", "CREATE", "DELETE", "ALTER", "ALTER_CONFIGS"}
    assert {g.role for g in GRANTS if powerful & set(g.operations)} == {PLATFORM}
    assert all(set(g.operations) <= {"READ", "DESCRIBE", "DESCRIBE_CONFIGS"} for g in by_role[KAFKA_UI])
    assert [(g.name, g.operations) for g in by_role[FEEDBACK_PRODUCER]] == [(FEEDBACK, ("WRITE",))]
    writes = {(g.role, g.name) for g in GRANTS if "WRITE" in g.operations}
    assert (CONSOLE, REQUESTS) in writes and not any(role == CONSOLE and name != REQUESTS for role, name in writes)
    with pytest.raises(ValueError, match="unknown Kafka role"):
        kafka_auth.client_config(None, "nobody")  # type: ignore[arg-type]


def test_no_credentials_means_a_clear_transport_failure_not_a_hang(settings) -> None:
    """A metadata request without SASL is closed by the broker: the client fails within its timeout."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
