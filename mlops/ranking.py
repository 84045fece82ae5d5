"""The pure ranking core: a feature set's catalog, candidate generation and re-ranking, no I/O.

WHY a module of its own: offline evaluation (training, promotion) must rank exactly as serving does, and
training must not depend on serving's loading and registry code. Training, evaluation and serving all
import this module; it imports only `features` and the model.

Top-k is two-stage so it scales with the catalog: candidates are the best items by the user's
collaborative-filtering vector (a dot product against the item key matrix) plus the most popular
items, minus what the user already rated; LightGBM re-ranks only those candidates.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import features as fx

if TYPE_CHECKING:  # only a type here: ranking needs no LightGBM or MLflow import
    from mlops.training.model import TwoHeadModel

CANDIDATES = 100  # CF candidates re-ranked per top-k request (plus the popular ones the user has not rated)
POPULAR_CANDIDATES = 50


@dataclass(frozen=True)
class CandidateCounts:
    """How many candidates top-k re-ranks: `cf` by CF affinity plus `popular` most popular movies.

    Chosen per model (tuning searches them on validation) and recorded as the model version's tags, so
    serving ranks with exactly the counts the model was evaluated with.
    """

    cf: int = CANDIDATES
    popular: int = POPULAR_CANDIDATES

    def tags(self) -> dict[str, str]:
        """The counts as model version tags, read back by `from_tags` when serving loads the model."""
        return {"candidates_cf": str(self.cf), "candidates_popular": str(self.popular)}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str] | None) -> CandidateCounts:
        """The counts a version was registered with; versions from before the tags get the defaults."""
        tags = tags or {}
        return cls(int(tags.get("candidates_cf", CANDIDATES)), int(tags.get("candidates_popular", POPULAR_CANDIDATES)))


class Catalog:
    """The items of one feature set, held as matrices: what candidate generation and scoring index into."""

    def __init__(self, items: dict[int, dict[str, Any]] | Any, popular: list[int] | None = None):
        if isinstance(items, dict):
            ids = np.array(sorted(items), dtype=np.int64)
            self.matrix = fx.item_matrix([items[int(m)] for m in ids])
        else:  # a DataFrame with movie_id + ITEM_COLUMNS
            frame = items.sort_values("movie_id")
            ids = frame["movie_id"].to_numpy(dtype=np.int64)
            self.matrix = fx.item_matrix(frame)
        if len(ids) == 0:
            raise ValueError("the feature set has no items")
        self.movie_ids = ids
        self.position = {int(m): i for i, m in enumerate(ids)}
        cf = [fx.ITEM_COLUMNS.index(c) for c in fx.ITEM_CF]
        self.keys = np.ascontiguousarray(self.matrix[:, cf])
        counts = np.nan_to_num(self.matrix[:, fx.ITEM_COLUMNS.index("i_n_ratings")])
        order = np.argsort(-counts, kind="stable")
        self.popular = (
            np.array([self.position[m] for m in popular if m in self.position]) if popular else order[:CANDIDATES]
        )
        self.like_prior = np.nan_to_num(self.matrix[:, fx.ITEM_COLUMNS.index("i_like_rate_smoothed")], nan=0.5)


class RankerCore:
    """Model + catalog, no I/O: what `Ranker` serves with and what offline evaluation ranks with."""

    def __init__(self, model: TwoHeadModel, catalog: Catalog, counts: CandidateCounts | None = None):
        self.model = model
        self.catalog = catalog
        self.counts = counts or CandidateCounts()
        self.observer: Callable[[np.ndarray, np.ndarray], None] | None = None
        """Called with each scored batch's model input and P(like): the stream's drift window samples it."""

    def _rated_mask(self, users: list[dict[str, Any]]) -> np.ndarray:
        pos = self.catalog.position
        mask = np.zeros((len(users), len(self.catalog.movie_ids)), dtype=bool)
        for r, user in enumerate(users):
            mask[r, [pos[m] for m in user.get(fx.RATED_COLUMN) or () if m in pos]] = True
        return mask

    def candidates(self, users: list[dict[str, Any]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, valid) per user: the CF top-N then the popular movies; rated ones are not valid.

        One matrix product for the whole batch, and the same number of slots for every user, so that
        re-ranking is a single LightGBM call.
        """
        cat = self.catalog
        user_cf = fx.user_matrix(users)[:, [fx.USER_COLUMNS.index(c) for c in fx.USER_CF]]
        cf = np.nan_to_num(user_cf) @ cat.keys.T
        rated = self._rated_mask(users)
        popular = cat.popular[: self.counts.popular]
        cf[rated] = -np.inf
        cf[:, popular] = -np.inf  # they join below anyway: not twice
        n = max(0, min(max(self.counts.cf, k), cf.shape[1] - len(popular)))
        top = np.argpartition(-cf, n - 1, axis=1)[:, :n] if n else np.zeros((len(users), 0), dtype=np.int64)
        positions = np.hstack([top, np.broadcast_to(popular, (len(users), len(popular)))]).astype(np.int64)
        valid = ~np.take_along_axis(rated, positions, axis=1)
        valid[:, :n] &= np.isfinite(np.take_along_axis(cf, top, axis=1))
        return positions, valid

    def score(
        self, users: list[dict[str, Any] | None], movie_ids: list[list[int]]
    ) -> tuple[list[dict[int, float]], list[bool]]:
        """P(like) for every listed pair of the batch: one feature matrix (each user row read once, item rows
        indexed in the catalog matrix) and one model call; movies the catalog lacks get its prior like rate."""
        cat = self.catalog
        lengths = [len(mids) for mids in movie_ids]
        flat = np.fromiter(itertools.chain.from_iterable(movie_ids), dtype=np.int64, count=sum(lengths))
        rows = np.searchsorted(cat.movie_ids, flat).clip(max=len(cat.movie_ids) - 1)
        known = cat.movie_ids[rows] == flat
        p = np.full(len(flat), float(np.mean(cat.like_prior)))
        if known.any():
            owner = np.repeat(np.arange(len(users)), lengths)
            x = fx.assemble(fx.user_matrix(users), cat.matrix, u_rows=owner[known], i_rows=rows[known])
            p[known] = self.model.p_like(x)
            if self.observer is not None:
                self.observer(x, p[known])
        ids, values, out, offset = flat.tolist(), p.tolist(), [], 0
        for n in lengths:
            out.append(dict(zip(ids[offset : offset + n], values[offset : offset + n], strict=True)))
            offset += n
        return out, [u is None for u in users]

    def recommend(
        self, users: list[dict[str, Any] | None], ks: list[int]
    ) -> tuple[list[list[tuple[int, float]]], list[bool]]:
        """Top-k per user: candidates re-ranked by the relevance head in one LightGBM call for the batch;
        an unknown user (None) gets the most popular movies, flagged as fallback."""
        cat = self.catalog
        out: list[list[tuple[int, float]]] = [[] for _ in users]
        known = [i for i, u in enumerate(users) if u is not None]
        if known:
            rows = [users[i] for i in known]
            positions, valid = self.candidates(rows, max(ks[i] for i in known))
            n_users, width = positions.shape
            # Only valid candidates (rated ones can never be recommended) and only the relevance head's
            # columns, in its input order (what `TwoHeadModel.p_relevant` selects).
            keep = valid.ravel()
            x = fx.assemble(
                fx.user_matrix(rows),
                cat.matrix,
                fx.RELEVANCE_FEATURES,
                u_rows=np.repeat(np.arange(n_users), width)[keep],
                i_rows=positions.ravel()[keep],
            )
            scores = np.full(n_users * width, -np.inf)
            if len(x):
                scores[keep] = self.model.relevance.predict(x, num_threads=1)
            scores = scores.reshape(n_users, width)
            order = np.argsort(-scores, axis=1, kind="stable")
            for r, i in enumerate(known):
                best = [j for j in order[r, : ks[i]] if np.isfinite(scores[r, j])]
                out[i] = [(int(cat.movie_ids[positions[r, j]]), float(scores[r, j])) for j in best]
        for i, user in enumerate(users):
            if user is None:  # cold start: the most popular movies, scored by their smoothed like rate
                out[i] = [(int(cat.movie_ids[j]), float(cat.like_prior[j])) for j in cat.popular[: ks[i]]]
        return out, [u is None for u in users]
