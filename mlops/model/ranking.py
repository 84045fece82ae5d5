"""The pure ranking core: a feature set's catalog and the model's answers to a batch of requests, no I/O.

WHY a module of its own: offline evaluation (training, promotion) must rank exactly as serving does, and
training must not depend on serving's loading and registry code. Training, evaluation and serving all
rank through `RankerCore`.

Top-k is two-stage so it scales with the catalog: each retriever of the model's family scores the
catalog for the whole batch (a few matrix products), their top-N unrated movies are the candidates, and
the family orders only those (`mlops.model.families`). Score requests answer P(like) with the rating head.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import features as fx
from mlops.model.families import top_k
from mlops.model.rating_input import rating_input
from mlops.model.retrievers import Retrievers, UserBatch

if TYPE_CHECKING:  # only a type here: ranking needs no LightGBM or MLflow import
    from mlops.model.recommender import Recommender

POPULAR_FALLBACK = 100  # the cold-start list's length when the feature set names no popular movies


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
            np.array([self.position[m] for m in popular if m in self.position]) if popular else order[:POPULAR_FALLBACK]
        )
        self.like_prior = np.nan_to_num(self.matrix[:, fx.ITEM_COLUMNS.index("i_like_rate_smoothed")], nan=0.5)
        self._genres = np.nan_to_num(self.matrix[:, [fx.ITEM_COLUMNS.index(c) for c in fx.ITEM_GENRES]])

    def genres(self, movie_id: int) -> np.ndarray:
        """The movie's 0/1 genre flags (GENRE_SLUGS order); KeyError for a movie not in the catalog."""
        return self._genres[self.position[int(movie_id)]]


class RankerCore:
    """Model + catalog, no I/O: what `Ranker` serves with and what offline evaluation ranks with."""

    def __init__(self, model: Recommender, catalog: Catalog, serving: bool = False):
        """`serving`: rank with the retrievers refit on every rating (over the serving set's catalog), else
        with the evaluation ones (offline evaluation, promotion, parity)."""
        self.model = model
        self.catalog = catalog
        state = model.serving_retrievers if serving and model.serving_retrievers is not None else model.retrievers
        self.retrievers = Retrievers.from_state(state, catalog.movie_ids, catalog.keys)
        self.observer: Callable[[np.ndarray, np.ndarray], None] | None = None
        """Called with each scored batch's model input and P(like): the stream's drift window samples it."""

    def batch(self, users: list[dict[str, Any]]) -> UserBatch:
        """Known users' rows as the retrievers read them."""
        return UserBatch.of(users, self.catalog.movie_ids, len(self.catalog.movie_ids))

    def score(
        self, users: list[dict[str, Any] | None], movie_ids: list[list[int]], observed: list[bool] | None = None
    ) -> tuple[list[dict[int, float]], list[bool]]:
        """P(like) for every listed pair of the batch: one feature matrix (each user row read once, item rows
        indexed in the catalog matrix, the history columns from EASE's weights) and one model call; movies the
        catalog lacks get its prior like rate. `observed` (per user, default all): whose pairs the observer
        (the drift window) sees."""
        cat = self.catalog
        lengths = [len(mids) for mids in movie_ids]
        flat = np.fromiter(itertools.chain.from_iterable(movie_ids), dtype=np.int64, count=sum(lengths))
        rows = np.searchsorted(cat.movie_ids, flat).clip(max=len(cat.movie_ids) - 1)
        known = cat.movie_ids[rows] == flat
        p = np.full(len(flat), float(np.mean(cat.like_prior)))
        if known.any():
            owner = np.repeat(np.arange(len(users)), lengths)[known]
            batch = self.batch([u or {} for u in users])
            base = fx.assemble(batch.matrix, cat.matrix, u_rows=owner, i_rows=rows[known])
            unknown = np.array([u is None for u in users])
            ease = self.retrievers.by_name["ease"]
            p[known] = self.model.p_like(rating_input(base, ease, batch, owner, rows[known], unknown))
            if self.observer is not None:  # drift watches the feature set's columns (FEATURE_NAMES)
                seen = np.ones(len(owner), dtype=bool) if observed is None else np.asarray(observed, bool)[owner]
                if seen.any():
                    self.observer(base[seen], p[known][seen])
        ids, values, out, offset = flat.tolist(), p.tolist(), [], 0
        for n in lengths:
            out.append(dict(zip(ids[offset : offset + n], values[offset : offset + n], strict=True)))
            offset += n
        return out, [u is None for u in users]

    def recommend(
        self, users: list[dict[str, Any] | None], ks: list[int]
    ) -> tuple[list[list[tuple[int, float]]], list[bool]]:
        """Top-k per user, ordered by the model's family over its candidates (one pass for the batch); an
        unknown user (None) gets the most popular movies, flagged as fallback."""
        cat = self.catalog
        out: list[list[tuple[int, float]]] = [[] for _ in users]
        known = [i for i, u in enumerate(users) if u is not None]
        if known:
            batch = self.batch([users[i] for i in known])
            model = self.model
            ranked = top_k(model.family, model.learned, self.retrievers, cat.matrix, batch, [ks[i] for i in known])
            for i, best in zip(known, ranked, strict=True):
                out[i] = [(int(cat.movie_ids[p]), s) for p, s in best]
        for i, user in enumerate(users):
            if user is None:  # cold start: the most popular movies, scored by their smoothed like rate
                out[i] = [(int(cat.movie_ids[j]), float(cat.like_prior[j])) for j in cat.popular[: ks[i]]]
        return out, [u is None for u in users]
