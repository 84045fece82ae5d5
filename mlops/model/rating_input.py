"""The rating head's input: the feature set's columns of a (user, movie) pair, plus what the user's history
says of the movie through EASE^R's item-item weights.

WHY here and not in `mlops.features`: these columns need a fitted model's EASE^R weights, so they exist only
beside a model. Training, evaluation, serving and the pyfunc's input all compute them with `history_features`
from the same kind of inputs (the user's rated and liked lists, the weights of a history the pair is not in),
so they cannot differ between them.
- `ease_pair`: the user's EASE^R score of the movie, x_u B (every rated movie votes);
- `ease_liked_pair`: the same votes from the movies the user liked (rated >= 4) only: whether what they
  liked points at this movie, the part of the history that says "like" and not only "watch";
- `ease_liked_share`: their ratio, scale-free (the liked votes' share of all votes).
Training examples get them out of fold (`mlops.training.rating_examples`): the fit whose weights score a
rated pair never saw that pair, as serving never has seen the pair it is asked about.
"""

from __future__ import annotations

import numpy as np

from mlops import features as fx
from mlops.model.retrievers import Ease, UserBatch

HISTORY_FEATURES: tuple[str, ...] = ("ease_pair", "ease_liked_pair", "ease_liked_share")
RATING_FEATURES: tuple[str, ...] = (*fx.FEATURE_NAMES, *HISTORY_FEATURES)
SHARE_EPS = 1e-3  # keeps the share finite where the votes cancel out


def history_features(ease: Ease, batch: UserBatch, u_rows: np.ndarray, i_rows: np.ndarray) -> np.ndarray:
    """(pairs, HISTORY_FEATURES) float32 for batch row u_rows[j] and catalog position i_rows[j]; NaN for a
    movie outside EASE's kept movies."""
    liked_lists = batch.liked if batch.liked is not None else [np.zeros(0, np.int64)] * len(batch.rated)
    votes, liked = ease.pair_votes(batch.rated, liked_lists, batch.n_items, u_rows, i_rows)
    return np.column_stack([votes, liked, liked / (np.abs(votes) + SHARE_EPS)]).astype(np.float32)


def rating_input(
    base: np.ndarray, ease: Ease, batch: UserBatch, u_rows: np.ndarray, i_rows: np.ndarray,
    unknown: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """The rating head's matrix in RATING_FEATURES order: `base` (the pairs' FEATURE_NAMES columns) and the
    history columns; NaN history for the pairs of users the feature set does not know (`unknown`, per batch
    row): no history is not an empty one."""
    history = history_features(ease, batch, u_rows, i_rows)
    if unknown is not None and unknown.any():
        history[unknown[u_rows]] = np.nan
    return np.hstack([np.asarray(base, dtype=np.float32), history])
