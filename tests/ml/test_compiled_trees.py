"""Compiled heads predict what LightGBM predicts, through serving's whole path, and compile once per model."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from mlops import features as fx
from mlops.compiled_trees import CompiledHead
from mlops.model.candidates import RANKER_FEATURES
from mlops.model.families import FAMILIES
from mlops.model.ranking import Catalog, RankerCore
from mlops.model.rating_input import RATING_FEATURES
from mlops.model.recommender import Recommender
from mlops.model.retrievers import Retrievers

N_ITEMS = 80


@pytest.fixture(scope="module")
def boosters(items):
    """The rating head and a LambdaRank ranker on rows with missing values, with the production objectives."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (4000, len(RATING_FEATURES)))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = np.nan_to_num(x[:, 0]) * np.nan_to_num(x[:, 3]) + np.nan_to_num(x[:, 5]) + rng.normal(0, 0.5, len(x)) > 0
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 20, "verbose": -1, "num_threads": 1,
              "monotone_constraints": [1 if n in fx.MONOTONE_INCREASING else 0 for n in RATING_FEATURES]}  # fmt: skip
    rating = lgb.train(params, lgb.Dataset(x, y.astype(int)), 40)
    r = rng.normal(0, 1, (4000, len(RANKER_FEATURES)))
    r[rng.random(r.shape) < 0.1] = np.nan
    rank_params = {"objective": "lambdarank", "num_leaves": 7, "min_data_in_leaf": 20, "verbose": -1,
                   "num_threads": 1}  # fmt: skip
    ranker = lgb.train(rank_params, lgb.Dataset(r, (np.nan_to_num(r[:, 0]) > 0.5).astype(int), group=[40] * 100), 40)
    rated = [(u, m) for u in range(50) for m in rng.choice(np.arange(1, N_ITEMS + 1), 12, replace=False)]
    history = pd.DataFrame(rated, columns=["user_id", "movie_id"])
    catalog = Catalog(items)
    state = Retrievers.fit(history, catalog.movie_ids, catalog.keys, 10.0).state()
    return Recommender(rating, FAMILIES["ranker"], ranker, state), rng


@pytest.fixture(scope="module")
def items():
    rng = np.random.default_rng(6)
    return {m: dict(zip(fx.ITEM_COLUMNS, rng.normal(0, 1, len(fx.ITEM_COLUMNS)), strict=True))
            for m in range(1, N_ITEMS + 1)}  # fmt: skip


def test_compiled_heads_equal_lightgbm_on_missing_values(boosters, tmp_path):
    model, rng = boosters
    compiled = model.compiled(tmp_path)
    x = rng.normal(0, 2, (3000, len(RATING_FEATURES))).astype(np.float32)  # serving's dtype
    x[rng.random(x.shape) < 0.2] = np.nan
    np.testing.assert_allclose(compiled.p_like(x), model.p_like(x), rtol=0, atol=1e-12)
    r = rng.normal(0, 2, (3000, len(RANKER_FEATURES))).astype(np.float32)
    r[rng.random(r.shape) < 0.2] = np.nan
    np.testing.assert_allclose(compiled.learned.predict(r), model.learned.predict(r), rtol=0, atol=1e-12)
    assert np.ptp(model.learned.predict(r)) > 1.0  # the ranker's trees split: the comparison can fail


def test_serving_answers_the_same_with_compiled_heads(boosters, items, tmp_path):
    """RankerCore (scoring and top-k) gives the same movies and scores with either form of the model."""
    model, rng = boosters
    users = [
        {**dict(zip(fx.USER_COLUMNS, rng.normal(0, 1, len(fx.USER_COLUMNS)), strict=True)),
         fx.RATED_COLUMN: [int(m) for m in rng.choice(np.arange(1, N_ITEMS + 1), 10, replace=False)]}
        for _ in range(30)
    ] + [None]  # fmt: skip
    movies = [[int(m) for m in rng.integers(1, N_ITEMS + 1, 10)] for _ in users]
    reference, fast = RankerCore(model, Catalog(items)), RankerCore(model.compiled(tmp_path), Catalog(items))
    for got, want in zip(fast.score(users, movies)[0], reference.score(users, movies)[0], strict=True):
        assert got.keys() == want.keys() and max(abs(got[m] - want[m]) for m in want) <= 1e-12
    for got, want in zip(fast.recommend(users, [10] * len(users))[0],
                         reference.recommend(users, [10] * len(users))[0], strict=True):  # fmt: skip
        assert [m for m, _ in got] == [m for m, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-12)


def test_compiled_code_is_cached_by_model_and_reused(boosters, tmp_path):
    model, _ = boosters
    CompiledHead(model.rating, tmp_path)
    code = sorted(tmp_path.glob("*.o"))
    assert len(code) == 1 and not list(tmp_path.glob("*.tmp"))
    mtime = code[0].stat().st_mtime_ns
    CompiledHead(model.rating, tmp_path)  # same trees: loads the object code, compiles nothing
    assert code[0].stat().st_mtime_ns == mtime and sorted(tmp_path.glob("*.o")) == code
    CompiledHead(model.learned, tmp_path)  # other trees: their own entry
    assert len(list(tmp_path.glob("*.o"))) == 2


def test_a_matrix_of_the_wrong_width_is_refused(boosters, tmp_path):
    model, _ = boosters
    head = CompiledHead(model.rating, tmp_path)
    with pytest.raises(ValueError, match=f"{len(RATING_FEATURES)} feature columns"):
        head.predict(np.zeros((3, len(RATING_FEATURES) - 1)))
