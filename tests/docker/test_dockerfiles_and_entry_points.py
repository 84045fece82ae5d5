"""The images install from the lock of pyproject.toml, bake no secret, and run the entry points local mode runs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from mlops.services.compose_spec import ONE_SHOT, compose_spec
from mlops.services.container_entry import airflow_container_env, build_parser
from mlops.settings import PROJECT_ROOT

DOCKERFILES = {
    "inference": PROJECT_ROOT / "inference" / "Dockerfile",
    "mlflow": PROJECT_ROOT / "mlflow" / "Dockerfile",
    "airflow": PROJECT_ROOT / "airflow" / "Dockerfile",
    "spark": PROJECT_ROOT / "spark-jobs" / "Dockerfile",
}
WORKDIR = "/opt/mlops"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copies(path: Path) -> list[str]:
    """Sources of every COPY (relative to the build context, the project root)."""
    sources = []
    for word, rest in instructions(path):
        if word == "COPY" and "--from" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            sources += parts[:-1]
    return sources


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_image_is_pinned(name: str) -> None:
    froms = [rest for word, rest in instructions(DOCKERFILES[name]) if word == "FROM"]
    assert froms, f"{name}: no FROM"
    for image in froms:
        tag = image.split()[0].rpartition(":")[2]
        pinned = re.fullmatch(r"\d+\.\d+\.\d+-[a-z-]+", tag)
        assert pinned, f"{name}: base image {image} is not pinned to a patch release"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_installs_from_the_lock_of_pyproject(name: str) -> None:
    runs = " ".join(rest for word, rest in instructions(DOCKERFILES[name]) if word == "RUN")
    assert re.search(r"uv pip install [^&]*-r pylock\.toml", runs), f"{name}: dependencies must come from the lock"
    assert re.search(r"uv pip install [^&]*--no-deps -e \.", runs), f"{name}: the package is installed editable"
    assert re.search(r"pip install uv==\d+\.\d+\.\d+ ", runs), f"{name}: the installer itself is pinned"
    assert "requirements" not in runs, f"{name}: no second requirements list"
    assert {"docker/pylock.toml", "pyproject.toml"} <= set(copies(DOCKERFILES[name]))


def test_the_lock_is_made_from_pyproject_and_pins_what_it_pins() -> None:
    """docker/pylock.toml is `uv pip compile` of pyproject.toml's dependencies and `docker` extra (the command is
    in its header): every version pyproject.toml pins is the one locked, and every locked file has a hash.
    After changing a dependency: the header's command, run in the project root, refreshes it."""
    lock_path = PROJECT_ROOT / "docker" / "pylock.toml"
    header = lock_path.read_text().splitlines()[1]
    assert "uv pip compile pyproject.toml --extra docker --universal --python-version 3.11 -o docker/pylock.toml" in (
        header
    ), header
    lock = tomllib.loads(lock_path.read_text())
    locked = {package["name"].lower(): package["version"] for package in lock["packages"]}
    for name, version in pinned_requirements("docker").items():
        assert locked.get(name) == version, f"pyproject.toml pins {name}=={version}, the lock has {locked.get(name)}"
    for package in lock["packages"]:
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f.get("hashes", {}).get("sha256") for f in files), f"{package['name']}: no hash"


def pinned_requirements(*extras: str) -> dict[str, str]:
    """name -> pinned version of the core dependencies and the given extras of pyproject.toml."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]
    pins = {}
    for line in lines:
        name, sep, version = line.split(";")[0].partition("==")
        assert sep, f"pyproject.toml: {line!r} is not pinned"
        pins[re.sub(r"\[.*\]", "", name.strip()).lower()] = version.strip()
    return pins


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_with_lightgbm_have_its_openmp_runtime(name: str) -> None:
    """LightGBM's wheel links the system libgomp.so.1, which python:*-slim images lack."""
    assert "lightgbm" in pinned_requirements("docker"), "lightgbm is installed by every image"
    runs = [rest for word, rest in instructions(DOCKERFILES[name]) if word == "RUN"]
    assert any(re.search(r"apt-get install\b[^&;|]*\blibgomp1\b", run) for run in runs), (
        f"{name}: installs lightgbm but not libgomp1: `import lightgbm` fails in the image"
    )


def test_docker_extra_has_the_drivers_airflow_uses_on_postgres(resolved: dict) -> None:
    """Airflow 3.3 derives a postgresql+asyncpg:// URL from its PostgreSQL connection and imports it at start."""
    conn = resolved["services"]["airflow-init"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert conn.startswith("postgresql+psycopg2://")
    pins = pinned_requirements("docker")
    assert "psycopg2-binary" in pins and "asyncpg" in pins, "the docker extra needs psycopg2-binary and asyncpg"


def test_no_requirements_file_in_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if re.search(r"requirements[^/]*\.(txt|in)$", f)]


def test_dependency_layers_are_identical_in_every_image() -> None:
    """Docker builds the heavy install once when the first instructions are the same in all four files."""
    prefixes = set()
    for path in DOCKERFILES.values():
        steps = instructions(path)
        until = next(i for i, (word, rest) in enumerate(steps) if word == "RUN" and "pylock.toml" in rest)
        prefixes.add(tuple(steps[: until + 1]))
    assert len(prefixes) == 1, "the FROM..pip install block differs between Dockerfiles"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_copied_sources_exist(name: str) -> None:
    for source in copies(DOCKERFILES[name]):
        assert (PROJECT_ROOT / source).exists(), f"{name}: COPY {source}: no such file in the build context"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_no_secret_in_any_image(name: str) -> None:
    for word, rest in instructions(DOCKERFILES[name]):
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", rest, re.I), f"{name}: {word} {rest}"
        if word in ("COPY", "ADD"):
            assert ".env" not in rest.split(), f"{name}: copies .env into the image"
    assert any(word == "USER" and rest != "root" for word, rest in instructions(DOCKERFILES[name])), (
        f"{name}: runs as root"
    )


def test_dockerignore_keeps_secrets_and_state_out_of_the_context() -> None:
    patterns = {p.strip() for p in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()}
    for required in (".env", ".venv", ".local", ".git"):
        assert required in patterns, f".dockerignore must exclude {required}"
    assert "!.env.example" in patterns


def test_java_images_carry_the_s3a_connector() -> None:
    for name in ("airflow", "spark"):
        runs = " ".join(rest for word, rest in instructions(DOCKERFILES[name]) if word == "RUN")
        assert "openjdk-17-jre-headless" in runs and "fetch_s3a_jars.py" in runs, name


def test_s3a_jars_match_the_hadoop_that_pyspark_bundles() -> None:
    """hadoop-aws is pinned to the hadoop-client version inside the pinned PySpark (checked here, offline)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_s3a_jars", PROJECT_ROOT / "docker" / "fetch_s3a_jars.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.check_hadoop_version(module.pyspark_jars_dir())
    pinned = {artifact: version for _, artifact, version in module.jars()}
    assert set(pinned) == {"hadoop-aws", "bundle", "analyticsaccelerator-s3"}
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in pinned.values()), pinned


# --- each compose command traces to the entry point local mode runs ------------------------------


def command_of(resolved: dict, service: str) -> list[str]:
    return [str(part) for part in resolved["services"][service]["command"]]


def dockerfile_of(resolved: dict, service: str) -> Path:
    build = resolved["services"][service]["build"]
    return Path(build["context"]) / build["dockerfile"]


def test_consumer_runs_inference_queue_consumer(resolved: dict) -> None:
    command = command_of(resolved, "inference")
    assert command == ["python", "inference/queue_consumer.py"]
    assert (PROJECT_ROOT / "inference" / "queue_consumer.py").is_file()
    assert "inference" in copies(dockerfile_of(resolved, "inference"))
    cmd = [rest for word, rest in instructions(dockerfile_of(resolved, "inference")) if word == "CMD"][-1]
    assert "inference/queue_consumer.py" in cmd


def test_module_commands_parse(resolved: dict) -> None:
    """Every `python -m mlops.services.container_entry ...` command is one the module accepts."""
    parser = build_parser()
    seen = set()
    for name in resolved["services"]:
        command = resolved["services"][name].get("command")
        if command and command[:3] == ["python", "-m", "mlops.services.container_entry"]:
            args = parser.parse_args(command[3:])
            seen.add(args.verb)
    assert seen == {"provision", "mlflow", "airflow"}


def test_airflow_components_are_local_modes(resolved: dict) -> None:
    from mlops.services.airflow_config import airflow_commands

    local = {name.removeprefix("airflow-") for name, _ in airflow_commands()}
    for service in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-init"):
        component = command_of(resolved, service)[-1]
        assert component == "init" or component in local, f"{service}: {component} is not a local-mode component"
    assert {command_of(resolved, s)[-1] for s in resolved["services"] if s.startswith("airflow-")} >= local | {"init"}
    assert "airflow-init" in ONE_SHOT


def test_airflow_image_holds_the_dag_and_every_step_entry_point(resolved: dict) -> None:
    from mlops.orchestration.steps import STEPS
    from mlops.services.airflow_config import DAGS_FOLDER

    copied = set(copies(dockerfile_of(resolved, "airflow-scheduler")))
    dags = DAGS_FOLDER.relative_to(PROJECT_ROOT)
    assert dags.as_posix() == "airflow/dags" and (PROJECT_ROOT / dags / "mlops_platform.py").is_file()
    assert dags.parts[0] in copied
    for step in STEPS.values():
        top = Path(step.script).parts[0]
        assert top in copied, f"step {step.task_id}: {step.script} is not in the Airflow image"


def test_airflow_container_env_is_local_modes_with_compose_overrides(
    resolved: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The containers run local mode's Airflow configuration; compose's AIRFLOW__* values win."""
    from mlops.settings import Settings

    compose_env = resolved["services"]["airflow-scheduler"]["environment"]
    for key, value in compose_env.items():
        if key.startswith("AIRFLOW__"):
            monkeypatch.setenv(key, str(value))
    settings = Settings(local_dir=str(tmp_path), airflow_url="http://airflow-apiserver:8080")
    env = airflow_container_env(settings)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("airflow/dags")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # Secrets are generated at run time into the shared volume, identical for every component.
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == airflow_container_env(settings)["AIRFLOW__API_AUTH__JWT_SECRET"]


def test_airflow_state_is_shared_by_every_component(resolved: dict) -> None:
    """The generated signing keys and task logs live in AIRFLOW_HOME: one volume for all components."""
    mounts = {}
    for service in ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        volumes = resolved["services"][service]["volumes"]
        mounts[service] = {(v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2])
                           for v in volumes}  # fmt: skip
    assert len({frozenset(m) for m in mounts.values()}) == 1
    assert ("airflow-state", f"{WORKDIR}/.local") in next(iter(mounts.values()))


def test_compose_replicas_name_themselves_after_their_host() -> None:
    """Every replica of `inference` runs the same command (no --index): named after its host (the container's
    id), each keeps a drift window and a client id of its own; one shared name made the first Docker run's two
    replicas both `inference-0`, overwriting each other's window."""
    import socket

    from mlops.consumer.app import consumer_label

    command = [str(part) for part in compose_spec()["services"]["inference"]["command"]]
    assert "--index" not in command
    assert consumer_label(None) == socket.gethostname()
    assert consumer_label(1) == 1
