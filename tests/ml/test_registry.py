"""MLflow: registered model loads back and scores exactly like the trained object; the promotion rule
both ways; an unreachable server is a clear, bounded failure. Real MLflow server (fixture)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlops import features as fx
from mlops import registry
from mlops.training import train as T


def _lineage(settings, run_id: str) -> dict[str, str]:
    return {
        "model_name": settings.model_name, "dataset": "tiny-synthetic", "dataset_source": "test",
        "dataset_checksum": "0" * 64, "split_strategy": "random", "test_fraction": "0.25", "feature_set": run_id,
        "pipeline_run_id": run_id, "git_commit": T.git_commit(),
    }  # fmt: skip


def _register(settings, offline, run_id: str, model) -> dict:
    metrics, preds = T.evaluate(model, offline)
    return T.log_and_register(settings, run_id, model, metrics, preds, offline, _lineage(settings, run_id))


@pytest.fixture(scope="module")
def mlflow_settings(base_settings, mlflow_server, s3_server):
    return base_settings.replace(model_name=f"test-recommender-{int(time.time())}")


@pytest.mark.integration
@pytest.mark.slow
def test_registry_roundtrip_and_promotion_both_ways(mlflow_settings, offline):
    settings = mlflow_settings
    good = T.fit(offline, seed=42)
    first = _register(settings, offline, "run-good", good)

    # Loaded back from the registry (pyfunc, no training code): exactly the trained object's scores.
    loaded = registry.load_model(
        settings, registry.client(settings).get_model_version(settings.model_name, first["version"])
    )
    x = fx.build_matrix(offline.eval_examples, offline.eval_examples)
    np.testing.assert_array_equal(loaded.p_like(x), good.p_like(x))
    np.testing.assert_array_equal(loaded.p_relevant(x), good.p_relevant(x))

    evaluate = lambda model: T.ranking_ndcg(model, offline)  # noqa: E731
    assert registry.promote(settings, "run-good", evaluate)["decision"] == registry.CHAMPION  # no champion yet

    # A worse model (labels shuffled: it learned nothing) must not take the champion alias.
    rng = np.random.default_rng(0)
    bad_examples = offline.train_examples.copy()
    bad_examples["label"] = rng.permutation(bad_examples["label"].to_numpy())
    bad_examples["is_negative"] = rng.permutation(bad_examples["is_negative"].to_numpy())
    bad_data = T.OfflineData(**{**offline.__dict__, "train_examples": bad_examples})
    bad = T.fit(bad_data, seed=42)
    _register(settings, offline, "run-bad", bad)
    record = registry.promote(settings, "run-bad", evaluate)
    assert record["decision"] == registry.CHALLENGER
    assert record["champion_ndcg_at_10"] == pytest.approx(T.ranking_ndcg(good, offline))
    assert record["candidate_ndcg_at_10"] < record["champion_ndcg_at_10"]
    assert registry.version_by_alias(settings, registry.CHAMPION).version == first["version"]
    run = registry.client(settings).get_run(registry.version_of_run(settings, "run-bad").run_id)
    assert run.data.tags["promotion_decision"] == registry.CHALLENGER
    assert "promotion_champion_ndcg_at_10" in run.data.metrics

    # The other way: a version that beats the champion on the same data takes the alias.
    _register(settings, offline, "run-good-2", good)
    # ... it ties (same model), and a tie is not a win:
    assert registry.promote(settings, "run-good-2", evaluate)["decision"] == registry.CHALLENGER
    # ... so make the champion the bad one and promote the good one against it.
    bad_version = registry.version_of_run(settings, "run-bad").version
    registry.client(settings).set_registered_model_alias(settings.model_name, registry.CHAMPION, bad_version)
    won = registry.promote(settings, "run-good-2", evaluate)
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
    model = T.fit(offline, seed=42)
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


def test_unreachable_mlflow_is_a_bounded_clear_error(base_settings, free_port):
    settings = base_settings.replace(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(registry.RegistryUnavailable, match="unreachable after 3 attempts"):
        registry.wait_for_mlflow(settings, attempts=3, first_delay=0.1)
    assert time.monotonic() - started < 10
