"""A synthetic MovieLens: the same files as ml-latest (ratings.csv, movies.csv), with learnable structure.

Why not uniform noise: the platform must work offline, and a model trained there should still have
something to learn and the pipeline something realistic to chew on. So the generator reproduces what
makes MovieLens MovieLens:
- long-tail item popularity (Zipf-like), and a log-normal spread of user activity (every user >= 5);
- each user has latent genre tastes (Dirichlet): they pick movies mostly from genres they like;
- a rating = global mean + user bias + movie bias + user-by-movie latent factors + genre affinity + noise,
  rounded to half stars in [0.5, 5], so that who-likes-what is predictable from history;
- timestamps spread over years: each user is active over their own window inside 1996-2023.
Everything is vectorized numpy (chunked), so tens of millions of ratings take seconds, and a seed fixes it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from mlops.datasets.layouts import CANONICAL_GENRES

log = logging.getLogger(__name__)

GENRES = [g for g in CANONICAL_GENRES if g not in ("IMAX", "(no genres listed)")]
# Rough share of each genre among MovieLens movies (Drama and Comedy dominate, Film-Noir is rare).
_GENRE_WEIGHT = dict(zip(GENRES, (8, 5, 2.5, 2.5, 13, 5, 2.5, 17, 3, 1, 4, 1.5, 3, 6, 7, 9, 1.5, 1), strict=True))
MIN_PER_USER = 5
FACTORS = 8
_T0, _T1 = 820_454_400, 1_704_067_200  # 1996-01-01 .. 2024-01-01 (UTC seconds)
_CHUNK = 1_000_000


def sizes(n_ratings: int) -> tuple[int, int, int]:
    """Users, movies and the most ratings one user gives, for a target size, near the MovieLens ratios
    (ml-1m: 6k users, 3.7k movies); small sizes get more users so that no one has to rate everything."""
    n_movies = max(MIN_PER_USER * 4, round(6 * n_ratings**0.5))
    cap = max(MIN_PER_USER, int(0.5 * n_movies))
    n_users = max(2, min(n_ratings // MIN_PER_USER, max(round(n_ratings / 150), -(-2 * n_ratings // cap))))
    return n_users, n_movies, cap


def generate(n_ratings: int, seed: int, out_dir: Path) -> dict[str, int]:
    """Write `ratings.csv` and `movies.csv` (ml-latest layout) into `out_dir`; returns the counts."""
    if n_ratings < MIN_PER_USER * 2:
        raise ValueError(f"SYNTHETIC_RATINGS={n_ratings}: need at least {MIN_PER_USER * 2}")
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    n_users, n_movies, cap = sizes(n_ratings)
    n_genres = len(GENRES)

    # Movies: one or two genres, Zipf popularity (ids shuffled so an id says nothing), quality, factors.
    prevalence = np.array([_GENRE_WEIGHT[g] for g in GENRES])
    prevalence /= prevalence.sum()
    primary = rng.choice(n_genres, n_movies, p=prevalence)
    secondary = rng.choice(n_genres, n_movies, p=prevalence)
    has_second = (rng.random(n_movies) < 0.5) & (secondary != primary)
    movie_genres = np.zeros((n_movies, n_genres), dtype=np.float32)
    movie_genres[np.arange(n_movies), primary] = 1
    movie_genres[np.flatnonzero(has_second), secondary[has_second]] = 1
    popularity = 1.0 / (rng.permutation(n_movies) + 5.0) ** 1.1
    log_pop = np.log(popularity)
    movie_bias = rng.normal(0, 0.35, n_movies) + 0.15 * (log_pop - log_pop.mean()) / log_pop.std()
    movie_factors = rng.normal(0, 1 / np.sqrt(FACTORS), (n_movies, FACTORS)).astype(np.float32)
    years = 1930 + np.floor(rng.beta(5, 1.6, n_movies) * 94).astype(np.int64)

    # Users: activity, genre tastes, bias, factors, active window.
    counts = _activity(rng, n_users, n_ratings, cap=cap)
    taste = rng.dirichlet(np.maximum(prevalence * n_genres * 0.2, 0.05), n_users).astype(np.float32)
    user_bias = rng.normal(0, 0.4, n_users)
    user_factors = rng.normal(0, 1 / np.sqrt(FACTORS), (n_users, FACTORS)).astype(np.float32)
    start = rng.uniform(_T0, _T1 - 30 * 86_400, n_users)
    span = np.minimum(rng.lognormal(np.log(200 * 86_400), 1.5, n_users), _T1 - start)

    users, movies = _pick_movies(rng, counts, taste, movie_genres, popularity)
    log.info("synthetic: %d users picked %d movies (%.1fs)", n_users, len(users), time.monotonic() - started)

    raw = np.empty(len(users), dtype=np.float32)
    for lo in range(0, len(users), _CHUNK):
        u, m = users[lo : lo + _CHUNK], movies[lo : lo + _CHUNK]
        genre_fit = (taste[u] * movie_genres[m]).sum(1) / movie_genres[m].sum(1)  # taste share of its genres
        raw[lo : lo + _CHUNK] = (
            user_bias[u] + movie_bias[m]
            + 1.2 * (user_factors[u] * movie_factors[m]).sum(1)
            + 0.5 * np.log(genre_fit * n_genres + 0.1)
        )  # fmt: skip
    # calibrate to MovieLens' marginals (mean ~3.5, sd ~1.05) whatever the taste mix, then add noise
    score = 3.55 + 0.92 * (raw - raw.mean()) / raw.std() + rng.normal(0, 0.5, len(raw))
    ratings = np.clip(np.round(score * 2) / 2, 0.5, 5.0)
    timestamps = (start[users] + rng.random(len(users)) * span[users]).astype(np.int64)

    order = np.lexsort((timestamps, users))
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = np.arange(1, n_movies + 1)
    table = pa.table({
        "userId": users[order] + 1, "movieId": ids[movies[order]], "rating": ratings[order],
        "timestamp": timestamps[order],
    })  # fmt: skip
    with (out_dir / "ratings.csv").open("wb") as f:  # pyarrow would quote the header; MovieLens does not
        f.write(b"userId,movieId,rating,timestamp\n")
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    titles = [f"Synthetic Movie {i} ({y})" for i, y in zip(ids, years, strict=True)]
    genre_names = np.array(GENRES)
    genres = ["|".join(genre_names[np.flatnonzero(row)]) for row in movie_genres]
    pacsv.write_csv(pa.table({"movieId": ids, "title": titles, "genres": genres}), out_dir / "movies.csv")
    log.info("synthetic: wrote %d ratings, %d users, %d movies to %s in %.1fs",
             len(users), n_users, n_movies, out_dir, time.monotonic() - started)  # fmt: skip
    return {"ratings": len(users), "users": n_users, "movies": n_movies}


def _activity(rng: np.random.Generator, n_users: int, n_ratings: int, cap: int) -> np.ndarray:
    """Ratings per user: log-normal, at least MIN_PER_USER, at most `cap`, summing to exactly `n_ratings`."""
    weights = rng.lognormal(0, 1.1, n_users)
    extra = n_ratings - MIN_PER_USER * n_users
    counts = MIN_PER_USER + np.floor(extra * weights / weights.sum()).astype(np.int64)
    counts = np.minimum(counts, cap)
    while (missing := n_ratings - counts.sum()) > 0:  # hand the rounding rest and the capped excess to others
        room = np.flatnonzero(counts < cap)
        if room.size == 0:
            raise ValueError(f"cannot place {n_ratings} ratings: {n_users} users x {cap} movies each is too few")
        add = rng.choice(room, min(missing, room.size), replace=False)
        counts[add] += 1
    return counts


def _pick_movies(
    rng: np.random.Generator, counts: np.ndarray, taste: np.ndarray, movie_genres: np.ndarray, popularity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, movie) pairs, `counts[u]` per user: a genre from the user's taste, then a movie of that
    genre by popularity. Duplicates are dropped and the shortfall re-drawn; later rounds mix in uniform picks
    so even the heaviest users complete."""
    n_users, n_genres = taste.shape
    n_movies = len(popularity)
    by_genre = [np.flatnonzero(movie_genres[:, g]) for g in range(n_genres)]
    genre_cdf = [np.cumsum(popularity[ids]) / popularity[ids].sum() if ids.size else None for ids in by_genre]
    taste_cdf = np.cumsum(taste, axis=1)
    taste_cdf[:, -1] = 1.0
    have = np.empty(0, dtype=np.int64)  # sorted keys user * n_movies + movie
    need = counts.copy()
    for round_ in range(200):
        users = np.repeat(np.arange(n_users), need)
        if users.size == 0:
            break
        movies = np.empty(users.size, dtype=np.int64)
        for lo in range(0, users.size, _CHUNK):
            u = users[lo : lo + _CHUNK]
            genre = (taste_cdf[u] < rng.random((u.size, 1), dtype=np.float32)).sum(1)
            picked = np.empty(u.size, dtype=np.int64)
            for g in range(n_genres):
                rows = np.flatnonzero(genre == g)
                if genre_cdf[g] is None:
                    picked[rows] = rng.integers(0, n_movies, rows.size)
                else:
                    idx = np.searchsorted(genre_cdf[g], rng.random(rows.size), side="right")
                    picked[rows] = by_genre[g][np.minimum(idx, by_genre[g].size - 1)]
            movies[lo : lo + _CHUNK] = picked
        if round_ >= 2:  # explore uniformly, more so the longer it takes
            uniform = rng.random(users.size) < min(1.0, 0.25 * (round_ - 1))
            movies[uniform] = rng.integers(0, n_movies, int(uniform.sum()))
        keys = users.astype(np.int64) * n_movies + movies
        keys.sort()
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # distinct (np.unique hashes: much slower here)
        if have.size:
            pos = np.minimum(np.searchsorted(have, keys), have.size - 1)
            keys = keys[have[pos] != keys]
        # keep at most need[u] new pairs per user (keys are sorted, so each user's keys are contiguous)
        key_users = keys // n_movies
        rank = np.arange(keys.size) - np.searchsorted(key_users, key_users, side="left")
        keys = keys[rank < need[key_users]]
        have = np.concatenate([have, keys])
        have.sort(kind="stable")  # two sorted runs: a linear merge
        need -= np.bincount(keys // n_movies, minlength=n_users)
    if need.sum():
        raise RuntimeError(f"synthetic: could not place {need.sum()} ratings")
    return have // n_movies, have % n_movies
