"""Every MovieLens layout parses to the normalized schema; malformed input is rejected with file, line, rule."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mlops.datasets.layouts import canonical_genres, locate, read_movies, read_ratings, year_from_title
from mlops.quality import QualityError

FLAGS_TOY_STORY = "0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0"  # Animation, Children's, Comedy
FLAGS_NONE = "1" + "|0" * 18  # unknown


def write_u_data(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n")
    (root / "u.item").write_text(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{FLAGS_TOY_STORY}\n2|unknown||||{FLAGS_NONE}\n",
        encoding="latin-1",
    )
    return root


def write_dat(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (root / "movies.dat").write_bytes(
        (
            "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
            "661::Café: Story (1996)::Animation|Children's|Musical\n"
        ).encode("latin-1")
    )
    return root


def write_csv(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n7,3,0.5,1106635946\n"
    )
    (root / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n"
        '3,"Grumpier Old Men, The (1995)",(no genres listed)\n'
    )
    return root


def zip_dir(src: Path, zip_path: Path, top: str) -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in src.iterdir():
            zf.write(p, f"{top}/{p.name}")
    return zip_path


@pytest.mark.parametrize("as_zip", [False, True])
def test_u_data_layout(tmp_path, as_zip):
    src = write_u_data(tmp_path / "ml-100k")
    path = zip_dir(src, tmp_path / "ml-100k.zip", "ml-100k") if as_zip else src
    files = locate(path, tmp_path / "x")
    assert files.layout.name == "u.data"
    ratings, movies = read_ratings(files), read_movies(files)
    assert ratings.dtypes.astype(str).to_dict() == {
        "user_id": "int64",
        "movie_id": "int64",
        "rating": "float64",
        "timestamp": "int64",
    }
    assert ratings.values.tolist()[0] == [1, 1, 5.0, 874965758]
    assert movies["genres"].tolist() == ["Animation|Children|Comedy", "(no genres listed)"]
    assert movies["year"].tolist()[0] == 1995 and movies["year"].isna().tolist() == [False, True]
    assert str(movies["year"].dtype) == "Int64"


@pytest.mark.parametrize("as_zip", [False, True])
def test_dat_layout(tmp_path, as_zip):
    src = write_dat(tmp_path / "ml-1m")
    path = zip_dir(src, tmp_path / "ml-1m.zip", "ml-1m") if as_zip else src
    files = locate(path, tmp_path / "x")
    assert files.layout.name == "ratings.dat"
    ratings, movies = read_ratings(files), read_movies(files)
    assert len(ratings) == 3 and ratings["movie_id"].tolist() == [1193, 661, 1193]
    by_id = movies.set_index("movie_id")
    assert by_id.loc[661, "title"] == "Café: Story (1996)"  # latin-1 and a single colon survive the '::' split
    assert by_id.loc[661, "genres"] == "Animation|Children|Musical"
    assert by_id.loc[1193, "year"] == 1975


@pytest.mark.parametrize("as_zip", [False, True])
def test_csv_layout(tmp_path, as_zip):
    src = write_csv(tmp_path / "ml-latest-small")
    path = zip_dir(src, tmp_path / "ml-latest-small.zip", "ml-latest-small") if as_zip else src
    files = locate(path, tmp_path / "x")
    assert files.layout.name == "ratings.csv"
    ratings, movies = read_ratings(files), read_movies(files)
    assert ratings["rating"].tolist() == [4.0, 3.5, 0.5]
    assert movies.set_index("movie_id").loc[3, "title"] == "Grumpier Old Men, The (1995)"
    assert movies["genres"].tolist() == ["Adventure|Animation|Children", "(no genres listed)"]


def test_genre_and_year_normalization():
    assert canonical_genres(["Comedy", "Children's", "Action"]) == "Action|Children|Comedy"
    assert canonical_genres(["unknown"]) == "(no genres listed)"
    assert year_from_title("Sherlock (2010–2017)") == 2010
    assert year_from_title("Land Before Time III (1995) (V)") == 1995
    assert year_from_title("unknown") is None


def test_missing_layout_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(QualityError, match=r"\[layout\] found ratings.csv but not movies.csv"):
        locate(tmp_path / "d", tmp_path / "x")


# -- rejections: each names the file, the line and the rule ------------------------------------------------------


def _ratings_error(tmp_path: Path, writer, name: str, content: str) -> QualityError:
    src = writer(tmp_path / "ds")
    (src / name).write_text(content)
    with pytest.raises(QualityError) as info:
        read_ratings(locate(src, tmp_path / "x"))
    return info.value


def test_truncated_file(tmp_path):
    err = _ratings_error(tmp_path, write_u_data, "u.data", "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t")
    assert (err.rule, err.line) == ("truncated file", 3)
    assert err.file.endswith("u.data") and "u.data, line 3: [truncated file]" in str(err)


def test_wrong_delimiter(tmp_path):
    err = _ratings_error(tmp_path, write_u_data, "u.data", "1,1,5,874965758\n1,2,3,876893171\n")
    assert (err.rule, err.line) == ("wrong delimiter", 1)
    assert "separated by comma" in str(err)


def test_wrong_delimiter_in_csv_header(tmp_path):
    err = _ratings_error(tmp_path, write_csv, "ratings.csv", "userId;movieId;rating;timestamp\n1;1;4.0;964982703\n")
    assert (err.rule, err.line) == ("wrong delimiter", 1)


def test_extra_field_in_the_middle(tmp_path):
    err = _ratings_error(tmp_path, write_dat, "ratings.dat", "1::1::5::978300760\n1::2::3::978302109::9\n3::1::4::1\n")
    assert (err.rule, err.line) == ("column count", 2)


def test_rating_out_of_range(tmp_path):
    err = _ratings_error(
        tmp_path, write_csv, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,7.5,964981247\n"
    )
    assert (err.rule, err.line, err.column) == ("rating range", 3, "rating")
    assert "7.5 is outside [0.5, 5.0]" in str(err)


def test_non_numeric_id(tmp_path):
    err = _ratings_error(tmp_path, write_u_data, "u.data", "1\t1\t5\t874965758\nbob\t2\t3\t876893171\n")
    assert (err.rule, err.line, err.column) == ("non-numeric id", 2, "user_id")
    assert "'bob' is not an integer" in str(err)


def test_empty_file(tmp_path):
    err = _ratings_error(tmp_path, write_u_data, "u.data", "")
    assert (err.rule, err.line) == ("empty file", 1)


def test_header_only_csv_is_empty(tmp_path):
    err = _ratings_error(tmp_path, write_csv, "ratings.csv", "userId,movieId,rating,timestamp\n")
    assert err.rule == "empty file"


def test_duplicate_pairs(tmp_path):
    err = _ratings_error(tmp_path, write_u_data, "u.data", "1\t1\t5\t874965758\n2\t2\t3\t8768\n1\t1\t2\t876893171\n")
    assert (err.rule, err.line) == ("duplicate (user, movie)", 3)
    assert "user 1 rated movie 1 more than once" in str(err)


def test_truncated_movies_line(tmp_path):
    src = write_dat(tmp_path / "ds")
    (src / "movies.dat").write_text("1193::One Flew (1975)::Drama\n661::Half a line\n")
    with pytest.raises(QualityError) as info:
        read_movies(locate(src, tmp_path / "x"))
    assert (info.value.rule, info.value.line) == ("truncated file", 2)


def test_short_last_line_with_newline_is_truncated(tmp_path):
    err = _ratings_error(tmp_path, write_u_data, "u.data", "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\n")
    assert (err.rule, err.line) == ("truncated file", 3) and "last line has 2 of 4 fields" in str(err)


def test_short_line_in_the_middle(tmp_path):
    err = _ratings_error(tmp_path, write_u_data, "u.data", "1\t1\t5\t874965758\n1\t2\n2\t1\t4\t888550871\n")
    assert (err.rule, err.line) == ("column count", 2)
