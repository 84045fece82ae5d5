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
from mlops.promotion import BELOW_BASELINE, LINEAGE_CHANGED, SAME_SPLIT
from mlops.training.evaluate import core_of, evaluate, rank_all, ranking_ndcg
from mlops.training.fit import fit, user_rows
from mlops.training.rating_examples import held_out_rows
from mlops.training.register import git_commit, log_and_register


def _lineage(settings, run_id: str) -> dict[str, str]:
    return {
        "model_name": settings.model_name, "dataset": "tiny-synthetic", "dataset_source": "test",
        "dataset_checksum": "0" * 64, "split_strategy": "random", "test_fraction": "0.25", "feature_set": run_id,
        "validation_fraction": "0.1", "seed": "42",
        "pipeline_run_id": run_id, "git_commit": git_commit(),
    }  # fmt: skip


def _register(settings, offline, run_id: str, model, **lineage_changes: str) -> dict:
    metrics, preds = evaluate(model, offline)
    lineage = _lineage(settings, run_id) | lineage_changes
    return log_and_register(settings, run_id, model, metrics, preds, offline, lineage)


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
    assert logged == stored and stored["model_version"] == first["version"] and stored["feature_sets"] == ["run-good"]
    drift.check_profile(stored, fx.FEATURE_NAMES)
    assert stored["n_rows"] == len(offline.eval_examples)

    # Loaded back from the registry (pyfunc files, no training code): exactly the trained object's answers.
    loaded = registry.load_model(
        settings, registry.client(settings).get_model_version(settings.model_name, first["version"])
    )
    x = held_out_rows(core_of(good, offline).retrievers, offline, user_rows(offline)).x
    np.testing.assert_array_equal(loaded.p_like(x), good.p_like(x))
    users = sorted(offline.test["user_id"].unique().tolist())
    assert loaded.family == good.family and rank_all(loaded, offline, users) == rank_all(good, offline, users)

    measure = lambda model: ranking_ndcg(model, offline)  # noqa: E731
    assert registry.promote(settings, "run-good", measure)["decision"] == registry.CHAMPION  # no champion yet

    # A version below its run's best baseline (the popularity family, under co-occurrence here) never takes
    # the alias, and the champion is not even re-scored for it.
    worse = fit(offline, seed=42, family_name="popularity")
    _register(settings, offline, "run-bad", worse)
    record = registry.promote(settings, "run-bad", lambda m: pytest.fail("champion re-scored"))
    assert (record["decision"], record["basis"]) == (registry.CHALLENGER, BELOW_BASELINE)
    assert "below its run's best baseline: ndcg_at_10" in record["reason"] and "< cooccurrence" in record["reason"]
    assert registry.version_by_alias(settings, registry.CHAMPION).version == first["version"]
    run = registry.client(settings).get_run(registry.version_of_run(settings, "run-bad").run_id)
    assert run.data.tags["promotion_decision"] == registry.CHALLENGER

    # The same split: a version must beat the champion re-measured on this run's test data.
    _register(settings, offline, "run-good-2", good)
    # ... it ties (same model), and a tie is not a win:
    tie = registry.promote(settings, "run-good-2", measure)
    assert (tie["decision"], tie["basis"]) == (registry.CHALLENGER, SAME_SPLIT)
    assert tie["champion_ndcg_at_10"] == pytest.approx(ranking_ndcg(good, offline))
    run = registry.client(settings).get_run(registry.version_of_run(settings, "run-good-2").run_id)
    assert "promotion_champion_ndcg_at_10" in run.data.metrics
    # ... so make the champion the worse one and promote the good one against it.
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
def test_a_changed_lineage_is_never_compared_on_the_candidates_test_set(mlflow_settings, offline):
    """A champion from another split may have trained on this run's test rows: it is not re-scored there
    (the evaluation callback must not run); the candidate is judged on its own run's baselines and floor."""
    settings = mlflow_settings.replace(model_name=mlflow_settings.model_name + "-lineage")
    model = fit(offline, seed=42)
    _register(settings, offline, "run-split-a", model)
    registry.promote(settings, "run-split-a", lambda m: 0.0)  # first champion
    c = registry.client(settings)

    _register(settings, offline, "run-split-b", model, seed="7")  # another split of the same data
    run_b = registry.version_of_run(settings, "run-split-b").run_id
    for name, value in (("ndcg_at_10", 0.9), ("test_auc", 0.9), ("baseline_ease_ndcg_at_10", 0.5)):
        c.log_metric(run_b, name, value, step=1)  # figures that pass on their own
    record = registry.promote(settings, "run-split-b", lambda m: pytest.fail("champion re-scored"))
    assert (record["decision"], record["basis"]) == (registry.CHAMPION, LINEAGE_CHANGED)
    assert record["champion_ndcg_at_10"] is None and "seed" in record["reason"]
    assert c.get_run(run_b).data.tags["promotion_basis"] == LINEAGE_CHANGED

    _register(settings, offline, "run-split-c", model, validation_fraction="0.2")
    run_c = registry.version_of_run(settings, "run-split-c").run_id
    for name, value in (("ndcg_at_10", 0.9), ("test_auc", 0.5), ("baseline_ease_ndcg_at_10", 0.5)):
        c.log_metric(run_c, name, value, step=1)  # beats the baselines but misses the AUC floor
    record = registry.promote(settings, "run-split-c", lambda m: pytest.fail("champion re-scored"))
    assert (record["decision"], record["basis"]) == (registry.CHALLENGER, LINEAGE_CHANGED)
    assert registry.version_by_alias(settings, registry.CHAMPION).version == registry.version_of_run(
        settings, "run-split-b").version  # fmt: skip

    # The same split as the champion: re-scored on this test set.
    _register(settings, offline, "run-split-b2", model, seed="7")
    seen = []
    record = registry.promote(settings, "run-split-b2", lambda m: seen.append(m) or 1.0)
    assert record["basis"] == SAME_SPLIT and record["decision"] == registry.CHALLENGER and len(seen) == 1


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


def test_a_step_run_by_hand_logs_to_the_server_not_a_local_database(settings, mlflow_server, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")  # what MLflow 3 falls back to without the variable
    try:
        registry.wait_for_mlflow(settings)
        assert mlflow.get_tracking_uri() == settings.mlflow_tracking_uri
    finally:
        registry.client(settings)


def test_signed_in_clients_move_artifacts_through_the_tracking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """An S3-backed server offers presigned downloads whose URLs carry its own view of the store (Docker:
    minio:9000, unresolvable on the host: the first whole Docker run's verify could not load the champion).
    After sign_in, MLflow's artifact client asks the server, whatever the server offers; a user's own choice
    in the environment is kept."""
    from mlflow.environment_variables import MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD as DOWNLOAD
    from mlflow.environment_variables import MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD as UPLOAD

    from mlops.settings import Settings

    # Everything sign_in sets is restored afterwards (later tests' subprocesses inherit this environment).
    for name in (*registry.PROXIED_TRANSFERS_ONLY, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: None)
    registry.sign_in(Settings())
    assert DOWNLOAD.is_set() and DOWNLOAD.get() is False
    assert UPLOAD.is_set() and UPLOAD.get() is False
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "true")
    registry.sign_in(Settings())
    assert DOWNLOAD.get() is True
