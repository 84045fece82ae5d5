"""The rating head's rows: what it learns from and what it is scored on, in RATING_FEATURES order.

WHY out of fold: the history columns (`mlops.model.rating_input`) of a training pair must come from a history
without that pair, as at serving, where the pair asked about is never in the user's history. The training
history is cut into FOLDS folds by a hash of (user, movie, seed); a rated pair of fold k gets its columns from
an EASE^R fit on the other folds and from the user's rated and liked lists without fold k. So a pair's own
rating (its label) never reaches its features, and no other label of its fold does either.
The held-out pairs (validation or test) get theirs from the model's retrievers, fit on the whole history,
with the user rows of the feature set: exactly what serving computes for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops import features as fx
from mlops.model.rating_input import history_features, rating_input
from mlops.model.retrievers import Ease, Retrievers, UserBatch, catalog_positions, interactions
from mlops.training.offline_data import OfflineData

FOLDS = 5


@dataclass
class RatingRows:
    """A matrix in `rating_input.RATING_FEATURES` order and its labels (rating >= 4)."""

    x: np.ndarray
    y: np.ndarray


@dataclass
class RatingData:
    """The rating head's training rows and the held-out rows it is scored on."""

    train: RatingRows
    held_out: RatingRows


def fold_of(users: np.ndarray, movies: np.ndarray, seed: int) -> np.ndarray:
    """Each (user, movie)'s fold: a hash of the ids, so a pair has one fold wherever it appears."""
    keys = pd.DataFrame({"u": np.asarray(users, np.int64), "m": np.asarray(movies, np.int64), "s": seed})
    return (pd.util.hash_pandas_object(keys, index=False).to_numpy() % FOLDS).astype(np.int64)


def _lists(history: pd.DataFrame, users: np.ndarray, movie_ids: np.ndarray) -> UserBatch:
    """`users`' rated and liked catalog positions in `history` (empty for a user it lacks)."""
    h = history[history["user_id"].isin(users)]
    pos, known = catalog_positions(movie_ids, h["movie_id"].to_numpy())
    h = h.assign(_pos=pos)[known]
    rated = h.groupby("user_id")["_pos"].apply(np.sort)  # sorted, as the online rows' lists
    liked = h[h["rating"] >= fx.LIKE_THRESHOLD].groupby("user_id")["_pos"].apply(np.sort)
    empty = np.zeros(0, np.int64)
    return UserBatch([rated.get(u, empty) for u in users], np.empty((len(users), 0)), len(movie_ids),
                     [liked.get(u, empty) for u in users])  # fmt: skip


def out_of_fold(
    history: pd.DataFrame, pairs: pd.DataFrame, movie_ids: np.ndarray, ease_lambda: float, seed: int
) -> np.ndarray:
    """(pairs, HISTORY_FEATURES) of `pairs` (user_id, movie_id), each from the history without its fold."""
    out = np.full((len(pairs), 3), np.nan, dtype=np.float32)
    pair_fold = fold_of(pairs["user_id"].to_numpy(), pairs["movie_id"].to_numpy(), seed)
    history_fold = fold_of(history["user_id"].to_numpy(), history["movie_id"].to_numpy(), seed)
    pos, in_catalog = catalog_positions(movie_ids, pairs["movie_id"].to_numpy())
    for k in range(FOLDS):
        rows = np.flatnonzero((pair_fold == k) & in_catalog)
        if len(rows) == 0:
            continue
        rest = history[history_fold != k]
        users, owner = np.unique(pairs["user_id"].to_numpy()[rows], return_inverse=True)
        ease = Ease.fit(interactions(rest, movie_ids), ease_lambda)
        out[rows] = history_features(ease, _lists(rest, users, movie_ids), owner, pos[rows])
    return out


def training_rows(data: OfflineData, movie_ids: np.ndarray, ease_lambda: float, seed: int) -> RatingRows:
    """The point-in-time examples' rated pairs (ordered as `fit_rating` always read them) with their history
    columns out of fold over `data.train`."""
    ex = data.train_examples.sort_values(["user_id", "timestamp", "movie_id", "is_negative"], kind="stable")
    rated = ex[ex["is_negative"] == 0]
    history = out_of_fold(data.train, rated, movie_ids, ease_lambda, seed)
    return RatingRows(np.hstack([fx.build_matrix(rated, rated), history]), rated["label"].to_numpy())


def held_out_rows(retrievers: Retrievers, data: OfflineData, user_rows: dict[int, dict]) -> RatingRows:
    """`data`'s held-out pairs as serving sees them: their feature-set columns and the history columns from
    `retrievers` (fit on `data`'s history) and the users' online rows (NaN for a user or movie the set lacks)."""
    ev = data.eval_examples
    ids, owner = np.unique(ev["user_id"].to_numpy(np.int64), return_inverse=True)
    catalog = retrievers.movie_ids
    pos, in_catalog = catalog_positions(catalog, ev["movie_id"].to_numpy())
    rows = [user_rows.get(int(u)) for u in ids]
    batch = UserBatch.of([r or {} for r in rows], catalog, len(catalog))
    unknown = np.array([r is None for r in rows])
    x = rating_input(fx.build_matrix(ev, ev), retrievers.by_name["ease"], batch, owner, pos, unknown)
    x[~in_catalog, len(fx.FEATURE_NAMES) :] = np.nan
    return RatingRows(x, ev["label"].to_numpy())
