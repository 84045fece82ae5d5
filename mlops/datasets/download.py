"""The official MovieLens variants: download from GroupLens, verify, cache.

GroupLens publishes `<name>.zip.md5` next to each archive; it is fetched and checked on every download,
and for the archives whose content never changes the MD5 is also known here, so a tampered mirror cannot
pass by serving a matching .md5 file. The SHA-256 of what was downloaded is recorded for lineage. Archives
are cached under `DATA_CACHE_DIR` (with a sidecar of their verified checksums) and not fetched again.
An unreachable server is a `DataError` naming the two ways to run offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from mlops.errors import DataError

log = logging.getLogger(__name__)

GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Variant:
    """A GroupLens archive and the MD5 it must have, when that never changes."""

    name: str
    md5: str | None  # None: the archive is re-published from time to time; trust the .md5 next to it
    ratings: str  # approximate size, for messages


VARIANTS = {
    v.name: v
    for v in (
        Variant("ml-latest-small", None, "100k"),
        Variant("ml-100k", "0e33842e24a9c977be4e0107933c0723", "100k"),
        Variant("ml-1m", "c4d9eecfca2ab87c1945afe126590906", "1M"),
        Variant("ml-25m", "6b51fb2759a8657d3bfcbfc42b592ada", "25M"),
        Variant("ml-32m", None, "32M"),
    )
}


@dataclass(frozen=True)
class Download:
    """A verified archive in the cache."""

    path: Path
    url: str
    md5: str
    sha256: str
    md5_verified_against: str  # "published .md5 and known checksum", "published .md5", "known checksum"

    def as_dict(self) -> dict[str, str]:
        """JSON-ready: the sidecar in the cache and the lineage in the manifests."""
        return {k: str(v) for k, v in asdict(self).items()}


def offline_error(name: str, url: str, reason: str) -> DataError:
    """The error for an unreachable GroupLens, naming the two ways to run without it."""
    return DataError(
        f"cannot download {name} from {url}: {reason}. To run without GroupLens, set DATASET to a local copy "
        f"(a directory or .zip in any MovieLens layout, e.g. DATASET=/data/{name}) or to DATASET=synthetic"
    )


def fetch(name: str, cache_dir: Path, base_url: str = GROUPLENS_BASE_URL, timeout: float = 20.0) -> Download:
    """The verified archive of variant `name`, from the cache or downloaded now."""
    variant = VARIANTS[name]
    url = f"{base_url.rstrip('/')}/{name}.zip"
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{name}.zip"
    sidecar = cache_dir / f"{name}.zip.verified.json"
    if path.exists() and sidecar.exists():
        info = json.loads(sidecar.read_text())
        if info.get("size") == path.stat().st_size:
            log.info("using cached %s (%s, sha256 %s)", name, path, info["sha256"])
            return Download(path, info["url"], info["md5"], info["sha256"], info["md5_verified_against"])

    published = _published_md5(name, url, timeout)
    part = path.with_suffix(".zip.part")
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or 0)
            done, next_log = 0, 0.1
            with part.open("wb") as out:
                for chunk in response.iter_content(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    sha256.update(chunk)
                    done += len(chunk)
                    if total and done / total >= next_log:
                        log.info("downloading %s: %.0f%% of %.1f MB", name, 100 * done / total, total / 1e6)
                        next_log += 0.1
    except requests.RequestException as exc:
        part.unlink(missing_ok=True)
        raise offline_error(name, url, _reason(exc)) from None

    digest = md5.hexdigest()
    for expected, source in ((published, f"{url}.md5"), (variant.md5, "the checksum known for this release")):
        if expected and digest != expected:
            part.unlink(missing_ok=True)
            raise DataError(f"{name}: downloaded archive has MD5 {digest}, but {source} says {expected}; not using it")
    checked = " and ".join(s for s, e in (("published .md5", published), ("known checksum", variant.md5)) if e)
    if not checked:
        raise DataError(f"{name}: no checksum to verify the download against ({url}.md5 unreachable)")
    part.rename(path)
    result = Download(path, url, digest, sha256.hexdigest(), checked)
    sidecar.write_text(json.dumps({**result.as_dict(), "size": path.stat().st_size}, indent=2))
    log.info("downloaded %s: %.1f MB, md5 %s verified against %s", name, path.stat().st_size / 1e6, digest, checked)
    return result


def _published_md5(name: str, url: str, timeout: float) -> str | None:
    """The MD5 GroupLens publishes next to the archive; None if that file alone is unavailable."""
    try:
        response = requests.get(f"{url}.md5", timeout=timeout)
    except requests.RequestException as exc:
        raise offline_error(name, url, _reason(exc)) from None
    if response.status_code != 200:
        log.warning("%s.md5: HTTP %d; relying on the known checksum", url, response.status_code)
        return None
    match = re.search(r"\b([0-9a-f]{32})\b", response.text.lower())
    return match.group(1) if match else None


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectionError):
        return "the server is unreachable (offline?)"
    if isinstance(exc, requests.Timeout):
        return "the download timed out"
    return str(exc)
