"""Build-time step of the Spark and Airflow images: put the S3A connector into PySpark's jars directory.

`SPARK_IO=s3a` makes Spark read and write `s3a://` directly, which needs hadoop-aws of exactly the Hadoop
version PySpark bundles, the AWS SDK v2 bundle that hadoop-aws was built against, and (since Hadoop 3.5)
the analytics-accelerator library that S3AFileSystem loads. Their versions are pinned once, in
`jvm/s3a/pom.xml`, which local mode resolves with Maven; here (no Maven in the images) each jar is
fetched from Maven Central and checked against the SHA-1 Central publishes beside it, as `mvn -C` does.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

MAVEN = "https://repo1.maven.org/maven2"
POM = Path(__file__).resolve().parent.parent / "jvm" / "s3a" / "pom.xml"
NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def jars(pom: Path = POM) -> list[tuple[str, str, str]]:
    """(groupId, artifactId, version) of each jar the pom pins."""
    root = ET.parse(pom).getroot()
    return [
        (dep.findtext("m:groupId", "", NS), dep.findtext("m:artifactId", "", NS), dep.findtext("m:version", "", NS))
        for dep in root.findall("m:dependencies/m:dependency", NS)
    ]


def hadoop_version(pom: Path = POM) -> str:
    return next(version for _, artifact, version in jars(pom) if artifact == "hadoop-aws")


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def check_hadoop_version(jars_dir: Path, pom: Path = POM) -> None:
    """hadoop-aws must match the bundled hadoop-client jars, or S3A fails at run time with linkage errors."""
    bundled = sorted(p.name for p in jars_dir.glob("hadoop-client-api-*.jar"))
    expected = f"hadoop-client-api-{hadoop_version(pom)}.jar"
    if bundled != [expected]:
        raise SystemExit(f"PySpark bundles {bundled}, but {pom} pins hadoop-aws {hadoop_version(pom)}: update it")


def fetch(group: str, artifact: str, version: str, jars_dir: Path) -> None:
    name = f"{artifact}-{version}.jar"
    url = f"{MAVEN}/{group.replace('.', '/')}/{artifact}/{version}/{name}"
    with urllib.request.urlopen(url + ".sha1", timeout=60) as response:
        published = response.read().decode().split()[0].strip()
    target = jars_dir / name
    digest = hashlib.sha1()
    partial = target.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=120) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown = 0, -1
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            if total and (pct := done * 100 // total) // 10 != shown:
                shown = pct // 10
                print(f"{name}: {pct}% of {total >> 20} MiB", flush=True)
    if digest.hexdigest() != published:
        partial.unlink()
        raise SystemExit(f"{name}: SHA-1 {digest.hexdigest()} != {published} published by Maven Central")
    partial.rename(target)


def main() -> None:
    jars_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else pyspark_jars_dir()
    check_hadoop_version(jars_dir)
    for group, artifact, version in jars():
        fetch(group, artifact, version, jars_dir)


if __name__ == "__main__":
    main()
