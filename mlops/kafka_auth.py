"""Who may do what on Kafka: one SASL principal per role, their client settings, and the ACLs that bind them.

Why: a broker that takes anyone lets any local user produce fake feedback for request ids read off the
predictions topic, or read every answer. Each role signs in with SCRAM-SHA-512 (a salted challenge: the
password never crosses the wire, and the broker keeps only its salted hash) and gets only the topics and
groups it needs. The broker's own admin signs in with PLAIN against the broker's configuration file (the
one identity that must exist before the broker can store any SCRAM credential; also the controller's
listener, where KRaft supports no SCRAM), and creates the roles' credentials and ACLs at every `up`
(`mlops.services.provision.ensure_kafka_access`): a password rotated in `.env` is taken up there.

Pure: the ACL table is data, applied by the provisioning step; no broker is contacted here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops.settings import Settings
from mlops.topics import CONSUMER_GROUP, DLQ, FEEDBACK, FEEDBACK_DLQ, FEEDBACK_GROUP, PREDICTIONS, REQUESTS

ADMIN = "admin"  # super user (the broker itself, topic and ACL provisioning)
INFERENCE = "inference"  # the consumers: read requests and feedback, write results and dead letters
PLATFORM = "platform"  # operator tools: verify, bench, replay, pokes, status; namespaced topics of tests and benches
FEEDBACK_PRODUCER = "feedback"  # an application that reports what users did: writes feedback only
CONSOLE = "console"  # the web console: reads the topics (its Kafka page), writes Try-it requests
KAFKA_UI = "kafka-ui"  # Kafka UI: reads and describes everything, changes nothing

ROLES = (ADMIN, INFERENCE, PLATFORM, FEEDBACK_PRODUCER, CONSOLE, KAFKA_UI)
PASSWORD_SETTING = {
    ADMIN: "kafka_admin_password", INFERENCE: "kafka_inference_password", PLATFORM: "kafka_platform_password",
    FEEDBACK_PRODUCER: "kafka_feedback_password", CONSOLE: "kafka_console_password", KAFKA_UI: "kafka_ui_password",
}  # fmt: skip
SCRAM = "SCRAM-SHA-512"
PLAIN = "PLAIN"
SCRAM_ITERATIONS = 8192
SECURITY_PROTOCOL = "SASL_PLAINTEXT"  # loopback (local) or the compose network: TLS is the operator's to add


@dataclass(frozen=True)
class Grant:
    """One ACL: `role` may do `operations` on the `resource` named `name` (`prefixed`: every name that starts so)."""

    role: str
    resource: str  # "topic" | "group" | "broker" (librdkafka's name of the cluster resource)
    name: str
    prefixed: bool
    operations: tuple[str, ...]


def _topic(role: str, name: str, *operations: str, prefixed: bool = True) -> Grant:
    return Grant(role, "topic", name, prefixed, operations)


def _group(role: str, name: str, *operations: str, prefixed: bool = True) -> Grant:
    return Grant(role, "group", name, prefixed, operations)


# Prefixed on the contract's names: a benchmark's or test's private namespace (`inference-requests.<ns>`, see
# mlops.consumer.kafka.StreamTopics) is covered by the same grants as the stack's own topics.
GRANTS: tuple[Grant, ...] = (
    _topic(INFERENCE, REQUESTS, "READ"),
    _topic(INFERENCE, DLQ, "WRITE"),
    _topic(INFERENCE, PREDICTIONS, "WRITE"),
    _topic(INFERENCE, FEEDBACK, "READ"),
    _topic(INFERENCE, FEEDBACK_DLQ, "WRITE"),
    _group(INFERENCE, CONSUMER_GROUP, "READ"),
    _group(INFERENCE, FEEDBACK_GROUP, "READ"),
    _topic(PLATFORM, "inference-", "ALL"),
    _group(PLATFORM, "inference-", "ALL"),
    _topic(FEEDBACK_PRODUCER, FEEDBACK, "WRITE", prefixed=False),
    _topic(CONSOLE, "inference-", "READ"),  # the Kafka page: offsets, lag, the latest records, the DLQ decoded
    _topic(CONSOLE, REQUESTS, "WRITE", prefixed=False),  # Try-it (the answer is read from Redis)
    _group(CONSOLE, "inference-", "DESCRIBE"),  # the consumers' committed offsets; its readers' coordinator
    _topic(KAFKA_UI, "*", "READ", "DESCRIBE", "DESCRIBE_CONFIGS", prefixed=False),
    _group(KAFKA_UI, "*", "DESCRIBE", prefixed=False),
    Grant(KAFKA_UI, "broker", "kafka-cluster", False, ("DESCRIBE", "DESCRIBE_CONFIGS")),
)


def password(settings: Settings, role: str) -> str:
    """The role's password setting's value (KAFKA_<ROLE>_PASSWORD)."""
    return str(getattr(settings, PASSWORD_SETTING[role]))


def client_config(settings: Settings, role: str) -> dict[str, Any]:
    """librdkafka's connection settings for `role`: the bootstrap servers and its SASL sign-in."""
    if role not in PASSWORD_SETTING:
        raise ValueError(f"unknown Kafka role {role!r}: expected one of {ROLES}")
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": SECURITY_PROTOCOL,
        "sasl.mechanisms": PLAIN if role == ADMIN else SCRAM,
        "sasl.username": role,
        "sasl.password": password(settings, role),
    }


def jaas_plain(settings: Settings) -> str:
    """The broker's PLAIN login: the admin it accepts and the admin it signs in as to its own controller."""
    secret = password(settings, ADMIN)
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{ADMIN}" password="{secret}" user_{ADMIN}="{secret}";'
    )
