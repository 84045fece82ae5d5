"""Offline/online parity: the matrix built from the online store (Redis round trip) equals the one
training's evaluation built from the offline eval set, and the Ranker's batch APIs behave."""

from __future__ import annotations

import numpy as np
import pytest

from mlops import features as fx
from mlops.feature_store import RedisFeatureStore
from mlops.model.ranking import Catalog, RankerCore
from mlops.serving import Ranker, RankerInfo
from mlops.training.fit import fit


def _rows(frame, id_col):
    for rec in frame.to_dict(orient="records"):
        yield int(rec.pop(id_col)), rec


@pytest.mark.integration
def test_build_matrix_parity_offline_vs_redis(settings, offline):
    store = RedisFeatureStore.from_settings(settings)
    version = "ml-parity-test"
    meta = {"popular_movie_ids": [int(m) for m in offline.meta["popular_movie_ids"]]}
    store.write_feature_set(
        version, _rows(offline.online_users, "user_id"), _rows(offline.online_items, "movie_id"), meta
    )

    ev = offline.eval_examples.head(200)
    online = store.get_online_features(ev["user_id"].tolist(), ev["movie_id"].tolist(), version=version)
    users = [online.users[int(u)] for u in ev["user_id"]]
    items = [online.items[int(m)] for m in ev["movie_id"]]
    offline_x = fx.build_matrix(ev, ev)
    online_x = fx.build_matrix(users, items)
    np.testing.assert_array_equal(online_x, offline_x)

    # The serving fast path (user rows against the in-memory catalog matrix) gives the same rows too.
    catalog = Catalog(store.get_all_items(version), popular=meta["popular_movie_ids"])
    rows = [catalog.position[int(m)] for m in ev["movie_id"]]
    fast = fx.assemble(fx.user_matrix(users), catalog.matrix, u_rows=np.arange(len(users)), i_rows=np.array(rows))
    np.testing.assert_array_equal(fast, offline_x)


def test_ranker_batch_apis_and_fallback(offline):
    model = fit(offline, seed=42)
    popular = [int(m) for m in offline.meta["popular_movie_ids"]]
    ranker = Ranker(RankerCore(model, Catalog(offline.online_items, popular=popular)),
                    RankerInfo("m", "1", "champion", "fs", "r"))  # fmt: skip
    user = offline.online_users.iloc[0].to_dict()
    user[fx.RATED_COLUMN] = [int(m) for m in user[fx.RATED_COLUMN]]
    scores, fallbacks = ranker.score_with_flags([user, None], [[1, 2, 99999], [3]])
    assert set(scores[0]) == {1, 2, 99999} and all(0.0 <= v <= 1.0 for v in scores[0].values())
    assert fallbacks == [False, True]
    recs, fallbacks = ranker.recommend_with_flags([user, None], [5, 3])
    assert len(recs[0]) == 5 and len(recs[1]) == 3
    assert not {m for m, _ in recs[0]} & set(user[fx.RATED_COLUMN])
    assert [m for m, _ in recs[1]] == popular[:3]  # cold start: the popularity list
    assert [s for _, s in recs[0]] == sorted((s for _, s in recs[0]), reverse=True)
    assert fallbacks == [False, True]
