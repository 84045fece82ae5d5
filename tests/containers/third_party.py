"""Stand-ins for docker-compose.yml's third-party images, built from `standins/` (what each is: standins/README.md).

Each is tagged with the exact name the compose file uses, so compose finds it locally and never pulls. The
JVM stand-ins get their jars from Maven Central on the host (the machine's Maven, strict checksums) into the
build context: Kafka's from standins/kafka/pom.xml, S3Proxy's from local mode's own jvm/s3proxy pom.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from podman_build import Podman

from mlops.services import jvm
from mlops.services.compose_spec import compose_spec

STANDINS = Path(__file__).parent / "standins"
# compose image name (before the tag) -> stand-in directory
BY_IMAGE = {"redis": "redis", "postgres": "postgres", "apache/kafka": "kafka", "quay.io/minio/minio": "minio",
            "kafbat/kafka-ui": "kafka-ui"}  # fmt: skip
NONE_REACHABLE = {"prom/prometheus", "grafana/grafana"}  # the `monitoring` profile: Grafana is in no registry here


def third_party_images() -> dict[str, str]:
    """Compose image -> stand-in directory name, for every service that is pulled rather than built."""
    out = {}
    for service in compose_spec()["services"].values():
        if "build" in service or "image" not in service:
            continue
        image = service["image"]
        name = image.rsplit(":", 1)[0]
        if name in NONE_REACHABLE:
            continue
        if name not in BY_IMAGE:
            raise AssertionError(f"docker-compose.yml names {image}, which has no stand-in in {STANDINS}")
        out[image] = BY_IMAGE[name]
    return out


def _jars(standin: str, libs: Path) -> None:
    libs.mkdir(parents=True, exist_ok=True)
    if standin == "kafka":
        argv = [
            "mvn",
            "-q",
            "-C",
            "-f",
            str(STANDINS / "kafka" / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            f"-Dmaven.repo.local={Path.home() / '.m2' / 'repository'}",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip
        shutil.rmtree(STANDINS / "kafka" / "target", ignore_errors=True)
        if proc.returncode != 0:
            raise AssertionError(f"resolving the Kafka stand-in's jars failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    elif standin == "minio":
        for jar in jvm.classpath("s3proxy", "s3"):
            shutil.copy(jar, libs)


def build_third_party(engine: Podman, work: Path, logs: Path) -> dict[str, float]:
    """Build every stand-in (layers cached by the engine); seconds per image."""
    seconds = {}
    for image, standin in sorted(third_party_images().items()):
        context = work / standin
        shutil.rmtree(context, ignore_errors=True)
        shutil.copytree(STANDINS / standin, context)
        if standin in ("kafka", "minio"):
            _jars(standin, context / "libs")
        seconds[image] = engine.build(context / "Dockerfile", image, context, logs / f"standin-{standin}.log")
    return seconds
