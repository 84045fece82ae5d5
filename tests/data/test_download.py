"""Downloads: offline error naming the alternatives, checksum verification, cache, loud `auto` fallback.

The "GroupLens" here is a real HTTP server on localhost (or a closed port), never a mocked library.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from mlops.datasets import resolve_source
from mlops.datasets.download import fetch
from mlops.errors import DataError
from mlops.settings import Settings


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/datasets/movielens"  # nothing listens there any more


@pytest.fixture
def http_root(tmp_path):
    """A static file server on a free port; yields (directory served, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make_zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "ml-latest-small/ratings.csv",
            "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
            "1,2,3.0,964982704\n1,3,3.0,964982705\n1,4,3.0,964982706\n1,5,3.0,964982707\n",
        )
        zf.writestr(
            "ml-latest-small/movies.csv",
            "movieId,title,genres\n1,A (1995),Drama\n2,B (1995),Drama\n"
            "3,C (1995),Drama\n4,D (1995),Drama\n5,E (1995),Drama\n",
        )
    return path.read_bytes()


def test_unreachable_download_names_the_alternatives(tmp_path):
    with pytest.raises(DataError) as info:
        fetch("ml-100k", tmp_path, base_url=closed_port_url(), timeout=3)
    message = str(info.value)
    assert "cannot download ml-100k" in message and "unreachable" in message
    assert "DATASET=/data/ml-100k" in message and "DATASET=synthetic" in message
    assert not list(tmp_path.iterdir())  # nothing half-downloaded left in the cache


def test_explicit_dataset_never_falls_back(tmp_path):
    settings = Settings(dataset="ml-1m", data_cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="DATASET=synthetic"):
        resolve_source(settings, tmp_path / "work", base_url=closed_port_url())
    assert not (tmp_path / "work" / "synthetic").exists()


def test_auto_falls_back_to_synthetic_loudly(tmp_path, caplog):
    settings = Settings(dataset="auto", synthetic_ratings=2000, data_cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING):
        source = resolve_source(settings, tmp_path / "work", base_url=closed_port_url())
    assert source.kind == "synthetic"
    assert source.source.startswith("synthetic (fallback from auto: cannot download ml-latest-small")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("FALLING BACK TO THE SYNTHETIC GENERATOR" in w and "NOT MovieLens" in w for w in warnings)
    assert (source.path / "ratings.csv").exists()


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="neither a dataset name"):
        resolve_source(Settings(dataset=str(tmp_path / "nope")), tmp_path)


def test_download_verified_against_published_md5_and_cached(tmp_path, http_root):
    root, url = http_root
    site = root / "datasets" / "movielens"
    site.mkdir(parents=True)
    data = make_zip(site / "ml-latest-small.zip")
    md5 = hashlib.md5(data).hexdigest()
    (site / "ml-latest-small.zip.md5").write_text(f"MD5 (ml-latest-small.zip) = {md5}\n")

    got = fetch("ml-latest-small", tmp_path / "cache", base_url=f"{url}/datasets/movielens")
    assert got.md5 == md5 and got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.md5_verified_against == "published .md5"
    (site / "ml-latest-small.zip").unlink()  # the second call must come from the cache
    again = fetch("ml-latest-small", tmp_path / "cache", base_url=f"{url}/datasets/movielens")
    assert again.sha256 == got.sha256 and again.path.exists()

    settings = Settings(dataset="auto", data_cache_dir=str(tmp_path / "cache"))
    source = resolve_source(settings, tmp_path / "work", base_url=f"{url}/datasets/movielens")
    assert source.kind == "grouplens" and source.details["sha256"] == got.sha256


def test_checksum_mismatch_is_rejected(tmp_path, http_root):
    root, url = http_root
    site = root / "datasets" / "movielens"
    site.mkdir(parents=True)
    make_zip(site / "ml-100k.zip")  # not the real archive: its md5 differs from the known one
    (site / "ml-100k.zip.md5").write_text("0e33842e24a9c977be4e0107933c0723  ml-100k.zip\n")
    with pytest.raises(DataError, match=r"has MD5 .* says 0e33842e24a9c977be4e0107933c0723"):
        fetch("ml-100k", tmp_path / "cache", base_url=f"{url}/datasets/movielens")
    assert not (tmp_path / "cache" / "ml-100k.zip").exists()
