"""The registered model stands on its own (issue 20): it loads and serves from a fresh virtual environment
built from nothing but its own logged requirements, and old versions (pickled pyfunc) still load here.

Real MLflow server (fixture), real `uv` environment, real `mlflow models serve` process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from mlflow.artifacts import download_artifacts
from mlflow.models import Model
from mlflow.types import DataType

import mlflow
from mlops import registry
from mlops.errors import ModelFormatError
from mlops.model.rating_input import RATING_FEATURES
from mlops.services import specs
from mlops.settings import PROJECT_ROOT
from mlops.training.evaluate import evaluate
from mlops.training.fit import fit, labelled_table
from mlops.training.model import PYFUNC_CODE, PYFUNC_REQUIREMENTS, input_columns
from mlops.training.register import git_commit, input_example, log_and_register

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UV = Path(sys.executable).with_name("uv")

# Runs in the fresh environment: loads the champion from the registry, predicts the model's input example.
PREDICT = """
import importlib.util, json, sys
import mlflow
from mlflow.artifacts import download_artifacts
from mlflow.models import Model

uri = sys.argv[1]
local = download_artifacts(artifact_uri=uri)
example = Model.load(local).load_input_example(local)
predictions = mlflow.pyfunc.load_model(uri).predict(example)
print(json.dumps({"mlops_importable": importlib.util.find_spec("mlops") is not None,
                  "predictions": predictions.to_dict(orient="list")}))
"""


def _lineage(settings, run_id: str) -> dict[str, str]:
    return {
        "model_name": settings.model_name, "dataset": "tiny-synthetic", "dataset_source": "test",
        "dataset_checksum": "0" * 64, "split_strategy": "random", "test_fraction": "0.25", "feature_set": run_id,
        "validation_fraction": "0.1", "seed": "42",
        "pipeline_run_id": run_id, "git_commit": git_commit(),
    }  # fmt: skip


@pytest.fixture(scope="module")
def champion(base_settings, mlflow_server, s3_server, redis_server, offline):
    """A model of the learned `ranker` family trained on the tiny data, logged by the training code and
    aliased `champion`."""
    settings = base_settings.replace(model_name=f"test-portable-{int(time.time())}")
    model = fit(offline, seed=42, family_name="ranker", table=labelled_table(offline, 100.0))
    metrics, preds = evaluate(model, offline)
    logged = log_and_register(
        settings, "run-portable", model, metrics, preds, offline, _lineage(settings, "run-portable")
    )
    registry.client(settings).set_registered_model_alias(settings.model_name, registry.CHAMPION, logged["version"])
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(download_artifacts(artifact_uri=f"models:/{settings.model_name}@champion", dst_path=tmp))
        yield settings, model, local


def _fresh_environ(venv: Path | None, settings) -> dict[str, str]:
    """A stranger's shell: the machine's own variables (network, certificates, uv cache) but nothing of the
    project (no venv, no PYTHONPATH, none of its settings or credentials), plus the tracking server's address
    and the login MLflow asks for, under MLflow's own names (as docs/reference.md tells a user to export)."""
    project = {*specs.settings_environ(settings), *specs.s3_client_environ(settings), "VIRTUAL_ENV", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in project and not k.startswith(("MLFLOW_", "PYTEST_"))}
    path = [p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(PROJECT_ROOT))]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path] if venv else path)
    login = dict(zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), settings.mlflow_auth, strict=True))
    return {**env, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, **login, "UV_PYTHON_DOWNLOADS": "never"}


@pytest.fixture(scope="module")
def fresh_env(champion, tmp_path_factory):
    """A virtual environment built by uv from the model's requirements.txt and python_env.yaml only."""
    settings, _, local = champion
    root = tmp_path_factory.mktemp("fresh-env")
    python = str(yaml.safe_load((local / "python_env.yaml").read_text())["python"])
    started = time.monotonic()
    env = _fresh_environ(None, settings)
    subprocess.run([str(UV), "venv", "--quiet", "--python", python, str(root / "venv")], env=env, cwd=root, check=True)
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(root / "venv" / "bin" / "python"),
         "-r", str(local / "requirements.txt")],
        env=env, cwd=root, check=True, timeout=900,
    )  # fmt: skip
    print(f"\nfresh env from the model's requirements built in {time.monotonic() - started:.1f}s (uv, cached)")
    return root / "venv"


def test_logged_requirements_are_public_and_pinned_as_in_pyproject(champion):
    _, _, local = champion
    requirements = [r for r in (local / "requirements.txt").read_text().splitlines() if r.strip()]
    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(re.sub(r"\[.*\]", "", d).split("==") for d in dependencies)  # mlflow[auth]==x: mlflow
    assert sorted(requirements) == sorted(f"{name}=={pins[name]}" for name in PYFUNC_REQUIREMENTS)
    conda = yaml.safe_load((local / "conda.yaml").read_text())
    assert sorted(conda["dependencies"][-1]["pip"]) == sorted(requirements)
    assert not any("mlops" in r for r in requirements)
    # The pyfunc is the standalone file, logged as code; nothing pickled from the project.
    assert (local / "pyfunc_model.py").exists() and not (local / "python_model.pkl").exists()


def test_signature_and_input_example_describe_the_feature_columns(champion, offline):
    _, model, local = champion
    meta = Model.load(str(local))
    inputs = meta.signature.inputs
    assert inputs.input_names() == input_columns(model)
    assert inputs.input_names()[: len(RATING_FEATURES)] == list(RATING_FEATURES)
    assert {c.type for c in inputs.inputs} == {DataType.double} and all(c.required for c in inputs.inputs)
    assert meta.signature.outputs.input_names() == ["p_like", "rank_score"]
    example = meta.load_input_example(str(local))
    np.testing.assert_array_equal(example.to_numpy(), input_example(model, offline).to_numpy())


def _expected(model, example: pd.DataFrame) -> dict[str, list[float]]:
    x = example[list(RATING_FEATURES)].to_numpy(dtype=np.float64)
    rank = model.family.scores(example[list(model.family.features)].to_numpy(dtype=np.float64), model.learned)
    return {"p_like": model.p_like(x).tolist(), "rank_score": rank.tolist()}


def test_champion_loads_and_predicts_in_a_fresh_env(champion, fresh_env):
    settings, model, local = champion
    out = subprocess.run(
        [str(fresh_env / "bin" / "python"), "-c", PREDICT, f"models:/{settings.model_name}@champion"],
        env=_fresh_environ(fresh_env, settings), cwd=fresh_env.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mlops_importable"] is False  # the project is nowhere in that environment
    example = Model.load(str(local)).load_input_example(str(local))
    assert result["predictions"] == _expected(model, example)  # exactly the trained model's


@pytest.fixture(scope="module")
def served(champion, fresh_env, free_port):
    """`mlflow models serve` of the champion, run from the fresh environment."""
    settings, _, _ = champion
    port = free_port()
    log = fresh_env.parent / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(fresh_env / "bin" / "mlflow"), "models", "serve", "-m", f"models:/{settings.model_name}@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=_fresh_environ(fresh_env, settings), cwd=fresh_env.parent, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"mlflow models serve exited: {log.read_text()[-3000:]}"
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"mlflow models serve not ready: {log.read_text()[-3000:]}"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _invoke(url: str, body: str) -> requests.Response:
    return requests.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60)


def test_models_serve_answers_the_input_example(champion, served):
    _, model, local = champion
    response = _invoke(served, (local / "serving_input_example.json").read_text())
    assert response.status_code == 200, response.text
    predictions = pd.DataFrame(response.json()["predictions"])
    example = Model.load(str(local)).load_input_example(str(local))
    assert predictions.to_dict(orient="list") == _expected(model, example)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop(columns=["cf_cosine"]), "Model is missing inputs ['cf_cosine']"),
        (lambda df: df.assign(u_mean_rating="high"), "Failed to convert column u_mean_rating to type 'float64'"),
    ],
    ids=["missing", "mistyped"],
)
def test_models_serve_rejects_a_bad_column_with_the_schema_error(champion, served, change, message):
    _, _, local = champion
    example = Model.load(str(local)).load_input_example(str(local))
    body = json.dumps({"dataframe_split": json.loads(change(example).to_json(orient="split", index=False))})
    response = _invoke(served, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert message in error["message"], error["message"][-500:]
    # MLflow's signature check answered: the model's code never ran, so no stack trace.
    assert "stack_trace" not in error and "Traceback" not in response.text


def test_a_version_this_code_cannot_serve_is_refused_at_load_with_its_family(champion, offline):
    """A version whose family this code does not know (a newer platform's, or a hand-edited one) is refused
    when loaded, naming the family: serving keeps the model it has (the watcher keeps the old ranker on
    any load failure), and promotion counts such a champion as unable to serve."""
    settings, model, _ = champion
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name="unknown-family"):
        parts = model.save(Path(tmp))
        spec = json.loads(Path(parts["family"]).read_text())
        Path(parts["family"]).write_text(json.dumps({**spec, "name": "two-tower"}))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts=parts, registered_model_name=settings.model_name
        )
    version = registry.client(settings).get_model_version(settings.model_name, info.registered_model_version)
    with pytest.raises(ModelFormatError, match="model family 'two-tower' is unknown to this serving code"):
        registry.load_model(settings, version)
