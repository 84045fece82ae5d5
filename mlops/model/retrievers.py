"""The retrievers: each scores every catalog movie for a batch of users, from what the users rated.

WHY one small interface: the candidate stage, the learning-to-rank features, the single-retriever model
families and the offline baselines all need the same scores, so each retriever is written once, here.
A retriever is fit on a training history (who rated what) over a catalog (movie ids in a fixed order)
and then only reads arrays: its state is what ships inside the registered model (`state()` /
`from_state()`), so serving scores exactly as training did.

- `ease`: EASE^R (Steck 2019), the closed-form item-item model x_u B. Over the EASE_MAX_ITEMS most rated
  movies when the catalog is bigger (the dense inverse is items x items), others get no score.
- `cooccurrence`: x_u C with C the item-item co-rating counts (the classic "rated together" list), over
  the same most rated movies.
- `popularity`: how many users rated the movie in the history.
- `als`: the implicit-ALS fold-in affinity u_cf . i_cf of the feature set (Spark's ALS in the feature step:
  the user's vector is in the user row, the item keys in the catalog), so it needs no state of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from scipy import sparse

from mlops import features as fx

# EASE inverts an items x items matrix and co-occurrence keeps one: above this many movies both score only
# the most rated ones (training on 25M synthetic ratings, 30,000 movies, was killed for memory at 21 GiB
# with every movie in). All of ml-100k's, ml-1m's and 1M synthetic ratings' movies fit.
EASE_MAX_ITEMS = 6000
EASE_LAMBDAS = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)  # the grid EASE's lambda is chosen from, on validation
NO_SCORE = -np.inf  # a movie a retriever cannot score (outside its kept movies)
PAIR_CHUNK = 200_000  # pairs `pair_votes` gathers at once (x the user's ratings: the votes held in memory)


class RetrieverError(ValueError):
    """A retriever cannot be fit on this history (empty, or too large for memory): the train step exits 3."""


@dataclass
class UserBatch:
    """The users of one batch as every retriever reads them: rated catalog positions and USER_COLUMNS rows."""

    rated: list[np.ndarray]  # per user, the catalog positions of the movies they rated
    matrix: np.ndarray  # (users, USER_COLUMNS) float64
    n_items: int
    liked: list[np.ndarray] | None = None  # per user, the positions of the rated movies they liked

    @classmethod
    def of(cls, users: Sequence[dict[str, Any]], movie_ids: np.ndarray, n_items: int) -> UserBatch:
        """From online user rows (with `rated_movie_ids` and `liked_movie_ids`) over the sorted catalog
        `movie_ids`; movies the catalog lacks are ignored. One vectorised lookup per list column."""
        return cls(
            _positions([_ids(u.get(fx.RATED_COLUMN)) for u in users], movie_ids),
            fx.user_matrix(list(users)),
            n_items,
            _positions([_ids(u.get(fx.LIKED_COLUMN)) for u in users], movie_ids),
        )

    @cached_property
    def x(self) -> sparse.csr_matrix:
        """The binary users x catalog matrix of what each user rated."""
        return _binary(self.rated, self.n_items)

    @cached_property
    def rated_mask(self) -> np.ndarray:
        """(users, items) True where the user rated the movie: never a candidate."""
        return self.x.toarray() > 0


def _ids(value: Any) -> Sequence[int]:
    """A stored list of movie ids (a list, or an array when read from Parquet); none when absent."""
    return () if value is None else value


def catalog_positions(movie_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each id's position in the sorted catalog `movie_ids`, and whether the catalog has it (the position of
    an id it lacks is a valid index, to be masked)."""
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(movie_ids, ids).clip(max=max(len(movie_ids) - 1, 0))
    known = movie_ids[pos] == ids if len(movie_ids) else np.zeros(len(ids), bool)
    return pos, known


def _positions(lists: list[Sequence[int]], movie_ids: np.ndarray) -> list[np.ndarray]:
    """Each list of movie ids as catalog positions, the ids the catalog lacks left out."""
    lengths = np.fromiter((len(r) for r in lists), np.int64, len(lists))
    flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(lengths.sum()))
    pos, known = catalog_positions(movie_ids, flat)
    cuts = np.cumsum(lengths)[:-1]
    return [p[k] for p, k in zip(np.split(pos, cuts), np.split(known, cuts), strict=True)]


def _member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """keys in sorted_set, by binary search (np.isin sorts both sides: several times slower here)."""
    if len(sorted_set) == 0:
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(sorted_set, keys).clip(max=len(sorted_set) - 1)
    return sorted_set[at] == keys


def _binary(lists: list[np.ndarray], n_items: int) -> sparse.csr_matrix:
    """users x catalog, 1 at each listed position (a position listed twice is still 1)."""
    rows = np.repeat(np.arange(len(lists)), [len(r) for r in lists])
    cols = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    x = sparse.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(lists), n_items), dtype=np.float32)
    x.data[:] = 1.0
    return x


class Retriever(Protocol):
    """Scores every catalog movie for each user of a batch; NO_SCORE where it has no opinion."""

    name: ClassVar[str]

    def scores(self, batch: UserBatch) -> np.ndarray:
        """(users, catalog items) float32."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """The arrays `from_state` rebuilds it from (saved inside the registered model)."""
        ...


def interactions(history: pd.DataFrame, movie_ids: np.ndarray) -> sparse.csr_matrix:
    """Binary users x catalog matrix of a history (users in sorted id order; movies off the catalog dropped)."""
    users = np.sort(history["user_id"].unique())
    col = np.searchsorted(movie_ids, history["movie_id"].to_numpy())
    ok = (col < len(movie_ids)) & (movie_ids[col.clip(max=len(movie_ids) - 1)] == history["movie_id"].to_numpy())
    row = np.searchsorted(users, history["user_id"].to_numpy())
    r = sparse.csr_matrix(
        (np.ones(int(ok.sum()), np.float32), (row[ok], col[ok])), shape=(len(users), len(movie_ids)), dtype=np.float32
    )
    r.data[:] = 1.0
    return r


def most_rated(r: sparse.csr_matrix) -> np.ndarray:
    """Sorted catalog positions of the EASE_MAX_ITEMS most rated movies that have a rating."""
    counts = np.asarray(r.sum(axis=0)).ravel()
    order = np.argsort(-counts, kind="stable")[:EASE_MAX_ITEMS]
    return np.sort(order[counts[order] > 0])


def gram(r: sparse.csr_matrix, kept: np.ndarray) -> np.ndarray:
    """X'X over the kept movies, dense float64: what EASE inverts (the same for every lambda)."""
    sub = r[:, kept]
    return np.asarray((sub.T @ sub).todense(), dtype=np.float64)


def ease_weights(g: np.ndarray, lam: float) -> np.ndarray:
    """EASE^R from the Gram matrix g = X'X: the item-item B minimising ||X - XB||^2 + lam ||B||^2 with
    diag(B) = 0, in closed form: P = (X'X + lam I)^-1, B_ij = -P_ij / P_jj."""
    g = g.copy()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


class _ItemItem:
    """x_u W over the kept movies: EASE's and co-occurrence's scoring."""

    def __init__(self, kept: np.ndarray, weights: np.ndarray):
        self.kept = np.asarray(kept, dtype=np.int64)
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)

    def scores(self, batch: UserBatch) -> np.ndarray:
        out = np.full((len(batch.rated), batch.n_items), NO_SCORE, dtype=np.float32)
        out[:, self.kept] = np.asarray(batch.x[:, self.kept] @ self.weights)
        return out

    def pair_votes(
        self, rated: Sequence[np.ndarray], liked: Sequence[np.ndarray], n_items: int, u_rows: np.ndarray,
        i_rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """x_u W at each pair (batch row u_rows[j], catalog position i_rows[j]) from the movies of `rated[u]`, and
        the same from those also in `liked[u]` (positions in a catalog of `n_items`); NaN for a movie outside
        the kept ones. Gathered, not multiplied: a pair costs one weight per movie its user rated (no
        catalog-wide score row), read by flat index and summed per pair in one pass; PAIR_CHUNK pairs at a
        time to bound the memory."""
        slot = np.full(n_items, -1, dtype=np.int64)
        slot[self.kept] = np.arange(len(self.kept))
        lengths = np.fromiter((len(x) for x in rated), np.int64, len(rated))
        flat = np.concatenate(rated).astype(np.int64) if len(rated) else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(rated), dtype=np.int64), lengths)
        liked_flat = np.concatenate(liked).astype(np.int64) if len(liked) else np.zeros(0, np.int64)
        liked_owner = np.repeat(np.arange(len(liked), dtype=np.int64), [len(x) for x in liked])
        is_liked = _member(owner * n_items + flat, np.sort(liked_owner * n_items + liked_flat))
        voter = slot[flat]
        starts = np.cumsum(lengths) - lengths
        cols = slot[np.asarray(i_rows, dtype=np.int64)]
        users = np.asarray(u_rows, dtype=np.int64)
        weights = self.weights.ravel()
        every = np.full(len(cols), np.nan, dtype=np.float32)
        from_liked = np.full(len(cols), np.nan, dtype=np.float32)
        for start in range(0, len(cols), PAIR_CHUNK):
            part = np.arange(start, min(start + PAIR_CHUNK, len(cols)))
            part = part[cols[part] >= 0]
            counts = lengths[users[part]]
            bounds = np.cumsum(counts) - counts
            at = np.repeat(starts[users[part]] - bounds, counts) + np.arange(int(counts.sum()))
            votes = voter[at]
            known = votes >= 0  # a rated movie outside the kept ones has no weights: no vote
            v = weights[np.where(known, votes, 0) * len(self.kept) + np.repeat(cols[part], counts)] * known
            v = v.astype(np.float64)  # sums that do not depend on the order of the user's list
            some = counts > 0
            every[part] = 0.0
            from_liked[part] = 0.0
            if some.any():
                every[part[some]] = np.add.reduceat(v, bounds[some])
                from_liked[part[some]] = np.add.reduceat(v * is_liked[at], bounds[some])
        return every, from_liked

    def state(self) -> dict[str, np.ndarray]:
        return {"kept": self.kept, "weights": self.weights}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Any:
        return cls(state["kept"], state["weights"])


class Ease(_ItemItem):
    name = "ease"

    @classmethod
    def fit(cls, r: sparse.csr_matrix, lam: float, kept: np.ndarray | None = None, g: np.ndarray | None = None) -> Ease:
        """EASE^R with `lam` on the history matrix `r` (pass `kept` and `g` to reuse them across lambdas)."""
        kept = most_rated(r) if kept is None else kept
        return cls(kept, ease_weights(gram(r, kept) if g is None else g, lam))


class Cooccurrence(_ItemItem):
    name = "cooccurrence"

    @classmethod
    def fit(cls, r: sparse.csr_matrix, kept: np.ndarray | None = None, g: np.ndarray | None = None) -> Cooccurrence:
        """Co-rating counts between kept movies (a movie's count with itself is left out)."""
        kept = most_rated(r) if kept is None else kept
        c = (gram(r, kept) if g is None else g).copy()
        c[np.diag_indices_from(c)] = 0.0
        return cls(kept, c)


class Popularity:
    name = "popularity"

    def __init__(self, counts: np.ndarray):
        self.counts = np.asarray(counts, dtype=np.float32)

    @classmethod
    def fit(cls, r: sparse.csr_matrix) -> Popularity:
        return cls(np.asarray(r.sum(axis=0)).ravel())

    def scores(self, batch: UserBatch) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(batch.rated), batch.n_items)).copy()

    def state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Popularity:
        return cls(state["counts"])


class Als:
    """Spark ALS's fold-in affinity: the user row's u_cf against the catalog's item keys (no state here)."""

    name = "als"
    _USER_CF: ClassVar[list[int]] = [fx.USER_COLUMNS.index(c) for c in fx.USER_CF]

    def __init__(self, keys: np.ndarray):
        self.keys = np.ascontiguousarray(keys, dtype=np.float32)

    def scores(self, batch: UserBatch) -> np.ndarray:
        user_cf = np.nan_to_num(batch.matrix[:, self._USER_CF]).astype(np.float32)
        out = user_cf @ self.keys.T
        out[:, ~np.isfinite(self.keys).all(axis=1)] = NO_SCORE
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {}


RETRIEVERS = ("ease", "als", "cooccurrence", "popularity")


@dataclass
class Retrievers:
    """Every retriever of one history over one catalog: what candidates and ranking features come from."""

    movie_ids: np.ndarray  # the catalog, in the order of every score column
    by_name: dict[str, Any]
    ease_lambda: float

    @classmethod
    def fit(cls, history: pd.DataFrame, movie_ids: np.ndarray, keys: np.ndarray, ease_lambda: float) -> Retrievers:
        """Fit all four on `history` over the catalog `movie_ids` (sorted) with ALS item `keys` in that order."""
        if len(history) == 0:
            raise RetrieverError("the training history is empty: no retriever can be fit")
        r = interactions(history, movie_ids)
        kept = most_rated(r)
        g = gram(r, kept)
        return cls(
            movie_ids,
            {
                "ease": Ease.fit(r, ease_lambda, kept, g),
                "als": Als(keys),
                "cooccurrence": Cooccurrence.fit(r, kept, g),
                "popularity": Popularity.fit(r),
            },
            ease_lambda,
        )

    def scores(self, batch: UserBatch, names: Sequence[str] = RETRIEVERS) -> dict[str, np.ndarray]:
        """Each named retriever's (users, items) scores for the batch."""
        return {n: self.by_name[n].scores(batch) for n in names}

    def state(self) -> dict[str, np.ndarray]:
        """Flat arrays for one .npz file: `movie_ids`, `ease_lambda` and `<retriever>.<array>`."""
        out = {"movie_ids": self.movie_ids, "ease_lambda": np.array(self.ease_lambda)}
        for name, retriever in self.by_name.items():
            out.update({f"{name}.{k}": v for k, v in retriever.state().items()})
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], movie_ids: np.ndarray, keys: np.ndarray) -> Retrievers:
        """Rebuild over a serving catalog (`movie_ids`, ALS `keys`); it must be the catalog they were fit on."""
        if not np.array_equal(np.asarray(state["movie_ids"]), movie_ids):
            raise ValueError("the retrievers were fit on another catalog than the feature set's")

        def part(name: str) -> dict[str, np.ndarray]:
            return {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(f"{name}.")}

        return cls(
            movie_ids,
            {
                "ease": Ease.from_state(part("ease")),
                "als": Als(keys),
                "cooccurrence": Cooccurrence.from_state(part("cooccurrence")),
                "popularity": Popularity.from_state(part("popularity")),
            },
            float(state["ease_lambda"]),
        )
