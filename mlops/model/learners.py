"""Fitting the learned families on labelled candidates: LambdaRank (`ranker`) and the score blend (`blend`).

No leakage, by construction: the candidates and their features come from the SELECTION world (retrievers
and user / item rows built from train alone) and the labels are the validation ratings, which that world
never saw. For test and serving, the retrievers and rows are rebuilt from train + validation (the FINAL
world) and the same learned state ranks there: every retriever feature is scale-free
(`mlops.model.candidates`), so it means the same in both worlds. A test proves the separation
(`test_training.py::test_the_ranker_features_never_see_the_labels`): changing the held-out ratings changes
labels only, never a feature.

Their validation figure is honest too: `cross_fit` fits on half of the validation users and ranks the
other half (and the reverse), so a learned family is never scored on a user whose labels it learned; the
families are compared on those out-of-fold lists.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from mlops.evaluation import K, sample_users
from mlops.model.candidates import RANKER_FEATURES, Candidates
from mlops.model.families import FAMILIES, Family, linear_scores
from mlops.model.retrievers import Retrievers, UserBatch

log = logging.getLogger(__name__)

MAX_USERS = 20_000  # queries the learners see (a seeded sample above; ~150 candidates each)
FOLDS = 2
BATCH_USERS = 200
ROUNDS = 200
# The blend's weights are searched one at a time over these values, EASE's weight fixed at 1.
BLEND_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0)
BLEND_PASSES = 2


def ranker_params(seed: int, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """LambdaRank parameters (nDCG on binary relevance); small trees: a few labels per user to learn from."""
    return lightgbm_params(
        seed,
        {"objective": "lambdarank", "lambdarank_truncation_level": 20, "learning_rate": 0.03, "num_leaves": 7,
         "min_data_in_leaf": 100},
        overrides,
    )  # fmt: skip


def lightgbm_params(seed: int, model: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """What every LightGBM model of the platform shares (bagging, L2, determinism, threads), then the model's
    own parameters, then tuned `overrides` (`rounds` is not a LightGBM parameter: the caller's)."""
    return {
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
        **model,
    } | {k: v for k, v in (overrides or {}).items() if k != "rounds"}


@dataclass
class Table:
    """Labelled candidates, rows grouped by user (sorted): what the learners fit on."""

    users: np.ndarray  # user id per row
    movies: np.ndarray  # movie id per row
    x: np.ndarray  # RANKER_FEATURES
    y: np.ndarray  # 1.0: among the user's held-out movies
    n_relevant: np.ndarray  # the user's held-out movies, per row (also those outside the candidates)

    def groups(self) -> np.ndarray:
        _, counts = np.unique(self.users, return_counts=True)
        return counts

    def of_users(self, keep: Sequence[int] | np.ndarray) -> Table:
        mask = np.isin(self.users, np.asarray(keep))
        return Table(self.users[mask], self.movies[mask], self.x[mask], self.y[mask], self.n_relevant[mask])

    def columns(self, names: Sequence[str]) -> np.ndarray:
        return self.x[:, [RANKER_FEATURES.index(n) for n in names]]

    def ndcg(self, scores: np.ndarray, k: int = K) -> float:
        """Mean nDCG@k over this table's users when each ranks its candidates by `scores` (binary gains)."""
        order = np.lexsort((self.movies, -scores, self.users))
        users, y, n_rel = self.users[order], self.y[order], self.n_relevant[order]
        starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
        rank = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
        discount = 1.0 / np.log2(np.arange(k) + 2.0)
        top = rank < k
        dcg = np.bincount(np.searchsorted(starts, np.flatnonzero(top), "right") - 1,
                          weights=y[top] * discount[rank[top]], minlength=len(starts))  # fmt: skip
        ideal = np.cumsum(discount)[np.minimum(n_rel[starts], k).astype(int) - 1]
        return float(np.mean(dcg / ideal))

    def top_k(self, scores: np.ndarray, k: int = K) -> dict[int, list[int]]:
        """Each user's best `k` movies of this table by `scores`."""
        order = np.lexsort((self.movies, -scores, self.users))
        users, movies = self.users[order], self.movies[order]
        starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
        ends = np.r_[starts[1:], len(users)]
        return {int(users[a]): movies[a : min(b, a + k)].tolist() for a, b in zip(starts, ends, strict=True)}


def candidate_batches(
    fam: Family,
    retrievers: Retrievers,
    item_matrix: np.ndarray,
    user_rows: Mapping[int, dict[str, Any]],
    users: Sequence[int],
    k: int = 0,
) -> Iterator[tuple[np.ndarray, Candidates]]:
    """(user id per candidate, Candidates) per batch of BATCH_USERS users (all in `user_rows`)."""
    for start in range(0, len(users), BATCH_USERS):
        ids = np.asarray(users[start : start + BATCH_USERS], dtype=np.int64)
        batch = UserBatch.of([user_rows[int(u)] for u in ids], retrievers.movie_ids, len(retrievers.movie_ids))
        cands = fam.candidates(retrievers, item_matrix, batch, k)
        yield ids[cands.users], cands


def table(
    retrievers: Retrievers,
    item_matrix: np.ndarray,
    user_rows: Mapping[int, dict[str, Any]],
    relevant: Mapping[int, set[int]],
    max_users: int = MAX_USERS,
) -> Table:
    """The learned families' candidates (RANKER_FEATURES) for the users of `relevant` that `user_rows` knows
    (a seeded sample above `max_users`), labelled 1 when the movie is among the user's held-out ones.
    Users with no held-out movie among their candidates are left out: they teach nothing."""
    users = sample_users([u for u in relevant if u in user_rows], max_users)
    parts = []
    for uid, cands in candidate_batches(FAMILIES["ranker"], retrievers, item_matrix, user_rows, users):
        movies = retrievers.movie_ids[cands.positions]
        y = np.fromiter((m in relevant[u] for u, m in zip(uid.tolist(), movies.tolist(), strict=True)), bool, len(uid))
        n_rel = np.fromiter((len(relevant[u]) for u in uid.tolist()), np.int64, len(uid))
        parts.append((uid, movies, cands.features, y.astype(np.float32), n_rel))
    if not parts:
        raise ValueError("no held-out user has candidates: nothing to learn a ranking from")
    t = Table(*(np.concatenate([p[i] for p in parts]) for i in range(5)))
    return t.of_users(np.unique(t.users[t.y > 0]))


def fit_booster(t: Table, seed: int, params: Mapping[str, Any] | None = None) -> lgb.Booster:
    """The LambdaRank booster on `t`; `params` may override ranker_params and set `rounds`."""
    params = dict(params or {})
    data = lgb.Dataset(t.x, t.y, group=t.groups(), feature_name=list(RANKER_FEATURES))
    return lgb.train(ranker_params(seed, params), data, int(params.get("rounds", ROUNDS)))


def fit_blend(t: Table, seed: int, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Weights of BLEND_FEATURES (EASE's fixed at 1) by coordinate search over BLEND_GRID on `t`'s nDCG@10.
    Deterministic: no randomness; ties keep the smaller weight."""
    fam = FAMILIES["blend"]
    x = t.columns(fam.features)
    w = np.array([1.0] + [0.0] * (len(fam.features) - 1))
    best = t.ndcg(linear_scores(x, w))
    for _, j in itertools.product(range(BLEND_PASSES), range(1, len(w))):
        for value in BLEND_GRID:
            trial = w.copy()
            trial[j] = value
            score = t.ndcg(linear_scores(x, trial))
            if score > best + 1e-12:
                best, w = score, trial
    return w


FITTERS = {"booster": fit_booster, "linear": fit_blend}


def fit(fam: Family, t: Table, seed: int, params: Mapping[str, Any] | None = None) -> Any:
    """The learned state of family `fam` on table `t`."""
    return FITTERS[fam.scorer](t, seed, params)


def scores(fam: Family, state: Any, t: Table) -> np.ndarray:
    """`fam`'s ranking scores for the rows of `t`."""
    return fam.scores(t.columns(fam.features), state)


def cross_fit(
    fam: Family, t: Table, seed: int, params: Mapping[str, Any] | None = None, k: int = K
) -> dict[int, list[int]]:
    """Out-of-fold top-k per user: each fold's users ranked by state fit on the other folds' users only."""
    users = np.unique(t.users)
    fold = np.random.default_rng(seed).permutation(len(users)) % FOLDS
    out: dict[int, list[int]] = {}
    for f in range(FOLDS):
        held = t.of_users(users[fold == f])
        state = fit(fam, t.of_users(users[fold != f]), seed, params)
        out.update(held.top_k(scores(fam, state, held), k))
    return out
