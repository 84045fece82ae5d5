"""Parsers for every official MovieLens layout, normalizing to one schema.

Layouts: `u.data` + `u.item` (ml-100k: tab-separated ratings, `|`-separated movies with 19 genre flags),
`ratings.dat` + `movies.dat` (ml-1m/ml-10m: `::`-separated, latin-1), `ratings.csv` + `movies.csv`
(ml-latest, ml-20m and later: comma-separated with a header). Input: a directory (the files anywhere up to
two levels down) or a zip of one.

Normalized schema: ratings(user_id int64, movie_id int64, rating float64, timestamp int64 seconds),
movies(movie_id int64, title str, year Int64 parsed from the title, genres str: canonical genre names
joined by `|`). Anything that cannot be read as such a table raises `QualityError` with file, line and
rule: the parser is the first half of the quality gate, because only it still knows line numbers.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlops.quality import QualityError, first_row_violation

log = logging.getLogger(__name__)

# ml-100k's u.item genre flag columns, in file order (u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRES = "(no genres listed)"
# The genre names of the current MovieLens releases; older spellings map onto them.
CANONICAL_GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
    NO_GENRES,
)  # fmt: skip
_GENRE_ALIASES = {"Children's": "Children", "unknown": NO_GENRES, "": NO_GENRES}

RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
_YEAR = re.compile(r"\((\d{4})(?:\s*[-–]\s*\d{0,4})?\)")
_DELIMITERS = {"\t": "tab", ",": "comma", "::": "'::'", "|": "'|'", ";": "';'"}


@dataclass(frozen=True)
class Layout:
    """The two file names by which a MovieLens layout is recognized."""

    name: str
    ratings_file: str
    movies_file: str


LAYOUTS = (
    Layout("u.data", "u.data", "u.item"),
    Layout("ratings.dat", "ratings.dat", "movies.dat"),
    Layout("ratings.csv", "ratings.csv", "movies.csv"),
)


@dataclass(frozen=True)
class LocatedFiles:
    """The layout recognized and the paths of its two files (a zip is extracted first)."""

    layout: Layout
    ratings: Path
    movies: Path


# -- finding the files ------------------------------------------------------------------------------------------


def locate(path: Path, extract_to: Path) -> LocatedFiles:
    """The layout and the ratings/movies files of a dataset directory or zip (a zip is extracted first)."""
    path = Path(path)
    if not path.exists():
        raise QualityError("missing input", "no such file or directory", file=str(path))
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise QualityError("layout", "expected a directory or a .zip of a MovieLens dataset", file=str(path))
        return locate(_extract(path, extract_to), extract_to)
    for layout in LAYOUTS:
        ratings = _find(path, layout.ratings_file)
        movies = _find(path, layout.movies_file)
        if ratings and movies:
            return LocatedFiles(layout, ratings, movies)
        if ratings or movies:
            missing = layout.movies_file if ratings else layout.ratings_file
            raise QualityError("layout", f"found {(ratings or movies).name} but not {missing}", file=str(path))
    expected = ", ".join(f"{lay.ratings_file}+{lay.movies_file}" for lay in LAYOUTS)
    raise QualityError("layout", f"no MovieLens files found (expected one of: {expected})", file=str(path))


def _find(root: Path, name: str) -> Path | None:
    for pattern in (name, f"*/{name}", f"*/*/{name}"):
        hits = sorted(p for p in root.glob(pattern) if not p.name.startswith("._") and "__MACOSX" not in p.parts)
        if hits:
            return hits[0]
    return None


def _extract(zip_path: Path, extract_to: Path) -> Path:
    """Extract only the members a layout needs (a 32M zip also holds large tag/genome files)."""
    wanted = {name for lay in LAYOUTS for name in (lay.ratings_file, lay.movies_file)}
    target = extract_to / zip_path.stem
    with zipfile.ZipFile(zip_path) as zf:
        for member in zf.infolist():
            name = Path(member.filename)
            if name.name in wanted and "__MACOSX" not in name.parts and not member.is_dir():
                if ".." in name.parts or name.is_absolute():
                    raise QualityError("layout", f"unsafe member path {member.filename!r}", file=str(zip_path))
                zf.extract(member, target)
    return target


# -- low-level reading with line numbers ------------------------------------------------------------------------


def _line(path: Path, number: int, encoding: str) -> str:
    with path.open(encoding=encoding, errors="replace", newline="") as f:
        for text in itertools.islice(f, number - 1, number):
            return text.rstrip("\r\n")
    return ""


def _n_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _field_count_error(path: Path, line: int, sep: str, expected: int, encoding: str) -> QualityError:
    """Explain a line with the wrong number of fields: wrong delimiter, truncated file, or a bad line."""
    text = _line(path, line, encoding)
    found = len(text.split(sep)) if text else 0
    for other, label in _DELIMITERS.items():
        if found == 1 and other != sep and len(text.split(other)) == expected:
            return QualityError(
                "wrong delimiter",
                f"expected {expected} fields separated by {_DELIMITERS[sep]}, but the line is separated by {label}: "
                f"{text[:80]!r}",
                file=str(path), line=line,
            )  # fmt: skip
    if line >= _n_lines(path):
        return QualityError("truncated file", f"last line has {found} of {expected} fields: {text[:80]!r}",
                            file=str(path), line=line)  # fmt: skip
    return QualityError("column count", f"expected {expected} fields separated by {_DELIMITERS[sep]}, found {found}: "
                        f"{text[:80]!r}", file=str(path), line=line)  # fmt: skip


def _read_table(
    path: Path, sep: str, names: list[str], header: bool, encoding: str = "utf-8", text: str | None = None,
    quoting: int = csv.QUOTE_MINIMAL, required: list[str] | None = None, text_columns: tuple[str, ...] = (),
) -> pd.DataFrame:  # fmt: skip
    """Read a delimited file; rows with missing or extra fields raise `QualityError` with their line.

    `required` columns (default: all) must be present on every line; `text_columns` are read verbatim
    (a movie called "NA" stays "NA").
    """
    if path.stat().st_size == 0:
        raise QualityError("empty file", "the file has no content", file=str(path), line=1)
    _check_complete(path, encoding)
    source = io.StringIO(text) if text is not None else path
    first_line = 2 if header else 1
    try:
        df = pd.read_csv(
            source, sep=sep if sep != "::" else "\x1f", header=0 if header else None, names=names, index_col=False,
            encoding=encoding, encoding_errors="replace", quoting=quoting, skip_blank_lines=False,
            dtype=dict.fromkeys(text_columns, str) or None, keep_default_na=not text_columns,
            na_values=[""] if text_columns else None,
        )  # fmt: skip
    except pd.errors.EmptyDataError:
        raise QualityError("empty file", "the file has no rows", file=str(path), line=1) from None
    except pd.errors.ParserError as exc:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if not match:
            raise QualityError("unparseable", str(exc).strip(), file=str(path)) from None
        raise _field_count_error(path, int(match.group(2)), sep, len(names), encoding) from None
    # trailing blank lines are harmless; a blank line in the middle is not
    while len(df) and df.iloc[-1].isna().all():
        df = df.iloc[:-1]
    if len(df) == 0:
        raise QualityError("empty file", "no data rows" + (" after the header" if header else ""), file=str(path),
                           line=first_line)  # fmt: skip
    required = required or names
    incomplete = df[required].isna().any(axis=1).to_numpy()
    if incomplete.any():
        row = int(np.flatnonzero(incomplete)[0])
        raise _field_count_error(path, row + first_line, sep, len(names), encoding)
    df.attrs["first_line"] = first_line
    return df


def _check_complete(path: Path, encoding: str) -> None:
    """MovieLens files end with a newline; a last line without one is what an interrupted copy leaves."""
    with path.open("rb") as f:
        f.seek(-1, 2)
        if f.read(1) == b"\n":
            return
    line = _n_lines(path) + 1
    raise QualityError("truncated file", f"the last line does not end with a newline, so it may be cut short: "
                       f"{_line(path, line, encoding)[:80]!r} (if the file is complete, add the final newline)",
                       file=str(path), line=line)  # fmt: skip


def _integer_column(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """The column as int64, or `QualityError` naming the first line that is not an integer."""
    series = df[column]
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(series, errors="coerce")
    bad = numeric.isna() | (numeric != np.floor(numeric))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise QualityError("non-numeric id" if column.endswith("_id") else "non-integer value",
                           f"{series.iloc[row]!r} is not an integer", file=str(path),
                           line=row + df.attrs["first_line"], column=column)  # fmt: skip
    return numeric.to_numpy(dtype=np.int64)


def _float_column(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    series = df[column]
    numeric = series if pd.api.types.is_numeric_dtype(series.dtype) else pd.to_numeric(series, errors="coerce")
    bad = numeric.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise QualityError("non-numeric value", f"{series.iloc[row]!r} is not a number", file=str(path),
                           line=row + df.attrs["first_line"], column=column)  # fmt: skip
    return numeric.to_numpy(dtype=np.float64)


# -- ratings ----------------------------------------------------------------------------------------------------


def read_ratings(files: LocatedFiles) -> pd.DataFrame:
    """The ratings file as the normalized ratings table, checked line by line."""
    path = files.ratings
    name = files.layout.name
    if name == "u.data":
        df = _read_table(path, "\t", list(RATING_COLUMNS), header=False)
    elif name == "ratings.dat":
        raw = path.read_text(encoding="latin-1")
        df = _read_table(path, "::", list(RATING_COLUMNS), header=False, encoding="latin-1",
                         text=raw.replace("::", "\x1f"))  # fmt: skip
    else:
        _check_header(path, ("userId", "movieId", "rating", "timestamp"))
        df = _read_table(path, ",", list(RATING_COLUMNS), header=True)
    out = pd.DataFrame({
        "user_id": _integer_column(df, "user_id", path),
        "movie_id": _integer_column(df, "movie_id", path),
        "rating": _float_column(df, "rating", path),
        "timestamp": _integer_column(df, "timestamp", path),
    })  # fmt: skip
    violation = first_row_violation(out)
    if violation is not None:
        raise violation.error(file=str(path), line=violation.row + df.attrs["first_line"])
    return out


def _check_header(path: Path, expected: tuple[str, ...]) -> None:
    if path.stat().st_size == 0:
        raise QualityError("empty file", "the file has no content", file=str(path), line=1)
    header = _line(path, 1, "utf-8").lstrip("\ufeff")
    fields = header.split(",")
    if tuple(f.strip().strip('"') for f in fields[: len(expected)]) != expected:
        for other, label in _DELIMITERS.items():
            if other != "," and tuple(header.split(other)[: len(expected)]) == expected:
                raise QualityError("wrong delimiter", f"header is separated by {label}, expected comma: {header!r}",
                                   file=str(path), line=1)  # fmt: skip
        raise QualityError("header", f"expected {','.join(expected)}, found {header[:80]!r}", file=str(path), line=1)


# -- movies -----------------------------------------------------------------------------------------------------


def canonical_genres(names: list[str]) -> str:
    """Pipe-joined canonical genre names, in canonical order; `(no genres listed)` when there are none."""
    mapped = {_GENRE_ALIASES.get(n.strip(), n.strip()) for n in names}
    if len(mapped) > 1:
        mapped.discard(NO_GENRES)
    order = {g: i for i, g in enumerate(CANONICAL_GENRES)}
    return "|".join(sorted(mapped, key=lambda g: (order.get(g, len(order)), g))) or NO_GENRES


def year_from_title(title: str) -> int | None:
    """The release year MovieLens puts in the title, the last one when there are several; None if none."""
    years = _YEAR.findall(title)  # the last one: "Paris, je t'aime (2006)", "Sherlock (2010-2017)", "X (1995) (V)"
    return int(years[-1]) if years else None


def read_movies(files: LocatedFiles) -> pd.DataFrame:
    """The movies file as the normalized movies table."""
    path = files.movies
    name = files.layout.name
    if name == "u.data":
        flags = [f"g{i}" for i in range(len(ML100K_GENRES))]
        names = ["movie_id", "title", "release_date", "video_release_date", "imdb_url", *flags]
        df = _read_table(path, "|", names, header=False, encoding="latin-1", quoting=csv.QUOTE_NONE,
                         required=["movie_id", "title", *flags], text_columns=("title",))  # fmt: skip
        flag_values = df[flags].fillna(0).to_numpy(dtype=np.int64)
        genres = [canonical_genres([ML100K_GENRES[j] for j in np.flatnonzero(row)]) for row in flag_values]
    elif name == "ratings.dat":
        raw = path.read_text(encoding="latin-1")
        df = _read_table(path, "::", ["movie_id", "title", "genres"], header=False, encoding="latin-1",
                         text=raw.replace("::", "\x1f"), quoting=csv.QUOTE_NONE,
                         text_columns=("title", "genres"))  # fmt: skip
        genres = [canonical_genres(str(g).split("|")) for g in df["genres"].fillna("")]
    else:
        _check_header(path, ("movieId", "title", "genres"))
        df = _read_table(path, ",", ["movie_id", "title", "genres"], header=True, text_columns=("title", "genres"))
        genres = [canonical_genres(str(g).split("|")) for g in df["genres"].fillna("")]
    titles = df["title"].astype(str).str.strip()
    return pd.DataFrame({
        "movie_id": _integer_column(df, "movie_id", path),
        "title": titles.astype("str"),
        "year": pd.array([year_from_title(t) for t in titles], dtype="Int64"),
        "genres": pd.Series(genres, dtype="str"),
    })  # fmt: skip
