"""A real champion for the stream tests: the pipeline's own steps over a small synthetic dataset.

Built once per session, exactly as the DAG runs them (`mlops.orchestration.steps` and `.tasks`: ingest ... train,
evaluate_and_promote), against the session's throwaway Redis, S3 and MLflow; the result is a feature
set in Redis and a registered model behind `champion`, loaded here through the serving code.
"""

from __future__ import annotations

import contextlib

import pytest

from mlops.orchestration.steps import STEPS, step_argv
from mlops.orchestration.tasks import run_step
from mlops.run_params import RunParams


@pytest.fixture(scope="session")
def champion(settings, mlflow_server):
    """The `RankerInfo` (model_version, feature_set, ...) of the champion the pipeline registered."""
    from mlflow.exceptions import MlflowException

    from mlops.feature_store import RedisFeatureStore
    from mlops.registry import CHALLENGER, CHAMPION, client
    from mlops.serving import Ranker

    # Other test modules register versions on other data under the same model name; under the lineage rule a
    # pipeline version is not compared with those and would stay challenger, and a version they left behind
    # `challenger` would take a share of the traffic. Start, as a fresh stack does, from neither alias.
    for alias in (CHAMPION, CHALLENGER):
        with contextlib.suppress(MlflowException):
            client(settings).delete_registered_model_alias(settings.model_name, alias)
    params = RunParams.defaults(settings)
    for step in STEPS.values():
        result = run_step(step_argv(settings, step, "stream-tests", params))
        assert result.returncode == 0, result.summary(step)
    store = RedisFeatureStore.from_settings(settings)
    return Ranker.load(settings, store, alias=CHAMPION, compiled=False).info
