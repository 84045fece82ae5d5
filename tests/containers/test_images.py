"""The project's images, built by Podman from the repository's Dockerfiles and run for real.

Each image runs the commands docker-compose.yml gives it, on the host network, against the native servers
of tests/conftest.py (Redis, broker, S3 API, MLflow) and Debian's PostgreSQL: the Spark master and worker
of the Spark image execute the pipeline's Spark steps, driven from the Airflow image exactly as its
scheduler's tasks run them, with `train` and `evaluate_and_promote` after them; the inference image then
serves the champion they registered, checked by `./run.sh verify`'s own verifier; the MLflow image serves
on PostgreSQL; the Airflow image migrates its metadata database on PostgreSQL.

What a stand-in base image cannot prove is listed in README.md (Docker mode, "Built and run with Podman").
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from harness import Images, Postgres, base_image, wait_http
from podman_build import BuildError
from snippets import IMPORT_ALL, PIPELINE

from mlops.services.compose_spec import HOST_ONLY_SETTINGS, compose_spec
from mlops.services.specs import s3_client_environ, settings_environ
from mlops.settings import PROJECT_ROOT, Settings

pytestmark = [pytest.mark.containers, pytest.mark.integration, pytest.mark.timeout(5400)]

INFERENCE, AIRFLOW, MLFLOW = "inference/Dockerfile", "airflow/Dockerfile", "mlflow/Dockerfile"
SPARK = "spark-jobs/Dockerfile"
RUN_ID = "containers"


def container_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """What compose's x-mlops-env passes (every setting but the host-only ones), with the endpoints of the
    native servers; Spark binds and advertises loopback, as everything shares the host network."""
    env = {k: v for k, v in settings_environ(settings).items() if k not in HOST_ONLY_SETTINGS}
    return {**env, "SPARK_LOCAL_IP": "127.0.0.1", **overrides}


def service(name: str) -> dict:
    return compose_spec()["services"][name]


def replace_args(command: list[str], values: dict[str, str]) -> list[str]:
    """The compose command with `--name=value` / `--name value` options set to `values` (each must be there)."""
    out, seen, i = [], set(), 0
    while i < len(command):
        arg = str(command[i])
        name = arg.split("=", 1)[0]
        if name in values and "=" in arg:
            out.append(f"{name}={values[name]}")
            seen.add(name)
        elif name in values:
            out += [arg, values[name]]
            seen.add(name)
            i += 1
        else:
            out.append(arg)
        i += 1
    missing = set(values) - seen
    assert not missing, f"the compose command {command} no longer has {sorted(missing)}: update this test"
    return out


# --- every image ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [INFERENCE, AIRFLOW, MLFLOW, SPARK])
def test_every_module_of_the_package_imports_in_the_image(images: Images, dockerfile: str) -> None:
    """Every entry point's imports succeed: the Python stack, LightGBM's OpenMP runtime (libgomp1), the package."""
    run = images.podman.run(images.of(dockerfile), ["python", "-c", IMPORT_ALL])
    assert run.returncode == 0 and "modules" in run.output, f"{dockerfile}:\n{run.output[-3000:]}"


def test_the_stand_in_base_lacks_libgomp_like_python_slim(images: Images) -> None:
    """So that the import test above proves the Dockerfiles install LightGBM's OpenMP runtime themselves."""
    base = base_image(PROJECT_ROOT / INFERENCE)
    run = images.podman.run(base, ["python", "-c", "import ctypes.util; print(ctypes.util.find_library('gomp'))"])
    assert run.output.strip().splitlines()[-1] == "None", run.output


@pytest.mark.parametrize("dockerfile", [AIRFLOW, SPARK])
def test_java_images_run_java_with_the_s3a_connector(images: Images, dockerfile: str) -> None:
    script = "import glob, pyspark, os; print(*sorted(os.path.basename(j) for j in glob.glob(os.path.join(" \
             "os.path.dirname(pyspark.__file__), 'jars', '*aws*.jar'))))"  # fmt: skip
    run = images.podman.run(images.of(dockerfile), ["sh", "-c", f'java -version && python -c "{script}"'])
    assert run.returncode == 0, run.output[-2000:]
    assert "openjdk" in run.output.lower() and "hadoop-aws-" in run.output, run.output[-2000:]


def test_images_run_as_the_unprivileged_user(images: Images) -> None:
    for dockerfile, tag in images.tags.items():
        run = images.podman.run(tag, ["id", "-un"])
        assert run.output.strip().splitlines()[-1] == "mlops", f"{dockerfile} runs as {run.output.strip()}"


def test_a_failing_build_names_its_dockerfile_line(images: Images, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {base_image(PROJECT_ROOT / INFERENCE)}\nRUN true\n"
                          "RUN apt-get install -y no-such-package-xyz \\\n    && true\n")  # fmt: skip
    with pytest.raises(BuildError, match=r"at Dockerfile:3: RUN apt-get install -y no-such-package-xyz && true"):
        images.podman.build(dockerfile, "localhost/mlops-test-failing:1", tmp_path, tmp_path / "build.log")


# --- Spark job and train, inside the images ---------------------------------------------------------


@pytest.fixture(scope="module")
def spark_cluster(images: Images, settings: Settings, free_port) -> Iterator[str]:
    """spark-master and spark-worker as compose runs them (its commands, on loopback ports); the master URL."""
    podman = images.podman
    port, master_ui, worker_ui = free_port(), free_port(), free_port()
    tag = f"mlops-test-{uuid.uuid4().hex[:6]}"
    master = replace_args(service("spark-master")["command"],
                          {"--host": "127.0.0.1", "--port": str(port), "--webui-port": str(master_ui)})  # fmt: skip
    worker = [str(a) for a in service("spark-worker")["command"]]
    worker = [*replace_args(worker[:-1], {"--webui-port": str(worker_ui)}), f"spark://127.0.0.1:{port}"]
    spark_env = {k: v for k, v in service("spark-worker")["environment"].items() if k.startswith("SPARK_")
                 and k not in ("SPARK_MASTER", "SPARK_DRIVER_MEMORY", "SPARK_IO")}  # fmt: skip
    env = container_env(settings, **spark_env)
    try:
        podman.start(f"{tag}-master", images.of(SPARK), master, env)
        wait_http(f"http://127.0.0.1:{master_ui}/json/", 120)
        podman.start(f"{tag}-worker", images.of(SPARK), worker, env)
        wait_http(f"http://127.0.0.1:{worker_ui}/json/", 120)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for name in (f"{tag}-worker", f"{tag}-master"):
            print(f"--- {name}\n{podman.logs(name)[-3000:]}")
            podman.stop(name)


@pytest.fixture(scope="module")
def pipeline_run(images: Images, settings: Settings, mlflow_server, spark_cluster: str, timed) -> Settings:
    """Every DAG step, run in the Airflow image as its scheduler runs the tasks (`run_step`), with the Spark
    steps spark-submitted to the Spark image's cluster and the data read and written through S3A."""
    env = container_env(settings, SPARK_MASTER=spark_cluster, SPARK_IO="s3a", SPARK_DRIVER_MEMORY="1g")
    log = images.logs / "pipeline-run.log"
    run = images.podman.run(images.of(AIRFLOW), ["python", "-c", PIPELINE, RUN_ID], env, timeout=2400, log=log)
    timed["pipeline in mlops/airflow + mlops/spark"] = run.seconds
    assert run.returncode == 0, f"pipeline in the Airflow image failed (log {log}):\n{run.output[-4000:]}"
    return settings


def test_spark_steps_and_train_run_in_the_images(pipeline_run: Settings) -> None:
    from mlflow import MlflowClient
    from mlops.feature_store import RedisFeatureStore

    client = MlflowClient(pipeline_run.mlflow_tracking_uri)
    champion = client.get_model_version_by_alias(pipeline_run.model_name, "champion")
    assert champion.tags.get("pipeline_run_id") == RUN_ID
    run = client.get_run(champion.run_id)
    assert run.data.metrics["ndcg_at_10"] > 0 and run.data.metrics["test_auc"] > 0.5
    store = RedisFeatureStore.from_settings(pipeline_run)
    assert store.current_version() is not None, "evaluate_and_promote made no feature set current"


# --- the consumer -----------------------------------------------------------------------------------


def test_consumer_image_serves_the_champion(images: Images, pipeline_run: Settings, free_port, timed) -> None:
    """The inference service's command, checked by `./run.sh verify`'s verifier from the host: results for
    every request, equal to LightGBM's own prediction; malformed messages in the DLQ."""
    settings = pipeline_run
    metrics_port = free_port()
    command = [str(part) for part in service("inference")["command"]]
    name = f"mlops-test-consumer-{uuid.uuid4().hex[:6]}"
    podman = images.podman
    try:
        podman.start(name, images.of(INFERENCE), command,
                     container_env(settings, INFERENCE_METRICS_PORT=str(metrics_port)))  # fmt: skip
        timed["consumer healthy"] = wait_http(f"http://127.0.0.1:{metrics_port}/healthz", 180)
        env = {**settings_environ(settings), "PATH": str(Path(sys.executable).parent)}
        verifier = [sys.executable, str(PROJECT_ROOT / "verification" / "verify_streaming.py"), "-n", "200"]
        started = time.monotonic()
        verify = subprocess.run(verifier, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        timed["verify_streaming.py -n 200 against the consumer"] = time.monotonic() - started
        assert verify.returncode == 0, f"{verify.stdout[-3000:]}{verify.stderr[-3000:]}\n{podman.logs(name)[-3000:]}"
        stop = podman("stop", "-t", "30", name, check=False)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).output.strip()
        assert stop.returncode == 0 and code == "0", f"SIGTERM: exit {code}\n{podman.logs(name)[-2000:]}"
    finally:
        podman.stop(name)


# --- MLflow and Airflow on PostgreSQL -----------------------------------------------------------------


def test_mlflow_image_serves_on_postgres(images: Images, settings: Settings, postgres: Postgres, free_port,
                                         timed, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The mlflow service's command (workers, proxied artifacts) with a PostgreSQL store: runs, metrics and an
    artifact round-trip through the server, and the store's tables are in PostgreSQL."""
    from mlflow import MlflowClient

    port = free_port()
    command = replace_args(service("mlflow")["command"], {
        "--host": "127.0.0.1", "--port": str(port), "--artifacts-destination": f"s3://{settings.mlflow_artifact_bucket}",
    })  # fmt: skip
    admin_password = "containers-admin-pw"
    env = {**s3_client_environ(settings), "MLFLOW_SERVER_ALLOWED_HOSTS": "127.0.0.1,127.0.0.1:*,localhost:*",
           "MLFLOW_BACKEND_STORE_URI": postgres.url("mlflow"), "MLFLOW_ADMIN_PASSWORD": admin_password,
           "MLFLOW_AUTH_DATABASE_URI": "sqlite:////auth/auth.db"}  # fmt: skip
    assert set(s3_client_environ(settings)) <= set(service("mlflow")["environment"])
    name = f"mlops-test-mlflow-{uuid.uuid4().hex[:6]}"
    podman = images.podman
    try:
        podman.start(name, images.of(MLFLOW), command, env)
        timed["mlflow on postgres: /health"] = wait_http(f"http://127.0.0.1:{port}/health", 300)
        anonymous = requests.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        assert anonymous.status_code == 401  # the basic-auth app is on
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # MLflow's client signs in from these
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.create_experiment(f"containers-{uuid.uuid4().hex[:6]}")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "auc", 0.75)
        client.log_text(run.info.run_id, "stored through the proxy", "note.txt")
        assert client.get_run(run.info.run_id).data.metrics["auc"] == 0.75
        assert client.download_artifacts(run.info.run_id, "note.txt")
        assert int(postgres.psql("mlflow", "SELECT count(*) FROM experiments")) >= 1
    except Exception:
        print(podman.logs(name)[-4000:])
        raise
    finally:
        podman.stop(name)


def test_airflow_image_migrates_its_database_on_postgres(images: Images, settings: Settings,
                                                         postgres: Postgres, timed) -> None:  # fmt: skip
    """airflow-init's command with compose's AIRFLOW__* settings, the connection pointed at the test's PostgreSQL
    (Airflow 3.3 derives an asyncpg URL from it: the docker extra must carry asyncpg)."""
    compose_env = service("airflow-init")["environment"]
    overrides = {k: str(v) for k, v in compose_env.items() if k.startswith("AIRFLOW__")}
    overrides["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = postgres.url("airflow")
    overrides["AIRFLOW__API__BASE_URL"] = settings.airflow_url
    command = [str(part) for part in service("airflow-init")["command"]]
    run = images.podman.run(images.of(AIRFLOW), command, container_env(settings, **overrides), timeout=900,
                            log=images.logs / "airflow-init.log")  # fmt: skip
    timed["airflow db migrate on postgres"] = run.seconds
    assert run.returncode == 0, run.output[-4000:]
    assert postgres.psql("airflow", "SELECT version_num FROM alembic_version"), "no migration recorded"
    assert postgres.psql("airflow", "SELECT to_regclass('public.dag_run')") == "dag_run"
