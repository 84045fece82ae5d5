"""The pinned JVM components: one Kafka version for both modes, and every pom pinned (no ranges, no LATEST)."""

from __future__ import annotations

import re

import yaml

from mlops.services import jvm, specs
from mlops.settings import PROJECT_ROOT


def test_local_mode_runs_the_kafka_version_docker_compose_runs() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    image = compose["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{specs.kafka_version()}"
    assert ("org.apache.kafka", "kafka_2.13", specs.kafka_version()) in jvm.dependencies("kafka")


def test_every_jar_version_is_pinned_exactly() -> None:
    for component in ("kafka", "s3proxy", "s3a"):
        deps = jvm.dependencies(component)
        assert deps, component
        for group, artifact, version in deps:
            assert re.fullmatch(r"\d+(\.\d+)+", version), f"{component}: {group}:{artifact} version {version!r}"
        plugin = jvm.pom(component).read_text()
        assert "<artifactId>maven-dependency-plugin</artifactId>\n        <version>3.8.1</version>" in plugin


def test_the_classpath_record_follows_the_pom(tmp_path, monkeypatch) -> None:
    """A changed pom gets a record of its own: the jars of an older pin are never reused for a newer one."""
    monkeypatch.setenv("MLOPS_JVM_CACHE", str(tmp_path))
    before = jvm.record("kafka")
    assert before.parent == tmp_path and before.name.startswith("kafka-")
    poms = tmp_path / "jvm"
    (poms / "kafka").mkdir(parents=True)
    (poms / "kafka" / "pom.xml").write_text(jvm.pom("kafka").read_text() + "<!-- changed -->\n")
    monkeypatch.setattr(jvm, "POM_DIR", poms)
    assert jvm.record("kafka") != before
    assert jvm.installed("kafka") is None  # nothing recorded for it: `classpath` would resolve it
