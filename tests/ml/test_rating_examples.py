"""The rating head's history columns are out of fold: a training pair's own rating never reaches its features.

Pure pandas and numpy on synthetic ratings (no Spark, no servers), in the style of the point-in-time test:
change the labels, recompute, compare.
"""

from __future__ import annotations

import numpy as np
from ml_helpers import tiny_movielens

from mlops import features as fx
from mlops.training.rating_examples import FOLDS, fold_of, out_of_fold


def _ratings() -> tuple:
    ratings, movies = tiny_movielens(seed=3, n_users=80, n_movies=60)
    return ratings, np.sort(movies["movie_id"].to_numpy())


def test_changing_a_fold_labels_changes_none_of_its_features():
    ratings, movie_ids = _ratings()
    before = out_of_fold(ratings, ratings, movie_ids, 20.0, seed=42)
    fold = fold_of(ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy(), 42)
    flipped = ratings.copy()
    flipped.loc[fold == 0, "rating"] = np.where(ratings.loc[fold == 0, "rating"] >= fx.LIKE_THRESHOLD, 1.0, 5.0)
    after = out_of_fold(flipped, flipped, movie_ids, 20.0, seed=42)
    np.testing.assert_array_equal(after[fold == 0], before[fold == 0])
    # The other folds saw those ratings in their users' liked lists: the comparison above can fail.
    assert not np.allclose(after[fold != 0], before[fold != 0], equal_nan=True)
    assert np.isfinite(before).all() and (before[:, 0] != 0).mean() > 0.9


def test_a_pair_keeps_its_fold_and_features_whatever_the_row_order():
    ratings, movie_ids = _ratings()
    shuffled = ratings.sample(frac=1.0, random_state=9)
    folds = fold_of(ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy(), 42)
    assert set(np.unique(folds)) == set(range(FOLDS))
    a = out_of_fold(ratings, ratings, movie_ids, 20.0, seed=42)
    b = out_of_fold(shuffled, shuffled, movie_ids, 20.0, seed=42)
    order = shuffled.index.to_numpy()  # tiny_movielens's index is 0..n-1
    np.testing.assert_allclose(b, a[order], rtol=1e-5, atol=1e-6)


def test_removing_the_pair_from_history_changes_nothing():
    """Out of fold means the fit and the lists already lack the pair: dropping it from the history (and with it
    its label) leaves its features exactly as they were."""
    ratings, movie_ids = _ratings()
    fold = fold_of(ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy(), 42)
    pairs = ratings[fold == 2]
    with_them = out_of_fold(ratings, pairs, movie_ids, 20.0, seed=42)
    without = out_of_fold(ratings[fold != 2], pairs, movie_ids, 20.0, seed=42)
    np.testing.assert_array_equal(with_them, without)
