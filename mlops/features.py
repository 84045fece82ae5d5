"""Every feature of the recommender, defined once: names, types, Spark aggregates, and the model encoding.

Three kinds of columns:
- user columns (`u_*`): aggregates of the user's ratings (activity, mean and spread, like rate, tenure,
  genre profile) and `u_cf_*`, the sum of the item factors of the movies the user rated (an ALS fold-in
  vector: the user's collaborative-filtering position, computable from history alone);
- item columns (`i_*`): aggregates of the movie's ratings (popularity, recent popularity, smoothed mean
  and like rate, spread, age), metadata (year, genres) and `i_cf_*`, the ALS key vector of the movie;
- pair features, computed only in `build_matrix` from one user row and one item row: CF affinity
  (`u_cf . i_cf`), genre affinity, taste gap. Training, evaluation and serving all call `build_matrix`,
  so the model's input cannot differ between them.

Point in time: `user_aggregates(..., as_of=True)` aggregates, for each rating, only the same user's ratings
with a strictly earlier timestamp (a Spark range window ending at -1 second); item columns and CF
factors come from a snapshot of the ratings strictly before a cutoff that is not later than the example
(see `mlops.jobs.feature_engineering`). The online snapshot uses the same aggregates over all history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SCHEMA_VERSION = 2  # 2: online user rows carry `liked_movie_ids`

LIKE_THRESHOLD = 4.0  # a rating >= 4 is a "like": the model's target and the `_liked` metrics' relevance
CF_RANK = 32  # ALS factors per user/item vector
PRIOR_WEIGHT = 10.0  # pseudo-ratings of the global mean added to each movie's mean (Bayesian smoothing)

# Canonical genre vocabulary: the union of ml-100k's and ml-latest's genres, fixed here so that every
# dataset encodes to the same columns. "unknown" / "(no genres listed)" mean no genre.
GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_GENRE_ALIASES = {"Children's": "Children", "Childrens": "Children", "Film Noir": "Film-Noir", "SciFi": "Sci-Fi"}
NO_GENRE = ("unknown", "(no genres listed)", "")


def genre_slug(genre: str) -> str:
    """A genre as it can stand in a column name (`Sci-Fi` -> `sci_fi`)."""
    return genre.lower().replace("-", "_")


GENRE_SLUGS = tuple(genre_slug(g) for g in GENRES)

# -- column names -----------------------------------------------------------------------------------------------

USER_SCALARS = ("u_n_ratings", "u_mean_rating", "u_std_rating", "u_like_rate")
USER_GENRE_SHARE = tuple(f"u_genre_share_{s}" for s in GENRE_SLUGS)  # share of the user's ratings in genre
USER_GENRE_LIKED = tuple(f"u_genre_liked_{s}" for s in GENRE_SLUGS)  # share of the user's likes in genre
USER_CF = tuple(f"u_cf_{d:02d}" for d in range(CF_RANK))
USER_COLUMNS = USER_SCALARS + USER_GENRE_SHARE + USER_GENRE_LIKED + USER_CF
RATED_COLUMN = "rated_movie_ids"  # online user rows only: what top-k must exclude
LIKED_COLUMN = "liked_movie_ids"  # online user rows only: the rated movies rated >= LIKE_THRESHOLD

# i_pop_share: the movie's share of all ratings before the reference time (scale-free, unlike a count,
# so the same value means the same thing in a training example and in the larger online snapshot).
ITEM_SCALARS = (
    "i_n_ratings",
    "i_pop_share",
    "i_mean_smoothed",
    "i_like_rate_smoothed",
    "i_std_rating",
    "i_year",
    "i_n_genres",
)
ITEM_GENRES = tuple(f"i_genre_{s}" for s in GENRE_SLUGS)
ITEM_CF = tuple(f"i_cf_{d:02d}" for d in range(CF_RANK))
ITEM_COLUMNS = ITEM_SCALARS + ITEM_GENRES + ITEM_CF

PAIR_FEATURES = ("cf_score", "cf_score_per_rating", "cf_cosine", "genre_affinity", "genre_liked_affinity", "taste_gap")

# The model's input, in this order. Raw CF vectors and genre profiles enter only through pair features.
FEATURE_NAMES: tuple[str, ...] = USER_SCALARS + ITEM_SCALARS + ITEM_GENRES + PAIR_FEATURES
MONOTONE_INCREASING: tuple[str, ...] = ("cf_score", "cf_score_per_rating", "cf_cosine")


# -- genres -----------------------------------------------------------------------------------------------------


class GenreError(ValueError):
    """A movie's genre string holds a name outside the canonical vocabulary."""


def canonical_genres(genres: str | None) -> list[str]:
    """Pipe-joined MovieLens genres -> canonical names; unknown names are an error, not silently dropped."""
    if genres is None:
        return []
    out = []
    for raw in str(genres).split("|"):
        name = _GENRE_ALIASES.get(raw.strip(), raw.strip())
        if name in NO_GENRE:
            continue
        if name not in GENRES:
            raise GenreError(f"genre {raw!r} is not in the canonical vocabulary {GENRES}")
        out.append(name)
    return out


def genre_flag_columns(genres_col: str = "genres") -> list[Column]:
    """Spark: one 0/1 int column per canonical genre (`g_<slug>`) from the pipe-joined genre string."""
    from pyspark.sql import functions as F

    parts = F.split(F.coalesce(F.col(genres_col), F.lit("")), r"\|")
    cols = []
    for genre, slug in zip(GENRES, GENRE_SLUGS, strict=True):
        names = [genre, *[alias for alias, canon in _GENRE_ALIASES.items() if canon == genre]]
        hit = F.lit(False)
        for name in names:
            hit = hit | F.array_contains(parts, name)
        cols.append(hit.cast("int").alias(f"g_{slug}"))
    return cols


def unknown_genres(movies: DataFrame) -> list[str]:
    """Spark: genre names present in `movies` but outside the vocabulary (the job refuses them)."""
    from pyspark.sql import functions as F

    known = [*GENRES, *_GENRE_ALIASES, *NO_GENRE]
    names = movies.select(F.explode(F.split(F.coalesce("genres", F.lit("")), r"\|")).alias("g")).distinct()
    return sorted(r.g for r in names.where(~F.col("g").isin(known)).collect())


# -- Spark aggregates -------------------------------------------------------------------------------------------


def user_aggregates(rated: DataFrame, as_of: bool) -> DataFrame:
    """User columns from `rated` (user_id, movie_id, rating, timestamp, g_<slug>..., y_00..: item factors).

    `as_of=True`: one row per rating, aggregating only the user's ratings strictly before that rating's
    timestamp (so neither the rating itself nor any later one). `as_of=False`: one row per user over
    everything in `rated` (the online snapshot). Both share the aggregate definitions below.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    like = (F.col("rating") >= LIKE_THRESHOLD).cast("double")
    sums: dict[str, Column] = {
        "_n": F.count(F.lit(1)),
        "_sum": F.sum("rating"),
        "_sumsq": F.sum(F.col("rating") * F.col("rating")),
        "_likes": F.sum(like),
    }
    for slug in GENRE_SLUGS:
        sums[f"_g_{slug}"] = F.sum(F.col(f"g_{slug}").cast("double"))
        sums[f"_gl_{slug}"] = F.sum(F.col(f"g_{slug}") * like)
    for d in range(CF_RANK):
        sums[f"_y_{d:02d}"] = F.sum(F.col(f"y_{d:02d}"))

    if as_of:
        w = (
            Window.partitionBy("user_id")
            .orderBy(F.col("timestamp").cast("long"))
            .rangeBetween(Window.unboundedPreceding, -1)
        )
        base = rated.select("*", *[expr.over(w).alias(name) for name, expr in sums.items()])
    else:
        base = rated.groupBy("user_id").agg(*[expr.alias(name) for name, expr in sums.items()])

    n = F.coalesce(F.col("_n"), F.lit(0)).cast("double")
    safe_n = F.when(n > 0, n)
    mean = F.col("_sum") / safe_n
    likes = F.coalesce(F.col("_likes"), F.lit(0.0))
    out = [
        n.alias("u_n_ratings"),
        mean.alias("u_mean_rating"),
        F.sqrt(F.greatest(F.col("_sumsq") / safe_n - mean * mean, F.lit(0.0))).alias("u_std_rating"),
        (likes / safe_n).alias("u_like_rate"),
    ]
    out += [(F.coalesce(F.col(f"_g_{s}"), F.lit(0.0)) / safe_n).alias(f"u_genre_share_{s}") for s in GENRE_SLUGS]
    out += [
        (F.coalesce(F.col(f"_gl_{s}"), F.lit(0.0)) / F.when(likes > 0, likes)).alias(f"u_genre_liked_{s}")
        for s in GENRE_SLUGS
    ]
    out += [F.coalesce(F.col(f"_y_{d:02d}"), F.lit(0.0)).alias(f"u_cf_{d:02d}") for d in range(CF_RANK)]
    keep = [c for c in rated.columns if not c.startswith(("g_", "y_"))] if as_of else ["user_id"]
    return base.select(*keep, *[c.cast("float") for c in out])


# -- the same user columns, updated one rating at a time (the stream) ----------------------------------------------

STREAM_UPDATED: tuple[str, ...] = USER_SCALARS + USER_GENRE_SHARE + USER_GENRE_LIKED + (RATED_COLUMN, LIKED_COLUMN)
"""User columns the stream keeps fresh: every one that `user_aggregates` derives from sums of the ratings
and the movies' genre flags. `u_cf_*` stays batch-only: it sums ALS item factors that the online set does not
hold (it holds their fold-in keys), and it moves little with one rating; it is as fresh as the last DAG run."""


def with_ratings(row: Mapping[str, Any] | None, ratings: list[tuple[int, float]],
                 genres: Callable[[int], Any]) -> dict[str, Any]:  # fmt: skip
    """`row` (an online user row, None for a user the set does not know) after `ratings` (movie_id, rating):
    the columns of STREAM_UPDATED exactly as `user_aggregates(as_of=False)` computes them over the history
    plus these ratings; `genres(movie_id)` gives the movie's 0/1 flags in GENRE_SLUGS order.

    WHY exact: every sum behind a column is recovered from the row (counts are integers, ratings are halves),
    so a rating applied here and the next batch run over the same ratings agree to float precision. A movie the
    row has already rated is skipped: the data holds one rating per (user, movie) and the row does not keep the
    old rating to replace, so a re-rating reaches the aggregates with the next batch run."""
    out = dict(row) if row is not None else {c: 0.0 for c in USER_CF}
    n = round(_num(out.get("u_n_ratings")))
    mean, std, like_rate = (_num(out.get(c)) for c in ("u_mean_rating", "u_std_rating", "u_like_rate"))
    total = round(2 * n * mean) / 2  # ratings are multiples of 0.5
    squares = round(4 * n * (std * std + mean * mean)) / 4
    likes = round(n * like_rate)
    in_genre = np.array([round(n * _num(out.get(c))) for c in USER_GENRE_SHARE], dtype=np.float64)
    liked_in = np.array([round(likes * _num(out.get(c))) for c in USER_GENRE_LIKED], dtype=np.float64)
    rated = set(map(int, out.get(RATED_COLUMN) or ()))
    liked = set(map(int, out.get(LIKED_COLUMN) or ()))
    new = [(m, r) for m, r in ratings if int(m) not in rated]  # a re-rating: one rating per (user, movie), below
    if not new:
        return out
    for movie_id, rating in new:
        flags = np.asarray(genres(movie_id), dtype=np.float64)
        like = float(rating) >= LIKE_THRESHOLD
        n, total, squares, likes = n + 1, total + rating, squares + rating * rating, likes + like
        in_genre += flags
        liked_in += flags * like
        rated.add(int(movie_id))
        if like:
            liked.add(int(movie_id))
    mean = total / n if n else None
    out.update({
        "u_n_ratings": float(n),
        "u_mean_rating": mean,
        "u_std_rating": float(np.sqrt(max(squares / n - mean * mean, 0.0))) if n else None,
        "u_like_rate": likes / n if n else None,
        **{c: (float(g) / n if n else None) for c, g in zip(USER_GENRE_SHARE, in_genre, strict=True)},
        **{c: (float(g) / likes if likes else None) for c, g in zip(USER_GENRE_LIKED, liked_in, strict=True)},
        RATED_COLUMN: sorted(rated),
        LIKED_COLUMN: sorted(liked),
    })  # fmt: skip
    return out


def _num(value: Any) -> float:
    """A stored feature value as a number (null, the encoding of NaN, counts as 0: the sums were empty)."""
    return 0.0 if value is None or value != value else float(value)


def item_aggregates(
    rated: DataFrame, movies: DataFrame, as_of: bool, global_mean: float, global_like: float
) -> DataFrame:
    """Item columns (without the CF key vector, joined by the caller from its ALS snapshot).

    `as_of=True`: `rated` holds ratings (`_event` = 1) and query rows (`_event` = 0: movie_id and the
    timestamp of training examples); each query row gets the movie's aggregates over ratings strictly
    before its timestamp (and its popularity share among all ratings before it). `as_of=False`: one row
    per movie of `movies`, over all of `rated`. `movies` has movie_id, year, g_<slug>...; the global
    mean / like rate are the smoothing prior, taken from data before the examples too.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    event = F.col("_event").cast("double") if as_of else F.lit(1.0)
    rating = F.coalesce(F.col("rating"), F.lit(0.0)) * event
    like = (F.coalesce(F.col("rating"), F.lit(0.0)) >= LIKE_THRESHOLD).cast("double") * event
    sums = {"_n": F.sum(event), "_sum": F.sum(rating), "_sumsq": F.sum(rating * rating), "_likes": F.sum(like)}
    if as_of:
        ts = F.col("timestamp").cast("long")
        w = Window.partitionBy("movie_id").orderBy(ts).rangeBetween(Window.unboundedPreceding, -1)
        stats = rated.select("movie_id", "timestamp", "_event", *[e.over(w).alias(k) for k, e in sums.items()])
        stats = stats.where(F.col("_event") == 0).drop("_event")
        totals = ratings_before(rated, event, queried=F.col("_event") == 0)
        base = stats.join(totals, "timestamp", "left").join(movies, "movie_id", "left")
        keep = ["movie_id", "timestamp"]
    else:
        total = rated.count()
        stats = rated.groupBy("movie_id").agg(*[e.alias(k) for k, e in sums.items()])
        base = movies.join(stats, "movie_id", "left").withColumn("_total", F.lit(float(total)))
        keep = ["movie_id"]

    n = F.coalesce(F.col("_n"), F.lit(0.0))
    safe_n = F.when(n > 0, n)
    mean = F.col("_sum") / safe_n
    out = [
        n.alias("i_n_ratings"),
        (n / F.when(F.col("_total") > 0, F.col("_total"))).alias("i_pop_share"),
        ((F.coalesce(F.col("_sum"), F.lit(0.0)) + PRIOR_WEIGHT * global_mean) / (n + PRIOR_WEIGHT)).alias(
            "i_mean_smoothed"
        ),
        ((F.coalesce(F.col("_likes"), F.lit(0.0)) + PRIOR_WEIGHT * global_like) / (n + PRIOR_WEIGHT)).alias(
            "i_like_rate_smoothed"
        ),
        F.sqrt(F.greatest(F.col("_sumsq") / safe_n - mean * mean, F.lit(0.0))).alias("i_std_rating"),
        F.col("year").cast("double").alias("i_year"),
        sum(F.coalesce(F.col(f"g_{s}"), F.lit(0)) for s in GENRE_SLUGS).alias("i_n_genres"),
        *[F.coalesce(F.col(f"g_{s}"), F.lit(0)).alias(f"i_genre_{s}") for s in GENRE_SLUGS],
    ]
    return base.select(*keep, *[c.cast("float") for c in out])


TIME_BUCKETS = 4096  # slices of the time range the running count of all ratings is computed in, in parallel


def ratings_before(rated: DataFrame, event: Column, queried: Column | None = None) -> DataFrame:
    """(timestamp, _total): for each distinct timestamp of `rated`, how many ratings (`event` summed) of
    all movies come strictly before it; with `queried`, only for the timestamps of rows where it holds.

    A running count over all rows ordered by time would be a window without a partition, which Spark
    computes in one task. Instead time is cut into TIME_BUCKETS equal slices: each slice's running count
    is a window partitioned by slice, and the count of the slices before it comes from a prefix sum over
    the per-slice totals, a table of at most TIME_BUCKETS rows computed on the driver. The sums are of
    whole numbers, so the result equals the global running count exactly. `queried` drops the other
    timestamps after the count (25M ratings: 20M rows down to the examples' few hundred thousand, which the
    caller's join no longer has to sort; with every timestamp kept, a 4g driver ran out of heap there).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ts = F.col("timestamp").cast("long")
    ratings = rated.where(event > 0)
    lo, hi = ratings.agg(F.min(ts), F.max(ts)).first()
    flag = [] if queried is None else [F.max(queried.cast("int")).alias("_q")]
    per_ts = rated.groupBy("timestamp").agg(F.sum(event).alias("_at"), *flag)
    if lo is None:  # no ratings at all: nothing comes before anything
        per_ts = per_ts if queried is None else per_ts.where(F.col("_q") == 1)
        return per_ts.select("timestamp", F.lit(None).cast("double").alias("_total"))
    width = max(1, -(-(int(hi) - int(lo) + 1) // TIME_BUCKETS))
    bucket = F.floor((ts - F.lit(int(lo))) / F.lit(width)).cast("long")
    per_bucket = dict(ratings.groupBy(bucket.alias("b")).agg(F.sum(event).alias("n")).collect())
    last = (int(hi) - int(lo)) // width
    # prefix[b] = ratings in slices < b, for b in 0..last+1; queries outside the range clamp to its ends.
    prefix, running = [], 0.0
    for b in range(last + 2):
        prefix.append((b, running))
        running += float(per_bucket.get(b) or 0.0)
    spark = rated.sparkSession
    prefix_df = F.broadcast(spark.createDataFrame(prefix, "_slice long, _before double"))
    within = Window.partitionBy("_bucket").orderBy(ts).rangeBetween(Window.unboundedPreceding, -1)
    sliced = per_ts.withColumn("_bucket", bucket).select(
        "timestamp",
        "_bucket",
        F.least(F.greatest(F.col("_bucket"), F.lit(0)), F.lit(last + 1)).alias("_slice"),
        F.coalesce(F.sum("_at").over(within), F.lit(0.0)).alias("_within"),
        *([] if queried is None else ["_q"]),
    )
    if queried is not None:  # after the window: the running count still sees every rating
        sliced = sliced.where(F.col("_q") == 1)
    return sliced.join(prefix_df, "_slice", "left").select(
        "timestamp", (F.col("_before") + F.col("_within")).alias("_total")
    )


def with_item_keys(items: DataFrame, keys: DataFrame) -> DataFrame:
    """Attach the ALS key vectors (`k_00..` of the snapshot) as `i_cf_*`; zeros for movies it lacks."""
    from pyspark.sql import functions as F

    out = items.join(F.broadcast(keys), "movie_id", "left")
    cf = [F.coalesce(F.col(f"k_{d:02d}"), F.lit(0.0)).cast("float").alias(f"i_cf_{d:02d}") for d in range(CF_RANK)]
    return out.select(*[c for c in items.columns], *cf)


# -- the model encoding -----------------------------------------------------------------------------------------


def _block(rows: Any, columns: tuple[str, ...], n: int) -> np.ndarray:
    """A (n, len(columns)) float matrix from a DataFrame, a mapping of arrays, or a list of row dicts (None ->
    all missing). Missing values become NaN, which LightGBM treats as missing."""
    if isinstance(rows, list):
        out = np.full((n, len(columns)), np.nan)
        for r, row in enumerate(rows):
            if row is not None:
                out[r] = list(map(row.get, columns))  # numpy stores None as NaN
        return out
    if isinstance(rows, Mapping) or hasattr(rows, "columns"):
        return np.column_stack([np.asarray(rows[c], dtype=np.float64) for c in columns]).reshape(n, len(columns))
    raise TypeError(f"expected a DataFrame, a mapping of columns or a list of row dicts, got {type(rows).__name__}")


def _length(rows: Any) -> int:
    return (
        len(rows) if isinstance(rows, list) else len(next(iter(rows.values())) if isinstance(rows, Mapping) else rows)
    )


def build_matrix(users: Any, items: Any) -> np.ndarray:
    """The model input for pairs: row r pairs `users` row r with `items` row r; columns in FEATURE_NAMES order.

    `users` / `items`: pandas DataFrames, mappings of column arrays, or lists of row dicts (as read from
    the online store; None for an unknown entity). Returns float32 (n, len(FEATURE_NAMES)).
    """
    n = _length(users)
    if _length(items) != n:
        raise ValueError(f"build_matrix: {n} user rows but {_length(items)} item rows")
    u = _block(users, USER_COLUMNS, n)
    i = _block(items, ITEM_COLUMNS, n)
    return assemble(u, i)


_USER_INDEX = {c: k for k, c in enumerate(USER_COLUMNS)}
_ITEM_INDEX = {c: k for k, c in enumerate(ITEM_COLUMNS)}


class _Pairs:
    """The pair features' shared terms, each computed once and only if a requested feature needs it.

    Rows come from `u[u_rows]` / `i[i_rows]` (all rows when None), gathered per block of columns, so that
    a micro-batch indexes the in-memory matrices instead of materialising full repeated rows.
    """

    def __init__(self, u: np.ndarray, i: np.ndarray, u_rows: np.ndarray | None, i_rows: np.ndarray | None):
        self.u, self.i, self.u_rows, self.i_rows = u, i, u_rows, i_rows

    def user(self, first: str, last: str | None = None) -> np.ndarray:
        a = _USER_INDEX[first]
        cols = slice(a, _USER_INDEX[last] + 1) if last else a
        return self.u[:, cols] if self.u_rows is None else self.u[self.u_rows, cols]

    def item(self, first: str, last: str | None = None) -> np.ndarray:
        a = _ITEM_INDEX[first]
        cols = slice(a, _ITEM_INDEX[last] + 1) if last else a
        return self.i[:, cols] if self.i_rows is None else self.i[self.i_rows, cols]

    @cached_property
    def user_cf(self) -> np.ndarray:
        return self.user(USER_CF[0], USER_CF[-1])

    @cached_property
    def item_cf(self) -> np.ndarray:
        return self.item(ITEM_CF[0], ITEM_CF[-1])

    @cached_property
    def genres(self) -> np.ndarray:
        return self.item(ITEM_GENRES[0], ITEM_GENRES[-1])

    @cached_property
    def n_genres(self) -> np.ndarray:
        return np.maximum(self.genres.sum(axis=1), 1.0)

    @cached_property
    def cf(self) -> np.ndarray:
        return np.einsum("ij,ij->i", self.user_cf, self.item_cf)

    @cached_property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.user_cf, axis=1) * np.linalg.norm(self.item_cf, axis=1)


# Each pair feature, defined once: training, evaluation and serving all compute it here.
_PAIR_FORMULAS: dict[str, Callable[[_Pairs], np.ndarray]] = {
    "cf_score": lambda p: p.cf,
    "cf_score_per_rating": lambda p: np.where(p.user("u_n_ratings") > 0, p.cf / p.user("u_n_ratings"), np.nan),
    "cf_cosine": lambda p: np.where(p.norms > 0, p.cf / p.norms, np.nan),
    "genre_affinity": lambda p: (
        np.einsum("ij,ij->i", p.user(USER_GENRE_SHARE[0], USER_GENRE_SHARE[-1]), p.genres) / p.n_genres
    ),
    "genre_liked_affinity": lambda p: (
        np.einsum("ij,ij->i", p.user(USER_GENRE_LIKED[0], USER_GENRE_LIKED[-1]), p.genres) / p.n_genres
    ),
    "taste_gap": lambda p: p.item("i_mean_smoothed") - p.user("u_mean_rating"),
}
assert tuple(_PAIR_FORMULAS) == PAIR_FEATURES


def assemble(
    u: np.ndarray,
    i: np.ndarray,
    names: tuple[str, ...] = FEATURE_NAMES,
    u_rows: np.ndarray | None = None,
    i_rows: np.ndarray | None = None,
) -> np.ndarray:
    """`names` (FEATURE_NAMES by default; the ranker asks for its context features only) from user
    (USER_COLUMNS) and item (ITEM_COLUMNS) matrices, as float32.

    Row r pairs `u[u_rows[r]]` with `i[i_rows[r]]` (row r of each when the index is None): a micro-batch
    passes each user and each catalog item once plus the indices, and only the needed columns are gathered.
    """
    p = _Pairs(u, i, u_rows, i_rows)
    n = len(u_rows) if u_rows is not None else len(u)
    out = np.empty((n, len(names)), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, name in enumerate(names):
            if name in _PAIR_FORMULAS:
                out[:, k] = _PAIR_FORMULAS[name](p)
            elif name in _USER_INDEX:
                out[:, k] = p.user(name)
            else:
                out[:, k] = p.item(name)
    return out


def user_matrix(users: Any) -> np.ndarray:
    """USER_COLUMNS of many users as a float64 matrix (NaN for missing values or unknown users)."""
    return _block(users, USER_COLUMNS, _length(users))


def item_matrix(items: Any) -> np.ndarray:
    """ITEM_COLUMNS of many items as a float64 matrix (what serving keeps in memory)."""
    return _block(items, ITEM_COLUMNS, _length(items))
