"""Movie titles and a user's rated movies, from the normalized tables a pipeline run wrote.

The stream answers with movie ids; people read titles. The tables are the ones `ingest` committed for a
run (`runs/{run_id}/normalized/movies` and `.../ratings`), read through the same cached local copy the
batch steps use (`spark_io.local_copy`), so a second look costs no download. Movies are kept in memory
per run; a user's ratings are read with a row filter, never the whole table into memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from mlops.layout import normalized_key
from mlops.settings import Settings


@dataclass(frozen=True)
class Movie:
    """A movie as people read it: the id the stream answers with, its title and genres."""

    movie_id: int
    title: str
    genres: str  # pipe-joined canonical names

    @property
    def genre_list(self) -> list[str]:
        """The genres as a list (an empty string, no genres, gives [])."""
        return [g for g in self.genres.split("|") if g]


@dataclass(frozen=True)
class Rating:
    """One of a user's ratings, with the movie it rates."""

    movie: Movie
    rating: float
    timestamp: int


_movies: dict[str, dict[int, Movie]] = {}
_lock = threading.Lock()


def movies(settings: Settings, run_id: str) -> dict[int, Movie]:
    """Every movie of run `run_id`, by id (cached per run: a run's tables never change once committed)."""
    import pyarrow.parquet as pq

    from mlops.spark_io import local_copy

    with _lock:
        if run_id not in _movies:
            path, _ = local_copy(normalized_key(run_id, "movies"), settings)
            table = pq.read_table(str(path), columns=["movie_id", "title", "genres"]).to_pydict()
            _movies[run_id] = {
                int(m): Movie(int(m), str(t), str(g or ""))
                for m, t, g in zip(table["movie_id"], table["title"], table["genres"], strict=True)
            }
        return _movies[run_id]


def movie(catalog: dict[int, Movie], movie_id: int) -> Movie:
    """The movie, or a stand-in that says the id is not in the catalog (never a KeyError on a page)."""
    return catalog.get(movie_id) or Movie(movie_id, f"(movie {movie_id}: not in this run's catalog)", "")


def rated(settings: Settings, run_id: str, user_id: int) -> list[Rating]:
    """The user's ratings in run `run_id`, best first, newest first among equals."""
    import pyarrow.parquet as pq

    from mlops.spark_io import local_copy

    path, _ = local_copy(normalized_key(run_id, "ratings"), settings)
    table = pq.read_table(str(path), columns=["movie_id", "rating", "timestamp"],
                          filters=[("user_id", "=", user_id)]).to_pydict()  # fmt: skip
    catalog = movies(settings, run_id)
    out = [
        Rating(movie(catalog, int(m)), float(r), int(t))
        for m, r, t in zip(table["movie_id"], table["rating"], table["timestamp"], strict=True)
    ]
    return sorted(out, key=lambda x: (-x.rating, -x.timestamp))
