"""The JVM services' jars (Kafka, S3Proxy, Spark's S3A connector), resolved from Maven Central by Maven.

Each component is a checked-in, version-pinned `jvm/<component>/pom.xml`. `mvn -C` (strict checksums)
resolves it once into Maven's own local repository (`~/.m2/repository`), and the resulting classpath is
recorded in `~/.cache/mlops-platform/jvm/<component>-<hash of the pom>.classpath`. Both live outside the
project's `.local/`, so `down --purge` never deletes them and every checkout (and CI's fresh clone) on the
machine shares one download; a changed pom gets a new record. The record is written only after Maven
succeeded (atomic rename), so a failed resolution leaves nothing behind and changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from mlops.services.errors import ServiceError
from mlops.settings import PROJECT_ROOT

POM_DIR = PROJECT_ROOT / "jvm"
MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
RESOLVE_TIMEOUT_S = 1800.0
_COORDINATE = re.compile(r"[\w.\-]+:[\w.\-]+:(?:jar|pom)(?::[\w.\-]+)?:[\w.\-]+")


def cache_dir() -> Path:
    """Where the classpath records live (XDG cache); overridable for tests by `MLOPS_JVM_CACHE`."""
    override = os.environ.get("MLOPS_JVM_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlops-platform" / "jvm"


def pom(component: str) -> Path:
    """The component's checked-in, version-pinned pom."""
    return POM_DIR / component / "pom.xml"


def record(component: str) -> Path:
    """The classpath record for the pom as it is now: a changed pom names a new record, so it is resolved again."""
    digest = hashlib.sha256(pom(component).read_bytes()).hexdigest()[:16]
    return cache_dir() / f"{component}-{digest}.classpath"


def property_of(component: str, name: str) -> str:
    """A `<properties>` value of the component's pom (e.g. `kafka.version`): the pom is the one source."""
    node = ET.parse(pom(component)).getroot().find(f"m:properties/m:{name}", MAVEN_NS)
    if node is None or not (node.text or "").strip():
        raise KeyError(f"{pom(component)} has no <properties><{name}>")
    return node.text.strip()


def dependencies(component: str) -> list[tuple[str, str, str]]:
    """(groupId, artifactId, version) of the pom's direct dependencies, `${property}` versions expanded."""
    root = ET.parse(pom(component)).getroot()
    props = {el.tag.split("}")[1]: (el.text or "").strip() for el in root.findall("m:properties/*", MAVEN_NS)}
    out = []
    for dep in root.findall("m:dependencies/m:dependency", MAVEN_NS):
        version = dep.findtext("m:version", "", MAVEN_NS).strip()
        version = re.sub(r"\$\{([^}]+)\}", lambda m: props[m.group(1)], version)
        out.append((dep.findtext("m:groupId", "", MAVEN_NS), dep.findtext("m:artifactId", "", MAVEN_NS), version))
    return out


def installed(component: str) -> list[str] | None:
    """The recorded classpath when every jar of it is still there, else None (never resolves)."""
    try:
        jars = [j for j in record(component).read_text().strip().split(os.pathsep) if j]
    except OSError:
        return None
    return jars if jars and all(Path(j).is_file() for j in jars) else None


def classpath(component: str, service: str) -> list[str]:
    """The component's jars, resolved by Maven on first use; raises ServiceError naming what failed."""
    jars = installed(component)
    return jars if jars is not None else resolve(component, service)


def resolve(component: str, service: str) -> list[str]:
    """Run Maven once for the component; on failure, say which artifact and what to do, and write nothing."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(service, "`mvn` (Maven) not found on PATH, needed once to fetch the jars: "
                                    "apt-get install -y maven, or run ./run.sh, which installs it")  # fmt: skip
    target = record(component)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    log = target.with_name(f"{component}-maven.log")
    argv = [mvn, "-B", "-C", "-f", str(pom(component)), "dependency:build-classpath",
            f"-Dmdep.outputFile={partial}", "-Dmdep.includeScope=runtime"]  # fmt: skip
    print(f"{service}: fetching the {component} jars from Maven Central once (cached in ~/.m2)", flush=True)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S, check=False)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"{exc}", -1
    log.write_text(" ".join(argv) + "\n" + output)
    if code != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise ServiceError(service, _failure(component, output), log)
    partial.rename(target)
    jars = installed(component)
    if jars is None:
        raise ServiceError(service, f"Maven resolved {pom(component)} but its classpath lists missing jars", log)
    return jars


def _failure(component: str, output: str) -> str:
    """One line: the artifact Maven could not get, the root cause, and what to do; nothing was installed."""
    errors = [ln.removeprefix("[ERROR]").strip() for ln in output.splitlines() if ln.startswith("[ERROR]")]
    first = next((e for e in errors if e), output.strip().splitlines()[-1] if output.strip() else "no output")
    first = first.removesuffix("-> [Help 1]").strip()
    found = _COORDINATE.findall(first)
    artifact = found[-1] if found else f"the dependencies of {pom(component).relative_to(PROJECT_ROOT)}"
    cause = first.rsplit("): ", 1)[-1] if "): " in first else first.rsplit(": ", 1)[-1]  # Maven chains causes
    if "checksum" in first.lower():
        action = ("the download does not match the checksum Maven Central publishes: delete that artifact's "
                  "directory under ~/.m2/repository and retry; if it persists, a proxy alters downloads")  # fmt: skip
    else:
        action = "check that Maven Central (repo1.maven.org) is reachable (offline? a proxy for ~/.m2/settings.xml?)"
    return f"Maven could not resolve {artifact}: {cause[:200]}. Nothing was installed or started; {action}, then rerun"
