"""Build-time step of the Spark and Airflow images: put the S3A connector into PySpark's jars directory.

`SPARK_IO=s3a` (Docker mode) makes Spark read and write `s3a://` directly, which needs hadoop-aws of
exactly the Hadoop version PySpark bundles, the AWS SDK v2 bundle that hadoop-aws was built against, and
(since Hadoop 3.5) the analytics-accelerator library that S3AFileSystem loads. Each jar is pinned by
URL and checked against Maven Central's published SHA-1, so a build never picks up a different jar.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from pathlib import Path

MAVEN = "https://repo1.maven.org/maven2"
HADOOP_VERSION = "3.5.0"

# (path under Maven Central, SHA-1 published next to it)
JARS = (
    (f"org/apache/hadoop/hadoop-aws/{HADOOP_VERSION}/hadoop-aws-{HADOOP_VERSION}.jar",
     "9e594525d264c0db653c7f68da98b245f7d61ea5"),
    ("software/amazon/awssdk/bundle/2.35.4/bundle-2.35.4.jar",
     "7252265e3970b214708e68a8b74a8fa8c875af1e"),
    ("software/amazon/s3/analyticsaccelerator/analyticsaccelerator-s3/1.3.1/analyticsaccelerator-s3-1.3.1.jar",
     "6c9bd0f6c440c9a78e82d272f5f0252d942419f6"),
)


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def check_hadoop_version(jars_dir: Path) -> None:
    """hadoop-aws must match the bundled hadoop-client jars, or S3A fails at run time with linkage errors."""
    bundled = sorted(p.name for p in jars_dir.glob("hadoop-client-api-*.jar"))
    expected = f"hadoop-client-api-{HADOOP_VERSION}.jar"
    if bundled != [expected]:
        raise SystemExit(f"PySpark bundles {bundled}, but hadoop-aws {HADOOP_VERSION} is pinned: update JARS")


def fetch(path: str, sha1: str, jars_dir: Path) -> None:
    target = jars_dir / path.rsplit("/", 1)[1]
    digest = hashlib.sha1()
    partial = target.with_suffix(".part")
    with urllib.request.urlopen(f"{MAVEN}/{path}", timeout=120) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown = 0, -1
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            if total and (pct := done * 100 // total) // 10 != shown:
                shown = pct // 10
                print(f"{target.name}: {pct}% of {total >> 20} MiB", flush=True)
    if digest.hexdigest() != sha1:
        partial.unlink()
        raise SystemExit(f"{target.name}: SHA-1 {digest.hexdigest()} != pinned {sha1}")
    partial.rename(target)


def main() -> None:
    jars_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else pyspark_jars_dir()
    check_hadoop_version(jars_dir)
    for path, sha1 in JARS:
        fetch(path, sha1, jars_dir)


if __name__ == "__main__":
    main()
