"""docker-compose.yml resolves, pins, limits and health-checks every service, and uses the settings' names."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from dotenv import dotenv_values

from mlops import settings as settings_module
from mlops.services.compose import CLI_VARIABLES
from mlops.services.compose_spec import (
    COMPOSE_FILE,
    CONSUMER,
    HOST_ONLY_SETTINGS,
    ONE_SHOT,
    endpoint_mismatches,
    mebibytes,
    published_port,
    spark_sizing_problems,
)
from mlops.settings import PROJECT_ROOT, Settings, env_names, load_settings

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
OUR_IMAGE = re.compile(r"^mlops/[a-z-]+:")
GIB = 1024**3


def memory_bytes(value: str | int) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([bkmg]?)b?", str(value).lower())
    assert m, f"unreadable memory limit {value!r}"
    return int(float(m.group(1)) * 1024 ** "bkmg".index(m.group(2) or "b"))


def host_ports(service: dict) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port, from v1 strings or v2 long syntax; host port
    0 where Docker picks one (`127.0.0.1::9108`)."""
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append((entry.get("host_ip", ""), int(entry.get("published") or 0), int(entry["target"])))
        else:
            parts = str(entry).split("/")[0].rsplit(":", 2)
            assert len(parts) == 3, f"port {entry!r}: publish as ip:host:container (or ip::container)"
            out.append((parts[0], int(parts[1] or 0), int(parts[2])))
    return out


def is_one_shot(name: str) -> bool:
    return name in ONE_SHOT


# --- the file resolves ---------------------------------------------------------------------------


def test_resolves_with_env_example(resolved: dict) -> None:
    assert CONSUMER in resolved["services"]
    for name in ("minio", "redis", "kafka", "kafka-ui", "postgres", "mlflow", "spark-master", "spark-worker",
                 "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "minio-init", "kafka-init", "prometheus", "grafana"):  # fmt: skip
        assert name in resolved["services"], f"service {name} missing from docker-compose.yml"


def test_every_variable_is_defined_in_env_example() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text())) - set(CLI_VARIABLES)
    defined = set(dotenv_values(ENV_EXAMPLE))
    missing = sorted(used - defined)
    assert not missing, f"docker-compose.yml uses {missing}, not defined in .env.example (add them there)"


def test_every_variable_is_a_setting() -> None:
    """Compose interpolates only names that mlops/settings.py defines (one source of truth for .env), and the
    variables the CLI itself sets for a host-path dataset (compose.CLI_VARIABLES, never in .env)."""
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text())) - set(CLI_VARIABLES)
    unknown = sorted(used - set(env_names()))
    assert not unknown, f"docker-compose.yml interpolates {unknown}, which are not fields of mlops.settings.Settings"


# --- images, builds, paths -----------------------------------------------------------------------


def test_images_are_pinned(resolved: dict) -> None:
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, svc in resolved["services"].items():
        image = svc.get("image")
        assert image, f"{name}: no image tag (built images are tagged mlops/<name>:<version>)"
        _, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and tag, f"{name}: image {image!r} is not pinned"
        if OUR_IMAGE.match(image):
            assert tag == version, f"{name}: our image {image} must carry the project version {version}"
            assert "build" in svc, f"{name}: {image} is built here: give it its build block"


def test_builds_use_the_service_dockerfiles(resolved: dict) -> None:
    dockerfiles = set()
    for name, svc in resolved["services"].items():
        if "build" not in svc:
            continue
        context = Path(svc["build"]["context"])
        assert context.resolve() == PROJECT_ROOT.resolve(), f"{name}: build context must be the project root"
        dockerfile = context / svc["build"].get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        dockerfiles.add(dockerfile.relative_to(context).as_posix())
    assert dockerfiles == {"airflow/Dockerfile", "mlflow/Dockerfile", "inference/Dockerfile", "spark-jobs/Dockerfile"}


def test_bind_mounts_exist(resolved: dict) -> None:
    declared = set(resolved.get("volumes", {}))
    for name, svc in resolved["services"].items():
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: bind-mounted {source} does not exist"
                assert Path(source).resolve().is_relative_to(PROJECT_ROOT.resolve()), f"{name}: mounts {source}"
            else:
                assert source in declared, f"{name}: volume {source} is not declared under volumes:"


def test_stateful_services_keep_data_in_named_volumes(resolved: dict) -> None:
    expected = {"minio": "/data", "redis": "/data", "postgres": "/var/lib/postgresql/data",
                "kafka": "/var/lib/kafka/data", "prometheus": "/prometheus", "grafana": "/var/lib/grafana",
                "airflow-scheduler": "/opt/mlops/.local"}  # fmt: skip
    declared = set(resolved.get("volumes", {}))
    for name, target in expected.items():
        mounts = {}
        for volume in resolved["services"][name].get("volumes", []):
            if isinstance(volume, dict):
                mounts[volume["target"]] = volume["source"]
            else:
                source, path = str(volume).split(":")[:2]
                mounts[path] = source
        assert mounts.get(target) in declared, f"{name}: {target} must be a named volume, got {mounts}"


# --- health, dependencies, limits, ports ---------------------------------------------------------


def test_every_service_has_healthcheck_or_is_a_one_shot(resolved: dict) -> None:
    for name, svc in resolved["services"].items():
        if is_one_shot(name):
            assert svc.get("restart", "no") == "no", f"{name}: a one-shot job must not restart"
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test != ["NONE"] and not svc["healthcheck"].get("disable"), f"{name}: no healthcheck"
        assert svc.get("restart") == "unless-stopped", f"{name}: long-running services restart unless stopped"


def test_dependencies_have_conditions(resolved: dict) -> None:
    for name, svc in resolved["services"].items():
        for dep, spec in svc.get("depends_on", {}).items():
            assert dep in resolved["services"], f"{name} depends on unknown service {dep}"
            condition = spec.get("condition")
            if is_one_shot(dep):
                assert condition == "service_completed_successfully", f"{name} -> {dep}: wait for completion"
            elif dep == CONSUMER:
                assert condition == "service_started", f"{name} -> {dep}: consumers wait for a model, start is enough"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}: wait for health, not just start"


def test_one_shots_are_awaited() -> None:
    """Each one-shot job is a dependency of someone, so `up` cannot run ahead of it."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    awaited = {dep for svc in services.values() for dep in svc.get("depends_on", {})}
    assert set(ONE_SHOT) <= awaited, f"one-shot jobs nobody waits for: {set(ONE_SHOT) - awaited}"


def test_memory_limits_fit_a_16_gib_laptop(resolved: dict) -> None:
    total = 0
    for name, svc in resolved["services"].items():
        limit = svc.get("mem_limit") or svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
        assert limit, f"{name}: no memory limit"
        if not is_one_shot(name):
            total += memory_bytes(limit)
    assert total <= 12.875 * GIB, f"long-running services may use {total / GIB:.1f} GiB: too much for a 16 GiB laptop"


def test_no_host_port_collides_and_all_bind_loopback(resolved: dict) -> None:
    seen: dict[int, str] = {}
    for name, svc in resolved["services"].items():
        for ip, host, _ in host_ports(svc):
            assert ip == "127.0.0.1", f"{name}: port {host} must bind 127.0.0.1, not {ip or 'all interfaces'}"
            if host == 0:  # Docker picks a free one
                continue
            assert host not in seen, f"host port {host} published by both {seen[host]} and {name}"
            seen[host] = name


def test_consumer_is_scalable(resolved: dict) -> None:
    svc = resolved["services"][CONSUMER]
    assert "container_name" not in svc, "a fixed container_name breaks --scale"
    assert all(host == 0 for _, host, _ in host_ports(svc)), "a fixed host port breaks --scale (Docker picks one)"
    for name, other in resolved["services"].items():
        assert name == CONSUMER or "container_name" not in other, f"{name}: no container_name (project prefix)"


def test_host_view_matches_published_ports(raw: dict) -> None:
    """The host CLI uses .env unchanged in Docker mode: the URL settings' ports are the published ones."""
    settings = load_settings(ENV_EXAMPLE, environ={})
    assert endpoint_mismatches(settings, raw) == []
    assert published_port(raw, "kafka-ui", 8080) == ("127.0.0.1", "8090"), "Kafka UI belongs on 8090"


def test_endpoint_mismatch_is_reported(raw: dict) -> None:
    settings = load_settings(ENV_EXAMPLE, environ={}).replace(airflow_url="http://127.0.0.1:8088")
    problems = endpoint_mismatches(settings, raw)
    assert len(problems) == 1 and "AIRFLOW_URL" in problems[0] and "8080" in problems[0]
    settings = settings.replace(airflow_url="http://127.0.0.1:8080", kafka_bootstrap_servers="localhost:9092")
    (problem,) = endpoint_mismatches(settings, raw)
    assert problem.startswith("KAFKA_BOOTSTRAP_SERVERS=localhost:9092")


# --- one source of truth for settings ------------------------------------------------------------


def test_shared_environment_is_exactly_the_settings(raw: dict) -> None:
    """x-mlops-env passes every Settings field (by its own name) except the documented host-only ones."""
    passed = set(raw["x-mlops-env"])
    names = set(env_names())
    assert passed <= names, f"x-mlops-env passes names that are not settings: {sorted(passed - names)}"
    unknown = set(HOST_ONLY_SETTINGS) - names
    assert not unknown, f"HOST_ONLY_SETTINGS names unknown settings: {unknown}"
    missing = names - passed - set(HOST_ONLY_SETTINGS)
    assert not missing, f"settings not passed to the containers (add to x-mlops-env or HOST_ONLY_SETTINGS): {missing}"
    assert not passed & set(HOST_ONLY_SETTINGS)


def test_our_containers_get_settings_by_their_names_only(resolved: dict, raw: dict) -> None:
    """Our images receive the settings (same values everywhere) plus Airflow/Spark config, nothing ad hoc."""
    allowed_extra = re.compile(r"^(AIRFLOW__[A-Z_]+__[A-Z_]+|SPARK_DAEMON_MEMORY|SPARK_WORKER_DIR)$")
    reference = resolved["services"][CONSUMER]["environment"]
    for name, svc in resolved["services"].items():
        if not OUR_IMAGE.match(svc.get("image", "")) or name == "mlflow":
            continue
        env = svc.get("environment", {})
        for key, value in env.items():
            if key in reference:
                assert value == reference[key], f"{name}: {key}={value!r} differs from the shared {reference[key]!r}"
            else:
                assert allowed_extra.match(key), f"{name}: {key} is neither a setting nor Airflow/Spark configuration"


def test_service_host_names_are_compose_services(resolved: dict) -> None:
    env = resolved["services"][CONSUMER]["environment"]
    services = resolved["services"]

    def host_port(url: str) -> tuple[str | None, int | None]:
        parsed = urlparse(url)
        return parsed.hostname, parsed.port

    host, port = env["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)
    endpoints = {
        "REDIS_HOST": (env["REDIS_HOST"], int(env["REDIS_PORT"])),
        "KAFKA_BOOTSTRAP_SERVERS": (host, int(port)),
        **{name: host_port(env[name]) for name in ("S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "AIRFLOW_URL")},
        "SPARK_MASTER": host_port(env["SPARK_MASTER"]),
    }
    for setting, (host, port) in endpoints.items():
        assert host in services, f"{setting}: host {host!r} is not a compose service"
        svc = services[host]
        listening = (
            " ".join(map(str, svc.get("command") or []))
            + " "
            + " ".join(f"{k}={v}" for k, v in (svc.get("environment") or {}).items())
        )
        default_port = {"redis": 6379}.get(host)
        assert str(port) in listening or port == default_port, f"{setting}: {host} does not listen on {port}"
    assert urlparse(env["SPARK_MASTER"]).scheme == "spark" and env["SPARK_IO"] == "s3a"


def test_mlflow_server_gets_local_modes_client_environment(resolved: dict) -> None:
    """The artifact proxy's boto3 variables: the same names local mode's server gets (specs.s3_client_environ)."""
    from mlops.services.specs import s3_client_environ

    env = resolved["services"]["mlflow"]["environment"]
    settings = load_settings(ENV_EXAMPLE, environ={})
    for key, value in s3_client_environ(settings).items():
        assert key in env, f"mlflow: {key} missing"
        if key != "MLFLOW_S3_ENDPOINT_URL":
            assert env[key] == value, f"mlflow: {key}={env[key]!r}, settings give {value!r}"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == resolved["services"][CONSUMER]["environment"]["S3_ENDPOINT_URL"]
    command = resolved["services"]["mlflow"]["command"]
    assert f"--artifacts-destination=s3://{settings.mlflow_artifact_bucket}" in command
    # The entry adds --app-name basic-auth and --serve-artifacts (as local mode's launch has them).
    assert command[:4] == ["python", "-m", "mlops.services.container_entry", "mlflow"]
    assert "MLFLOW_ADMIN_PASSWORD" in env and env["MLFLOW_AUTH_DATABASE_URI"].startswith("sqlite:////auth/")
    assert any(volume.get("target") == "/auth" for volume in resolved["services"]["mlflow"]["volumes"])


def test_the_mlflow_entry_starts_basic_auth_with_no_secret_on_its_command_line(tmp_path, monkeypatch) -> None:
    """What the container's entry execs: `mlflow server --app-name basic-auth --serve-artifacts ...`, its
    configuration written where MLFLOW_AUTH_CONFIG_DIR says, the admin password in the environment only."""
    from mlops.services import container_entry

    execs: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(container_entry.os, "execvpe", lambda file, argv, env: execs.append((argv, env)))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_AUTH_DATABASE_URI", "sqlite:////auth/auth.db")
    monkeypatch.setenv("MLFLOW_ADMIN_PASSWORD", "admin-password-for-the-test")
    settings_module.get_settings.cache_clear()
    try:
        container_entry.main(["mlflow", "--port=5000", "--workers=2", "--artifacts-destination=s3://b"])
    finally:
        settings_module.get_settings.cache_clear()
    ((argv, env),) = execs
    assert argv[:4] == ["mlflow", "server", "--app-name", "basic-auth"] and "--serve-artifacts" in argv
    assert "--artifacts-destination=s3://b" in argv and not any("admin-password" in a for a in argv)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "admin-password-for-the-test"
    assert "database_uri = sqlite:////auth/auth.db" in (tmp_path / "basic_auth.ini").read_text()
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "basic_auth.ini")


def test_topic_and_bucket_names_come_from_the_settings_and_topics_module() -> None:
    """No topic or bucket name is written in the compose file or docker/: kafka-init and minio-init create them
    by the same functions as local mode (mlops.services.provision over mlops.topics and the settings)."""
    from mlops.topics import TOPICS

    settings = Settings()
    texts = {p: p.read_text() for p in [COMPOSE_FILE, *(PROJECT_ROOT / "docker").rglob("*")] if p.is_file()}
    names = [spec.name for spec in TOPICS] + [settings.s3_bucket, settings.mlflow_artifact_bucket]
    for path, text in texts.items():
        for name in names:
            assert name not in text, f"{path.relative_to(PROJECT_ROOT)} hard-codes {name!r}"
    compose = COMPOSE_FILE.read_text()
    assert 'KAFKA_AUTO_CREATE_TOPICS_ENABLE: "false"' in compose, "topics must never be created implicitly"


def test_fields_used_by_compose_module_exist() -> None:
    """Password settings Docker mode checks are Settings fields (the lead adds POSTGRES_PASSWORD and
    GRAFANA_ADMIN_PASSWORD to settings.py and .env.example)."""
    from mlops.services.passwords import PASSWORD_SETTINGS

    names = {f.name for f in fields(Settings)}
    missing = [n for n in PASSWORD_SETTINGS if n not in names]
    assert not missing, f"mlops.settings.Settings lacks {missing}"


@pytest.mark.parametrize("profile_service", ["prometheus", "grafana"])
def test_monitoring_is_an_optional_profile(resolved: dict, profile_service: str) -> None:
    assert resolved["services"][profile_service].get("profiles") == ["monitoring"]


def test_file_and_resolution_match_the_current_compose_spec(resolved: dict, tmp_path: Path) -> None:
    """docker-compose v1 validates against its own (older) schema; `docker compose` v2 uses the current
    compose-spec schema, which check-jsonschema ships: both the file as written and resolved must pass."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (dev extra) is not installed")
    resolved_file = tmp_path / "resolved.yml"
    resolved_file.write_text(yaml.safe_dump(resolved))
    for path in (COMPOSE_FILE, resolved_file):
        proc = subprocess.run(
            [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"{path.name} violates the compose spec:\n{proc.stdout}{proc.stderr}"


def test_the_memory_limits_add_up_to_what_the_file_and_the_docs_say(raw: dict) -> None:
    """The long-running services' limits (one consumer; one-shots excluded), with and without the monitoring
    profile, are the figures the compose header and the reference quote."""
    base = monitoring = 0
    for name, svc in raw["services"].items():
        if name in ONE_SHOT:
            continue
        limit = mebibytes(svc["mem_limit"], f"{name} mem_limit")
        monitoring += limit
        base += 0 if "monitoring" in svc.get("profiles", []) else limit
    said = f"add up to {base / 1024:g} GiB with one consumer ({monitoring / 1024:g} GiB with the monitoring profile)"
    assert said in " ".join(COMPOSE_FILE.read_text().replace("#", " ").split()), said
    assert said in " ".join((PROJECT_ROOT / "docs" / "reference.md").read_text().split()), said


def test_the_spark_sizes_agree_and_a_contradiction_is_named(raw: dict) -> None:
    """The executor fits the worker's offer, the worker's executors and daemon its container, the driver and the
    scheduler theirs; `up` refuses a file where they do not (checked before anything is built)."""
    assert spark_sizing_problems(raw) == []
    too_big = copy.deepcopy(raw)
    too_big["x-mlops-env"]["SPARK_EXECUTOR_MEMORY"] = "2g"
    problems = spark_sizing_problems(too_big)
    assert "SPARK_EXECUTOR_MEMORY 2048m exceeds what spark-worker offers (--memory 1536m)" in problems[0]
    driver = copy.deepcopy(raw)
    driver["x-mlops-env"]["SPARK_DRIVER_MEMORY"] = "4g"
    (problem,) = spark_sizing_problems(driver)
    assert "SPARK_DRIVER_MEMORY 4096m" in problem and "airflow-scheduler's mem_limit 2560m" in problem
    cramped = copy.deepcopy(raw)
    cramped["services"]["spark-worker"]["mem_limit"] = "1g"
    (problem,) = spark_sizing_problems(cramped)
    assert "over its mem_limit 1024m" in problem
