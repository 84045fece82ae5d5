"""The one-shot containers' command (`python -m mlops.services.container_entry provision ...`) against real servers.

minio-init and kafka-init run exactly this; the test runs it as a process with the settings in its
environment, as compose passes them, and checks what the broker and the object store then hold.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from mlops import kafka_auth
from mlops.services.health import s3_client
from mlops.services.specs import settings_environ
from mlops.settings import PROJECT_ROOT, Settings
from mlops.topics import TOPICS

pytestmark = pytest.mark.integration


def run_entry(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", **settings_environ(settings)}
    return subprocess.run(
        [sys.executable, "-m", "mlops.services.container_entry", "provision", *args],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_buckets_entry_creates_the_configured_buckets_idempotently(settings: Settings) -> None:
    suffix = uuid.uuid4().hex[:8]
    mine = settings.replace(s3_bucket=f"docker-data-{suffix}", mlflow_artifact_bucket=f"docker-art-{suffix}")
    first = run_entry(mine, "buckets")
    assert first.returncode == 0, first.stderr
    assert f"created docker-data-{suffix}, docker-art-{suffix}" in first.stdout
    client = s3_client(mine)
    assert client.bucket_exists(mine.s3_bucket) and client.bucket_exists(mine.mlflow_artifact_bucket)
    second = run_entry(mine, "buckets")
    assert second.returncode == 0 and "all existed" in second.stdout


def test_topics_entry_leaves_the_contract_topics_with_their_partitions(settings: Settings) -> None:
    proc = run_entry(settings, "topics")
    assert proc.returncode == 0, proc.stderr
    meta = AdminClient(kafka_auth.client_config(settings, kafka_auth.PLATFORM)).list_topics(timeout=10)
    for spec in TOPICS:
        assert spec.name in meta.topics, f"{spec.name} missing"
        assert len(meta.topics[spec.name].partitions) >= spec.partitions


def test_entry_fails_loudly_when_the_store_is_unreachable(settings: Settings) -> None:
    broken = settings.replace(s3_endpoint_url="http://127.0.0.1:9")  # nothing listens on the discard port
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys, mlops.services.container_entry as c; from mlops.settings import get_settings;"
         "c.provision('buckets', get_settings(), attempts=2)"],
        env={"PATH": "/usr/bin:/bin", **settings_environ(broken)}, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "attempt 1/2 failed" in proc.stdout
