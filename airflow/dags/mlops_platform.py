"""
### mlops_platform: the batch layer of the MovieLens recommender

`ingest` → `validate` → `split` → `features` → (`load_to_redis` ‖ `train`) → `evaluate_and_promote`

Every step writes under `runs/<run id>/` in the object store, so runs never mix. What serving reads moves
only in the last step, and together: when the new model wins, `evaluate_and_promote` gives it the alias
`champion` and makes its feature set `fs:current` (atomically); `load_to_redis` only stages the set. A run
that fails anywhere, or whose model loses, leaves the previous feature set and champion serving as they
were (the staged set simply expires).

**Params** (default: the `.env` settings; override per run in *Trigger* or with `./run.sh pipeline`):
`dataset` (a MovieLens name, `synthetic`, or a path), `split_strategy` (`temporal`/`random`),
`test_fraction`, `seed`.

**Failures**: bad data (the quality gate, a malformed file) fails the task at once, no retry, with the
file, line or column and rule in the log; anything else (a service briefly down) is retried with
exponential backoff.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from mlops.orchestration.steps import DAG_ID
from mlops.orchestration.tasks import execute
from mlops.run_params import RUN_PARAMS
from mlops.settings import get_settings

_settings = get_settings()


def _step_task(fn: Callable[[], None]):
    """A TaskFlow task documented by its docstring, dedented so the UI renders it as Markdown."""
    return task(doc_md=inspect.cleandoc(fn.__doc__ or ""))(fn)


def _run(task_id: str) -> None:
    context = get_current_context()
    execute(task_id, get_settings(), context["run_id"], context["params"])


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    description="MovieLens ratings to a served recommender: ingest, validate, split, features, train, promote",
    doc_md=__doc__,
    tags=["mlops", "movielens"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=15),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
    },
    params={p.name: Param(getattr(_settings, p.name), **p.schema) for p in RUN_PARAMS},
)
def mlops_platform():
    @_step_task
    def ingest() -> None:
        """
        #### Ingest
        Loads the `dataset` param (a GroupLens download, verified by checksum and cached; a local directory
        or zip; or the synthetic generator) and writes the raw files plus a manifest (source, checksums,
        row counts) and the normalized `ratings` and `movies` tables under `runs/<run id>/`.
        An unreachable download fails with the two alternatives named; it never falls back silently.
        """
        _run("ingest")

    @_step_task
    def validate() -> None:
        """
        #### Validate (data-quality gate)
        Checks the normalized tables: schema, null rates, rating range, duplicate (user, movie) pairs,
        row-count change against the last good run. A violation fails the run here, without retry, naming
        the file, line or column and the rule; nothing downstream is written. Report: `quality/`.
        """
        _run("validate")

    @_step_task
    def split() -> None:
        """
        #### Split (Spark)
        Splits ratings into train and test: `temporal` (each user's latest `test_fraction` is test) or
        `random` (per-user stratified, with `seed`). Output: `runs/<run id>/split/{train,test}`.
        """
        _run("split")

    @_step_task
    def features() -> None:
        """
        #### Feature engineering (Spark, point-in-time)
        User, movie and user-by-movie features, each defined once in `mlops.features`. No training example
        sees its own rating or a later one. Writes the offline training/evaluation sets and the online
        snapshot (features from all history) under `runs/<run id>/features/`.
        """
        _run("features")

    @_step_task
    def load_to_redis() -> None:
        """
        #### Load to Redis (Spark → online store)
        Loads the online snapshot as a new feature-set version `fs:<version>:*` in pipelined batches,
        staged: complete, but not yet current. `evaluate_and_promote` switches `fs:current` to it
        atomically when its model becomes champion; readers never see a half-loaded set.
        """
        _run("load_to_redis")

    @_step_task
    def train() -> None:
        """
        #### Train (LightGBM, tracked in MLflow)
        Trains P(rating >= 4) for a user-movie pair on the offline training set; logs parameters,
        metrics, lineage (dataset, split, feature set, git commit) and artifacts, and registers a new
        version of the model. Does not touch the `champion` alias.
        """
        _run("train")

    @_step_task
    def evaluate_and_promote() -> None:
        """
        #### Evaluate and promote
        Compares the new version's `ndcg_at_10` with the current champion's on the same evaluation data:
        the better one holds alias `champion` (serving loads it); a new version that loses gets
        `challenger`. A new champion's feature set becomes `fs:current` with it. The decision and both
        figures are logged on the MLflow run.
        """
        _run("evaluate_and_promote")

    loaded, trained = load_to_redis(), train()
    ingest() >> validate() >> split() >> features() >> [loaded, trained]
    [loaded, trained] >> evaluate_and_promote()


mlops_platform()
