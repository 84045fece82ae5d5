"""Retrievers, candidates and the learners on hand-made data: pure numpy / LightGBM, no servers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops import evaluation
from mlops import features as fx
from mlops.model import learners
from mlops.model.candidates import DEPTH, RANKER_FEATURES, candidates
from mlops.model.families import FAMILIES
from mlops.model.retrievers import NO_SCORE, Retrievers, UserBatch

MOVIES = np.array([10, 20, 30, 40, 50])
# users 1..4; movie 50 is in the catalog but nobody rated it
HISTORY = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 3, 3, 4], "movie_id": [10, 20, 30, 10, 20, 20, 40, 10]})
KEYS = np.arange(5 * fx.CF_RANK, dtype=float).reshape(5, fx.CF_RANK) / 100.0


def _batch(rated: list[list[int]]) -> UserBatch:
    rows = [{fx.RATED_COLUMN: r, **dict.fromkeys(fx.USER_CF, 1.0)} for r in rated]
    return UserBatch.of(rows, MOVIES, len(MOVIES))


def test_each_retriever_scores_what_its_definition_says():
    ret = Retrievers.fit(HISTORY, MOVIES, KEYS, 1.0)
    batch = _batch([[10], [20, 40, 99]])  # 99: not in the catalog, ignored
    assert [MOVIES[r].tolist() for r in batch.rated] == [[10], [20, 40]]
    pop = ret.by_name["popularity"].scores(batch)
    np.testing.assert_array_equal(pop[0], [3, 3, 1, 1, 0])
    co = ret.by_name["cooccurrence"].scores(batch)
    # kept: the 4 rated movies. User A rated 10: co-rated with 20 by users 1, 2; with 30 by user 1; 40 never.
    np.testing.assert_array_equal(co[0], [0, 2, 1, 0, NO_SCORE])
    ease = ret.by_name["ease"].scores(batch)
    assert ease[0, 4] == NO_SCORE and ease[0, 0] == 0.0  # unrated by anyone: no score; B's diagonal is 0
    assert ease[0, 1] > ease[0, 3]  # 20 co-rated with 10 twice, 40 never
    als = ret.by_name["als"].scores(batch)
    np.testing.assert_allclose(als[0], KEYS.sum(axis=1) * 1.0, rtol=1e-6)  # u_cf (all ones) . key


def test_state_round_trip_and_the_catalog_check():
    ret = Retrievers.fit(HISTORY, MOVIES, KEYS, 1.0)
    again = Retrievers.from_state(ret.state(), MOVIES, KEYS)
    batch = _batch([[10, 30], [40]])
    for name in ("ease", "cooccurrence", "popularity", "als"):
        np.testing.assert_array_equal(again.by_name[name].scores(batch), ret.by_name[name].scores(batch))
    with pytest.raises(ValueError, match="another catalog"):
        Retrievers.from_state(ret.state(), MOVIES[:-1], KEYS[:-1])


def test_candidates_are_the_union_of_each_top_n_never_a_rated_movie():
    ret = Retrievers.fit(HISTORY, MOVIES, KEYS, 1.0)
    batch = _batch([[10], [20, 40]])
    items = np.zeros((len(MOVIES), len(fx.ITEM_COLUMNS)))
    only_pop = candidates(ret, items, batch, {"popularity": 1}, ("popularity_score", "popularity_rank"))
    # user A (rated 10): the most rated unrated movie is 20; user B (rated 20, 40): it is 10
    assert MOVIES[only_pop.positions].tolist() == [20, 10] and only_pop.users.tolist() == [0, 1]
    np.testing.assert_array_equal(only_pop.column("popularity_rank"), [0.0, 0.0])  # log(1 + rank 0)
    both = candidates(ret, items, batch, {"popularity": 1, "cooccurrence": 2}, RANKER_FEATURES)
    for user, rated in ((0, {10}), (1, {20, 40})):
        got = set(MOVIES[both.positions[both.users == user]].tolist())
        assert not got & rated and set(MOVIES[only_pop.positions[only_pop.users == user]]) <= got
    assert both.features.shape == (len(both.users), len(RANKER_FEATURES))
    # a retriever's scaled score: 1 for its best unrated movie (within the user's top-N)
    assert np.nanmax(both.column("cooccurrence_score")[both.users == 0]) == pytest.approx(1.0)


def test_table_ndcg_is_the_evaluation_modules_ndcg():
    """The learners optimise `Table.ndcg`; it must be the protocol's nDCG@10 for the users it holds."""
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(30), 25)
    movies = np.tile(np.arange(25), 30)
    relevant = {u: set(rng.choice(60, int(rng.integers(1, 12)), replace=False).tolist()) for u in range(30)}
    y = np.array([m in relevant[u] for u, m in zip(users, movies, strict=True)], dtype=np.float32)
    n_rel = np.array([len(relevant[u]) for u in users])
    t = learners.Table(users, movies, rng.normal(size=(len(users), len(RANKER_FEATURES))), y, n_rel)
    scores = rng.normal(size=len(users))
    expected = evaluation.ranking_metrics(t.top_k(scores), relevant)["ndcg_at_10"]
    assert t.ndcg(scores) == pytest.approx(expected, abs=1e-12)


def test_the_blend_learns_which_retriever_to_trust_and_is_deterministic():
    """Labels follow ALS here: the blend (EASE's weight fixed at 1) must give ALS weight, and twice the same."""
    rng = np.random.default_rng(2)
    n_users, per = 60, 30
    users = np.repeat(np.arange(n_users), per)
    x = rng.normal(size=(n_users * per, len(RANKER_FEATURES))).astype(np.float32)
    als = x[:, RANKER_FEATURES.index("als_score")]
    y = (als > np.quantile(als, 0.9)).astype(np.float32)
    t = learners.Table(users, np.tile(np.arange(per), n_users), x, y, np.full(len(users), 3))
    w = learners.fit(FAMILIES["blend"], t, 0)
    assert w[0] == 1.0 and w[list(FAMILIES["blend"].features).index("als_score")] >= 1.0
    np.testing.assert_array_equal(w, learners.fit(FAMILIES["blend"], t, 0))
    oof = learners.cross_fit(FAMILIES["blend"], t, 0)
    assert set(oof) == set(range(n_users)) and all(len(r) == 10 for r in oof.values())


def test_every_family_draws_from_retrievers_that_exist():
    for fam in FAMILIES.values():
        assert set(fam.depth) <= set(DEPTH) and all(f in RANKER_FEATURES for f in fam.features), fam.name
