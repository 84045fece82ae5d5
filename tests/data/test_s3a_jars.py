"""Where the S3A jars are looked for: spark-submit imports pyspark from a zip, so SPARK_HOME comes first."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops import spark_io


def test_jars_in_spark_home_are_used_as_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Docker images put hadoop-aws into PySpark's jars; under spark-submit `pyspark.__file__` is inside
    $SPARK_HOME/python/lib/pyspark.zip, and only SPARK_HOME tells where those jars are (the first Docker run of
    the whole stack failed every Spark step asking for Maven)."""
    (tmp_path / "jars").mkdir()
    (tmp_path / "jars" / "hadoop-aws-3.5.0.jar").write_bytes(b"")
    monkeypatch.setenv("SPARK_HOME", str(tmp_path))
    assert spark_io.s3a_classpath() == ""


def test_without_them_the_pinned_jars_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_HOME", str(tmp_path))
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr("mlops.services.jvm.classpath", lambda c, s: asked.append((c, s)) or ["/a.jar", "/b.jar"])
    assert spark_io.s3a_classpath() == "/a.jar:/b.jar" and asked == [("s3a", "spark")]
