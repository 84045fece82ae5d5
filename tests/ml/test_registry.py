"""MLflow: registered model loads back and scores exactly like the trained object; the promotion rule
both ways; an unreachable server is a clear, bounded failure. Real MLflow server (fixture)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import mlflow
from mlops import drift, registry
from mlops import features as fx
from mlops.feature_store import RedisFeatureStore
from mlops.training.evaluate import evaluate, ranking_ndcg
from mlops.training.fit import fit
from mlops.training.offline_data import OfflineData
from mlops.training.register import git_commit, log_and_register


def _lineage(settings, run_id: str) -> dict[str, str]:
    return {
        "model_name": settings.model_name, "dataset": "tiny-synthetic", "dataset_source": "test",
        "dataset_checksum": "0" * 64, "split_strategy": "random", "test_fraction": "0.25", "feature_set": run_id,
        "pipeline_run_id": run_id, "git_commit": git_commit(),
    }  # fmt: skip


def _register(settings, offline, run_id: str, model) -> dict:
    metrics, preds = evaluate(model, offline)
    return log_and_register(settings, run_id, model, metrics, preds, offline, _lineage(settings, run_id))


@pytest.fixture(scope="module")
def mlflow_settings(base_settings, mlflow_server, s3_server, redis_server):
    return base_settings.replace(model_name=f"test-recommender-{int(time.time())}")


@pytest.mark.integration
@pytest.mark.slow
def test_registry_roundtrip_and_promotion_both_ways(mlflow_settings, offline):
    settings = mlflow_settings
    good = fit(offline, seed=42)
    first = _register(settings, offline, "run-good", good)

    # The drift reference of the version: logged with its run, and stored with its feature set in Redis.
    version = registry.client(settings).get_model_version(settings.model_name, first["version"])
    logged = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{drift.PROFILE_ARTIFACT}")
    stored = RedisFeatureStore.from_settings(settings).reference_profile("run-good")
    assert logged == stored and stored["model_version"] == first["version"] and stored["feature_set"] == "run-good"
    drift.check_profile(stored, fx.FEATURE_NAMES)
    assert stored["n_rows"] == len(offline.eval_examples)

    # Loaded back from the registry (pyfunc, no training code): exactly the trained object's scores.
    loaded = registry.load_model(
        settings, registry.client(settings).get_model_version(settings.model_name, first["version"])
    )
    x = fx.build_matrix(offline.eval_examples, offline.eval_examples)
    np.testing.assert_array_equal(loaded.p_like(x), good.p_like(x))
    np.testing.assert_array_equal(loaded.p_relevant(x), good.p_relevant(x))

    measure = lambda model: ranking_ndcg(model, offline)  # noqa: E731
    assert registry.promote(settings, "run-good", measure)["decision"] == registry.CHAMPION  # no champion yet

    # A worse model (labels shuffled: it learned nothing) must not take the champion alias.
    rng = np.random.default_rng(0)
    bad_examples = offline.train_examples.copy()
    bad_examples["label"] = rng.permutation(bad_examples["label"].to_numpy())
    bad_examples["is_negative"] = rng.permutation(bad_examples["is_negative"].to_numpy())
    bad_data = OfflineData(**{**offline.__dict__, "train_examples": bad_examples})
    bad = fit(bad_data, seed=42)
    _register(settings, offline, "run-bad", bad)
    record = registry.promote(settings, "run-bad", measure)
    assert record["decision"] == registry.CHALLENGER
    assert record["champion_ndcg_at_10"] == pytest.approx(ranking_ndcg(good, offline))
    assert record["candidate_ndcg_at_10"] < record["champion_ndcg_at_10"]
    assert registry.version_by_alias(settings, registry.CHAMPION).version == first["version"]
    run = registry.client(settings).get_run(registry.version_of_run(settings, "run-bad").run_id)
    assert run.data.tags["promotion_decision"] == registry.CHALLENGER
    assert "promotion_champion_ndcg_at_10" in run.data.metrics

    # The other way: a version that beats the champion on the same data takes the alias.
    _register(settings, offline, "run-good-2", good)
    # ... it ties (same model), and a tie is not a win:
    assert registry.promote(settings, "run-good-2", measure)["decision"] == registry.CHALLENGER
    # ... so make the champion the bad one and promote the good one against it.
    bad_version = registry.version_of_run(settings, "run-bad").version
    registry.client(settings).set_registered_model_alias(settings.model_name, registry.CHAMPION, bad_version)
    won = registry.promote(settings, "run-good-2", measure)
    assert won["decision"] == registry.CHAMPION and won["champion_version"] == str(bad_version)
    assert (
        registry.version_by_alias(settings, registry.CHAMPION).version
        == registry.version_of_run(settings, "run-good-2").version
    )


@pytest.mark.integration
@pytest.mark.slow
def test_a_champion_whose_artifacts_are_gone_is_replaced(mlflow_settings, offline):
    """A champion whose files are gone from the object store (deleted by hand, a store wiped or replaced):
    promotion must not fail on it forever; the candidate takes the alias and the reason says why."""
    from mlops.object_store import ObjectStore

    settings = mlflow_settings.replace(model_name=f"{mlflow_settings.model_name}-lost")
    model = fit(offline, seed=42)
    lost = _register(settings, offline, "run-lost", model)
    registry.promote(settings, "run-lost", lambda m: 0.0)
    uri = registry.client(settings).get_model_version_download_uri(settings.model_name, lost["version"])
    prefix = uri.split(":", 1)[1].lstrip("/").removeprefix(f"{settings.mlflow_artifact_bucket}/")
    assert ObjectStore.from_settings(settings, settings.mlflow_artifact_bucket).delete_prefix(prefix) > 0

    nxt = _register(settings, offline, "run-next", model)
    record = registry.promote(settings, "run-next", lambda m: pytest.fail("nothing to evaluate"))
    assert record["decision"] == registry.CHAMPION and record["champion_version"] == str(lost["version"])
    assert f"champion v{lost['version']} cannot be loaded" in record["reason"]
    assert registry.version_by_alias(settings, registry.CHAMPION).version == nxt["version"]
    c = registry.client(settings)  # the reason is on both versions
    assert c.get_model_version(settings.model_name, nxt["version"]).tags["promotion_reason"] == record["reason"]
    assert c.get_model_version(settings.model_name, lost["version"]).tags["replaced_reason"] == record["reason"]


class _ArtifactsFailProxy:
    """A reverse proxy in front of the real MLflow server that answers 503 to every artifact download
    (the artifact store having a bad moment), and passes everything else through."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        import requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _proxy(self) -> None:
                if "/mlflow-artifacts/" in self.path or "/artifacts/" in self.path:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(self.command, upstream + self.path, data=body, headers=headers, timeout=30)
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = _proxy

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.integration
@pytest.mark.slow
def test_a_champion_that_cannot_be_read_right_now_is_kept(mlflow_settings, offline, monkeypatch):
    """A 5xx from the artifact store says nothing about the champion: it stays, the promotion fails
    with a clear error (to be retried), and nothing is tagged as replaced."""
    settings = mlflow_settings.replace(model_name=f"{mlflow_settings.model_name}-flaky")
    model = fit(offline, seed=42)
    kept = _register(settings, offline, "run-kept", model)
    registry.promote(settings, "run-kept", lambda m: 0.0)
    nxt = _register(settings, offline, "run-after", model)

    proxy = _ArtifactsFailProxy(settings.mlflow_tracking_uri.rstrip("/"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        flaky = settings.replace(mlflow_tracking_uri=proxy.url)
        with pytest.raises(registry.ChampionUnreadable, match=rf"champion v{kept['version']} could not be loaded"):
            registry.promote(flaky, "run-after", lambda m: pytest.fail("nothing to evaluate"))
    finally:
        proxy.server.shutdown()
        registry.client(settings)  # point the mlflow module back at the real server
    c = registry.client(settings)
    assert registry.version_by_alias(settings, registry.CHAMPION).version == kept["version"]
    assert "replaced_reason" not in c.get_model_version(settings.model_name, kept["version"]).tags
    assert "promotion_reason" not in c.get_model_version(settings.model_name, nxt["version"]).tags


def test_unreachable_mlflow_is_a_bounded_clear_error(base_settings, free_port):
    settings = base_settings.replace(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(registry.RegistryUnavailable, match="unreachable after 3 attempts"):
        registry.wait_for_mlflow(settings, attempts=3, first_delay=0.1)
    assert time.monotonic() - started < 10
