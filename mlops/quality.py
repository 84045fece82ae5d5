"""The data-quality gate: the rules a dataset must pass before anything is computed from it.

Two places enforce them. The parsers (`mlops.datasets.layouts`) reject what cannot even be read as a
table (empty file, truncated line, wrong delimiter, non-numeric id), naming the file and line, and apply the
row rules of a ratings table (`first_row_violation`: rating range, id range, timestamp range, duplicate
(user, movie) pairs; defined once here) while they still know line numbers. `check_tables` runs in the
`validate` step over the normalized tables (schema and dtypes, nulls, the same row rules, dangling movie
ids, row-count drop against the last good run of the same dataset).
Every failure is a `QualityError` naming file, line or column, and the rule; the step's JSON report is
written either way, and the run stops before any downstream output is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlops.errors import DataError

MIN_RATING, MAX_RATING = 0.5, 5.0
MAX_COUNT_DROP = 0.5  # fail when ratings fall by more than this fraction against the last good run

RATINGS_SCHEMA = {"user_id": "int64", "movie_id": "int64", "rating": "float64", "timestamp": "int64"}
MOVIES_SCHEMA = {"movie_id": "int64", "title": "str", "year": "int64", "genres": "str"}
NULLABLE = {"movies": {"year"}}


class QualityError(DataError):
    """A rule broken by the input; `file`, `line`, `column` say where (None when not applicable)."""

    def __init__(self, rule: str, detail: str, file: str | None = None, line: int | None = None,
                 column: str | None = None):  # fmt: skip
        self.rule, self.detail, self.file, self.line, self.column = rule, detail, file, line, column
        where = ", ".join(
            part
            for part in (file, f"line {line}" if line is not None else None, f"column {column!r}" if column else None)
            if part
        )
        super().__init__(f"{where}: [{rule}] {detail}" if where else f"[{rule}] {detail}")

    def as_dict(self) -> dict[str, Any]:
        """The error as the stored quality report holds it: rule, file, line and column as fields of their own."""
        return {"rule": self.rule, "detail": self.detail, "file": self.file, "line": self.line, "column": self.column,
                "message": str(self)}  # fmt: skip


@dataclass
class QualityReport:
    """What the gate checked and found; stored as JSON next to the run's outputs."""

    step: str
    dataset_id: str
    passed: bool = True
    checks: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def ok(self, rule: str, **details: Any) -> None:
        """Record a passed check with what it measured, so the report shows what was checked, not only what failed."""
        self.checks.append({"rule": rule, "passed": True, **details})

    def fail(self, error: QualityError) -> None:
        """Mark the report failed with the error that stops the step."""
        self.passed = False
        self.error = error.as_dict()
        self.checks.append({"rule": error.rule, "passed": False, "message": str(error)})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the object store."""
        return asdict(self)


ROW_RULES = ("rating range", "id range", "timestamp range", "duplicate (user, movie)")


@dataclass(frozen=True)
class RowViolation:
    """The first row of a ratings table that breaks a row rule; the caller knows the file (and line)."""

    rule: str
    row: int  # position in the table, 0-based
    column: str
    detail: str

    def error(self, file: str, line: int | None = None) -> QualityError:
        """The violation as a `QualityError`, once the caller knows which file (and line) it is on."""
        return QualityError(self.rule, self.detail, file=file, line=line, column=self.column)


def first_row_violation(ratings: pd.DataFrame) -> RowViolation | None:
    """The first broken row rule (`ROW_RULES`, in that order) of a normalized ratings table, or None.

    Ratings lie in [MIN_RATING, MAX_RATING], ids are positive, timestamps are not negative, and a user rates
    a movie at most once.
    """
    rating = ratings["rating"].to_numpy()
    bad = np.flatnonzero((rating < MIN_RATING) | (rating > MAX_RATING))
    if bad.size:
        i = int(bad[0])
        return RowViolation("rating range", i, "rating",
                            f"{rating[i]} is outside [{MIN_RATING}, {MAX_RATING}] (user {ratings['user_id'].iat[i]}, "
                            f"movie {ratings['movie_id'].iat[i]}; {bad.size} such ratings)")  # fmt: skip
    for column, lowest, rule, what in (("user_id", 1, "id range", "is not a positive id"),
                                       ("movie_id", 1, "id range", "is not a positive id"),
                                       ("timestamp", 0, "timestamp range", "is negative")):  # fmt: skip
        values = ratings[column].to_numpy()
        bad = np.flatnonzero(values < lowest)
        if bad.size:
            return RowViolation(rule, int(bad[0]), column, f"{values[bad[0]]} {what}")
    dup = ratings.duplicated(["user_id", "movie_id"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        return RowViolation("duplicate (user, movie)", i, "user_id,movie_id",
                            f"user {ratings['user_id'].iat[i]} rated movie {ratings['movie_id'].iat[i]} more than "
                            f"once ({int(dup.sum())} duplicates)")  # fmt: skip
    return None


def _dtype_name(series: pd.Series) -> str:
    """The logical type: nullability is checked by the null rule, so `Int64` and `int64` are both int64."""
    if pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        return "str"
    return str(series.dtype).lower()


def _check_schema(df: pd.DataFrame, table: str, schema: dict[str, str], report: QualityReport) -> None:
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise QualityError("schema", f"missing columns {missing}; have {list(df.columns)}", file=table,
                           column=missing[0])  # fmt: skip
    for column, expected in schema.items():
        actual = _dtype_name(df[column])
        if actual != expected:
            raise QualityError("dtype", f"expected {expected}, found {actual}", file=table, column=column)
    report.ok("schema", table=table, columns=list(schema))


def _check_nulls(df: pd.DataFrame, table: str, report: QualityReport) -> None:
    rates = {}
    for column in df.columns:
        nulls = int(df[column].isna().sum())
        rates[column] = nulls / len(df) if len(df) else 0.0
        if nulls and column not in NULLABLE.get(table, ()):
            row = int(np.flatnonzero(df[column].isna().to_numpy())[0])
            raise QualityError("null values", f"{nulls} nulls ({rates[column]:.2%}); first at row {row}",
                               file=table, column=column)  # fmt: skip
    report.ok("null rates", table=table, rates=rates)


def check_tables(
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    report: QualityReport,
    previous_counts: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Run every table rule; raises `QualityError` at the first broken one. Returns the row counts."""
    for table, df in (("ratings", ratings), ("movies", movies)):
        if len(df) == 0:
            raise QualityError("empty table", "no rows", file=table)
    _check_schema(ratings, "ratings", RATINGS_SCHEMA, report)
    _check_schema(movies, "movies", MOVIES_SCHEMA, report)
    _check_nulls(ratings, "ratings", report)
    _check_nulls(movies, "movies", report)

    violation = first_row_violation(ratings)
    if violation is not None:
        raise violation.error(file="ratings")
    rating = ratings["rating"].to_numpy()
    report.ok("rating range", min=float(rating.min()), max=float(rating.max()))
    for rule in ROW_RULES[1:]:
        report.ok(rule)

    dup_movies = movies["movie_id"].duplicated()
    if dup_movies.any():
        raise QualityError("duplicate movie id", f"movie {movies['movie_id'][dup_movies].iloc[0]} listed twice",
                           file="movies", column="movie_id")  # fmt: skip
    dangling = ~ratings["movie_id"].isin(movies["movie_id"])
    if dangling.any():
        raise QualityError("unknown movie id",
                           f"{int(dangling.sum())} ratings of movies not in the movie list, e.g. movie "
                           f"{ratings['movie_id'][dangling].iloc[0]}", file="ratings", column="movie_id")  # fmt: skip
    report.ok("movie ids known")

    counts = {"ratings": len(ratings), "movies": len(movies), "users": int(ratings["user_id"].nunique())}
    report.stats.update(counts)
    if previous_counts:
        before = int(previous_counts["ratings"])
        drop = 1 - counts["ratings"] / before if before else 0.0
        if drop > MAX_COUNT_DROP:
            raise QualityError(
                "row-count drop",
                f"{counts['ratings']} ratings vs {before} in the last good run {previous_counts.get('run_id')} "
                f"of the same dataset ({drop:.0%} fewer; limit {MAX_COUNT_DROP:.0%})",
                file="ratings",
            )  # fmt: skip
        report.ok("row-count change", previous=before, current=counts["ratings"], change=-drop)
    else:
        report.ok("row-count change", previous=None, current=counts["ratings"])
    return counts
