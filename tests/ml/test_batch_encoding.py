"""The micro-batch encoding equals the per-row one: no training/serving skew from the fast path.

Pure numpy + LightGBM on random rows shaped like the feature store's (NaN values, missing keys, unknown
users, zero CF vectors, users without ratings), so no Spark or servers are needed.
"""

from __future__ import annotations

import numpy as np
import pytest
from ml_helpers import recommender_for

from mlops import features as fx
from mlops.errors import ModelFormatError
from mlops.model.ranking import Catalog, RankerCore
from mlops.model.rating_input import SHARE_EPS
from mlops.model.recommender import Recommender
from mlops.training.model import candidate_rows

N_ITEMS, N_USERS = 120, 40


def _item(rng: np.random.Generator) -> dict:
    genres = (rng.random(len(fx.ITEM_GENRES)) < 0.15).astype(float)
    row = {c: float(v) for c, v in zip(fx.ITEM_SCALARS, rng.uniform(0, 5, len(fx.ITEM_SCALARS)), strict=True)}
    row.update(zip(fx.ITEM_GENRES, genres, strict=True))
    row.update(zip(fx.ITEM_CF, rng.normal(0, 0.3, fx.CF_RANK), strict=True))
    if rng.random() < 0.1:
        row.update(dict.fromkeys(fx.ITEM_CF, 0.0))  # no CF vector: cosine is missing
    if rng.random() < 0.1:
        row["i_std_rating"] = None
    return row


def _user(rng: np.random.Generator) -> dict:
    row = {c: float(v) for c, v in zip(fx.USER_COLUMNS, rng.normal(0, 1, len(fx.USER_COLUMNS)), strict=True)}
    row["u_n_ratings"] = float(rng.integers(0, 50))  # 0: cf_score_per_rating is missing
    row[fx.RATED_COLUMN] = [int(m) for m in rng.choice(np.arange(1, N_ITEMS + 1), 15, replace=False)]
    row[fx.LIKED_COLUMN] = sorted(m for m in row[fx.RATED_COLUMN] if rng.random() < 0.5)
    if rng.random() < 0.1:
        del row["u_mean_rating"]  # a missing key is a missing value
    if rng.random() < 0.1:
        row["u_std_rating"] = None
    return row


def _reference_row(user: dict | None, item: dict) -> list[float]:
    """FEATURE_NAMES of one pair, written out row by row as an independent oracle of the encoding."""
    u = {c: np.nan if user is None or user.get(c) is None else user[c] for c in fx.USER_COLUMNS}
    i = {c: np.nan if item.get(c) is None else item[c] for c in fx.ITEM_COLUMNS}
    ucf, icf = np.array([u[c] for c in fx.USER_CF]), np.array([i[c] for c in fx.ITEM_CF])
    genres = np.array([i[c] for c in fx.ITEM_GENRES])
    n_genres = max(genres.sum(), 1.0)
    cf = float(ucf @ icf)
    norms = float(np.sqrt(ucf @ ucf) * np.sqrt(icf @ icf))
    pair = {
        "cf_score": cf,
        "cf_score_per_rating": cf / u["u_n_ratings"] if u["u_n_ratings"] > 0 else np.nan,
        "cf_cosine": cf / norms if norms > 0 else np.nan,
        "genre_affinity": float(np.array([u[c] for c in fx.USER_GENRE_SHARE]) @ genres) / n_genres,
        "genre_liked_affinity": float(np.array([u[c] for c in fx.USER_GENRE_LIKED]) @ genres) / n_genres,
        "taste_gap": i["i_mean_smoothed"] - u["u_mean_rating"],
    }
    return [pair[n] if n in pair else u[n] if n in u else i[n] for n in fx.FEATURE_NAMES]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    items = {m: _item(rng) for m in range(1, N_ITEMS + 1)}
    users = [_user(rng) for _ in range(N_USERS)] + [None, None]
    return rng, items, users


@pytest.fixture(scope="module", params=["ranker", "blend", "ease"])
def model(data, request):
    _, items, users = data
    return recommender_for(items, users, request.param)


def test_build_matrix_matches_row_by_row_reference(data):
    _, items, users = data
    pairs = [(u, items[m]) for u in users for m in (1, 7, 60)]
    x = fx.build_matrix([p[0] for p in pairs], [p[1] for p in pairs])
    expected = np.array([_reference_row(u, i) for u, i in pairs], dtype=np.float32)
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_indexed_assemble_equals_build_matrix(data):
    """The micro-batch form (each user and item once, plus row indices) gives exactly the pairs' rows."""
    rng, items, users = data
    catalog = Catalog(items)
    u_rows = rng.integers(0, len(users), 500)
    movies = rng.integers(1, N_ITEMS + 1, 500)
    i_rows = np.array([catalog.position[int(m)] for m in movies])
    batch = fx.assemble(fx.user_matrix(users), catalog.matrix, u_rows=u_rows, i_rows=i_rows)
    full = fx.build_matrix([users[r] for r in u_rows], [items[int(m)] for m in movies])
    np.testing.assert_array_equal(batch, full)
    some = ("cf_cosine", "i_pop_share", "taste_gap")
    subset = fx.assemble(fx.user_matrix(users), catalog.matrix, some, u_rows, i_rows)
    np.testing.assert_array_equal(subset, full[:, [fx.FEATURE_NAMES.index(n) for n in some]])


def _history_reference(core: RankerCore, user: dict | None, movie: int) -> list[float]:
    """HISTORY_FEATURES of one pair, summed weight by weight as an independent oracle of `history_features`."""
    ease = core.retrievers.by_name["ease"]
    slot = {int(p): k for k, p in enumerate(ease.kept)}
    col = slot.get(core.catalog.position[movie])
    if user is None or col is None:
        return [np.nan] * 3

    def votes(ids: list[int]) -> float:
        return sum(float(ease.weights[slot[core.catalog.position[m]], col])
                   for m in ids if core.catalog.position.get(m) in slot)  # fmt: skip

    every, liked = votes(user[fx.RATED_COLUMN]), votes(user[fx.LIKED_COLUMN])
    return [every, liked, liked / (abs(every) + SHARE_EPS)]


def test_batch_scoring_equals_per_request_path(data, model):
    """`RankerCore.score` on a micro-batch gives each request what it would get alone (one user's rows
    built by `build_matrix` and the history columns summed one weight at a time, one model call), including
    unknown users and unknown movies."""
    rng, items, users = data
    core = RankerCore(model, Catalog(items))
    batch_users = [users[int(r)] for r in rng.integers(0, len(users), 200)]
    batch_movies = [[int(m) for m in rng.integers(1, N_ITEMS + 3, int(rng.integers(0, 12)))] for _ in batch_users]
    scores, fallbacks = core.score(batch_users, batch_movies)
    prior = float(np.mean(core.catalog.like_prior))
    for user, movies, got in zip(batch_users, batch_movies, scores, strict=True):
        known = [m for m in movies if m in items]
        x = np.hstack(
            [
                fx.build_matrix([user] * len(known), [items[m] for m in known]),
                np.array([_history_reference(core, user, m) for m in known]).reshape(len(known), 3),
            ]
        )
        alone = model.p_like(x) if known else []
        assert got == pytest.approx({
            **dict(zip(known, map(float, alone), strict=True)),
            **{m: prior for m in movies if m not in items},
        }, rel=1e-5, abs=1e-7)  # fmt: skip
    assert fallbacks == [u is None for u in batch_users]


def test_recommend_scores_are_the_family_on_the_pyfunc_rows(data, model):
    """Top-k in a batch equals, user by user, the family's score of the rows the logged pyfunc takes
    (`candidate_rows`, one user alone): what `mlflow models serve` would rank by is what the stream ranks by."""
    _, items, users = data
    known = [u for u in users if u is not None]
    core = RankerCore(model, Catalog(items))
    recs, _ = core.recommend(known, [10] * len(known))
    for user, rec in zip(known, recs, strict=True):
        assert len(rec) == 10 and not {m for m, _ in rec} & set(user[fx.RATED_COLUMN])
        rows = candidate_rows(core, [user])
        alone = model.family.scores(rows[list(model.family.features)].to_numpy(), model.learned)
        best = np.lexsort((np.arange(len(alone)), -alone))[:10]
        assert [s for _, s in rec] == pytest.approx(alone[best].tolist(), rel=1e-6)


def test_a_rating_head_without_the_history_columns_is_refused_at_load(data, tmp_path):
    """A version trained before the history columns reads fewer features: loading it names the gap instead
    of scoring a matrix of the wrong width."""
    import lightgbm as lgb

    _, items, users = data
    parts = recommender_for(items, users, "ease").save(tmp_path)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, len(fx.FEATURE_NAMES)))
    old = lgb.train(
        {"objective": "binary", "verbose": -1},
        lgb.Dataset(x, (x[:, 0] > 0).astype(int), feature_name=list(fx.FEATURE_NAMES)),
        3,
    )
    old.save_model(parts["rating"])
    with pytest.raises(ModelFormatError, match=f"reads {len(fx.FEATURE_NAMES)} features.*retrain"):
        Recommender.load(parts)


def test_the_drift_observer_sees_only_the_observed_users_pairs(data):
    """Platform requests (origin "platform") are scored as any other but never sampled for drift: the observer
    gets exactly the pairs of the observed users, in order, and nothing when no user is observed."""
    _, items, users = data
    core = RankerCore(recommender_for(items, users, "ease"), Catalog(items))
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    core.observer = lambda x, p: seen.append((x, p))
    batch = [users[0], users[1], users[2]]
    movies = [[1, 2], [3, 4, 5], [6]]
    everything, _ = core.score(batch, movies)
    full_x, full_p = seen.pop()
    scored, _ = core.score(batch, movies, observed=[True, False, True])
    assert scored == everything  # the answers do not depend on who is observed
    x, p = seen.pop()
    keep = np.array([True, True, False, False, False, True])
    np.testing.assert_array_equal(x, full_x[keep])
    np.testing.assert_array_equal(p, full_p[keep])
    core.score(batch, movies, observed=[False, False, False])
    assert seen == []
