"""Serving knows every rating (issue 26): the served feature set and retrievers are built from every ingested
rating, held-out ones included, while evaluation keeps its own set. Real pipeline, Redis, S3 and MLflow."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops import features as fx
from mlops.feature_store import RedisFeatureStore
from mlops.jobs.split_dataset import PARTS
from mlops.layout import evaluation_set_version, feature_set_version, split_key
from mlops.model.ranking import Catalog, RankerCore
from mlops.registry import CHAMPION, load_model_version
from mlops.serving import Ranker
from mlops.spark_io import read_pandas

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUN_ID = "stream-tests"  # the run the stream tests' champion fixture pipelines


def _top10(core: RankerCore, rows: dict[int, dict], users: list[int]) -> dict[int, set[int]]:
    out = {}
    for start in range(0, len(users), 200):
        chunk = users[start : start + 200]
        recs, _ = core.recommend([rows.get(u) for u in chunk], [10] * len(chunk))
        out.update({u: {m for m, _ in r} for u, r in zip(chunk, recs, strict=True)})
    return out


def test_no_user_is_recommended_a_movie_they_rated_anywhere_in_the_ingested_data(settings, champion):
    ratings = pd.concat([read_pandas(split_key(RUN_ID, part), settings) for part in PARTS])
    rated = ratings.groupby("user_id")["movie_id"].apply(lambda s: set(map(int, s))).to_dict()
    users = sorted(rated)
    store = RedisFeatureStore.from_settings(settings)
    served = Ranker.load(settings, store, alias=CHAMPION, compiled=False)
    assert served.info.feature_set == feature_set_version(RUN_ID)
    assert store.metadata(served.info.feature_set)["history"] == "train+validation+test"
    rows = store.get_online_features(users, [], version=served.info.feature_set).users
    assert all(sorted(map(int, rows[u][fx.RATED_COLUMN])) == sorted(rated[u]) for u in users)  # every rating
    recommended = _top10(served.core, rows, users)
    assert all(len(recommended[u]) == 10 for u in users)
    assert not [u for u in users if recommended[u] & rated[u]]

    # The evaluation set (train + validation) is still there for evaluation and parity; ranked on it, the
    # model does recommend held-out movies: the check above can fail.
    model, version = load_model_version(settings, CHAMPION)
    evaluation = evaluation_set_version(RUN_ID)
    assert version.tags["evaluation_feature_set"] == evaluation
    core = RankerCore(model, Catalog(store.get_all_items(evaluation), store.metadata(evaluation)["popular_movie_ids"]))
    eval_rows = store.get_online_features(users, [], version=evaluation).users
    held_out = _top10(core, eval_rows, users)
    assert sum(len(held_out[u] & rated[u]) for u in users) > 0


def test_the_evaluation_set_served_over_kafka_reproduces_the_logged_figures(settings, champion, capsys):
    """`./run.sh verify --parity`: a consumer of its own serves the evaluation set; every test user's top-10 and
    every test pair's P(like), asked through the broker, give the champion's logged nDCG@10 and AUC."""
    from mlops.consumer.parity import check_parity

    code = check_parity(settings, timeout=300)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ndcg_at_10  served" in out and "test_auc    served" in out and out.count(" OK") == 2, out
