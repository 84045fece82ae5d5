"""Failures are classified by what they mean (pure logic), and a Redis too old for the consumer is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from confluent_kafka import KafkaError

from mlops import registry
from mlops.consumer.failures import Kind, classify, describe, kafka_kind
from mlops.services import health, process
from mlops.services.errors import ServiceError
from mlops.services.specs import Launch


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (redis.ConnectionError("Connection refused"), Kind.TRANSIENT),
        (redis.TimeoutError("Timeout reading from socket"), Kind.TRANSIENT),
        (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), Kind.TRANSIENT),
        (redis.ResponseError("BUSY Redis is busy running a script"), Kind.TRANSIENT),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), Kind.TRANSIENT),
        (redis.ResponseError("READONLY You can't write against a read only replica. script: x"), Kind.TRANSIENT),
        (redis.ResponseError("MASTERDOWN Link with MASTER is down"), Kind.TRANSIENT),
        (ConnectionResetError("reset by peer"), Kind.TRANSIENT),
        (TimeoutError("timed out"), Kind.TRANSIENT),
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), Kind.PERMANENT),
        (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'. script: f_1"), Kind.PERMANENT),
        (redis.ResponseError("Error running script: @user_script:4: used memory > 'maxmemory'"), Kind.PERMANENT),
        (redis.AuthenticationError("invalid username-password pair"), Kind.PERMANENT),
        (redis.ResponseError("NOAUTH Authentication required."), Kind.PERMANENT),
        (redis.exceptions.NoPermissionError("this user has no permissions to run the 'evalsha' command"),
         Kind.PERMANENT),
        (redis.ResponseError("unknown command 'EVALSHA', with args beginning with: "), Kind.PERMANENT),
        (redis.ResponseError("ERR Error running script (call to f_1): @user_script:4: ERR syntax error"),
         Kind.PERMANENT),  # SET ... NX GET on a Redis older than 7.0
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's unable to persist"),
         Kind.PERMANENT),
        (FileNotFoundError(2, "No such file or directory"), Kind.REQUEST),  # an OSError, but not transient
        (PermissionError(13, "Permission denied"), Kind.REQUEST),
        (ValueError("the model cannot score this movie"), Kind.REQUEST),
        (KeyError("user"), Kind.REQUEST),
        (redis.DataError("Invalid input of type: 'NoneType'"), Kind.REQUEST),
    ],
)  # fmt: skip
def test_failures_are_classified_by_meaning(exc, kind):
    assert classify(exc) is kind


def test_kafka_delivery_errors_by_meaning():
    assert kafka_kind(KafkaError(KafkaError._MSG_TIMED_OUT)) is Kind.TRANSIENT
    assert kafka_kind(KafkaError(KafkaError._TRANSPORT)) is Kind.TRANSIENT
    assert kafka_kind(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)) is Kind.TRANSIENT
    assert kafka_kind(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)) is Kind.PERMANENT
    assert kafka_kind(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)) is Kind.REQUEST  # that record alone


def test_describe_is_one_line_without_traceback():
    try:
        raise ValueError("first line\n  Traceback (most recent call last):\n  second")
    except ValueError as exc:
        text = describe(exc)
    assert "\n" not in text and text.startswith("ValueError: first line")


def test_artifact_missing_only_on_a_confirmed_absence():
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    def wrapped(cause: BaseException) -> MlflowException:
        try:
            raise MlflowException("Failed to download artifacts") from cause
        except MlflowException as exc:
            return exc

    assert registry.artifact_missing(client_error("NoSuchKey", 404))
    assert registry.artifact_missing(wrapped(client_error("404", 404)))
    assert registry.artifact_missing(wrapped(FileNotFoundError(2, "No such file", "MLmodel")))
    assert registry.artifact_missing(MlflowException("Could not find an MLmodel", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not registry.artifact_missing(client_error("InternalError", 500))
    assert not registry.artifact_missing(wrapped(client_error("SlowDown", 503)))
    assert not registry.artifact_missing(wrapped(EndpointConnectionError(endpoint_url="http://s3")))
    assert not registry.artifact_missing(wrapped(ReadTimeoutError(endpoint_url="http://s3")))
    assert not registry.artifact_missing(MlflowException("internal", error_code=INTERNAL_ERROR))


def test_a_redis_older_than_7_is_refused_with_a_clear_message():
    health.require_redis_version("7.0.15")
    health.require_redis_version("7.4.2")
    for old in ("6.2.14", "5.0.7"):
        with pytest.raises(health.Incompatible, match=rf"redis {old} is too old: .* needs 7.0 or newer \(SET"):
            health.require_redis_version(old)


def test_up_fails_at_once_on_an_incompatible_server(tmp_path):
    """wait_ready does not spend its whole timeout on a server that answers but will never do."""

    def check() -> str:
        health.require_redis_version("6.2.14")
        return "ok"

    launch = Launch(name="redis", service="redis", argv=(sys.executable, "-c", "import time; time.sleep(60)"),
                    url="redis://x", check=check, timeout_s=60)  # fmt: skip
    proc = subprocess.Popen(launch.argv, start_new_session=True)
    try:
        with pytest.raises(ServiceError, match=r"redis 6\.2\.14 is too old"):
            process.wait_ready(launch, proc, tmp_path / "redis.log")
        assert proc.wait(10) is not None  # and it was stopped
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.integration
def test_the_fixture_redis_passes_the_version_check(base_settings, redis_server):
    assert health.redis_ping(base_settings).startswith("PING ok, redis 7.")
