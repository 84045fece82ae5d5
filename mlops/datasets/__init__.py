"""Where a run's ratings come from: `DATASET` resolved to files on disk, with their provenance.

`DATASET` is a GroupLens variant (downloaded, verified, cached), `synthetic` (generated), a path to a
MovieLens directory or zip, or `auto`: ml-latest-small when GroupLens answers, else synthetic, announced
loudly in the log and recorded as `synthetic (fallback from auto: <reason>)` in the manifests, which
training copies into the model's lineage. A dataset named explicitly never falls back.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops.datasets import synthetic
from mlops.datasets.download import GROUPLENS_BASE_URL, VARIANTS, fetch
from mlops.errors import DataError
from mlops.settings import Settings

log = logging.getLogger(__name__)

AUTO_VARIANT = "ml-latest-small"


@dataclass(frozen=True)
class Source:
    """A dataset on local disk (a directory or zip) and where it came from."""

    path: Path
    kind: str  # "grouplens", "local", "synthetic"
    name: str  # variant name, "synthetic", or the path given
    source: str  # human-readable provenance, copied into lineage
    dataset_id: str  # what row counts are compared against across runs ("same dataset")
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the manifests and the model's lineage."""
        return {**asdict(self), "path": str(self.path)}


def resolve_source(settings: Settings, workdir: Path, base_url: str = GROUPLENS_BASE_URL) -> Source:
    """Turn `DATASET` into files on disk (downloading or generating them into `workdir` / the cache)."""
    dataset = settings.dataset
    cache_dir = settings.path("data_cache_dir")
    if dataset == "auto":
        try:
            return _grouplens(AUTO_VARIANT, cache_dir, base_url)
        except DataError as exc:
            reason = str(exc).split(". To run without GroupLens")[0]
            banner = "!" * 100
            log.warning(
                "\n%s\n!! DATASET=auto: %s\n!! FALLING BACK TO THE SYNTHETIC GENERATOR (%d ratings): results are NOT "
                "MovieLens results.\n!! Set DATASET=ml-latest-small (or a local path) to insist on real data.\n%s",
                banner, reason, settings.synthetic_ratings, banner,
            )  # fmt: skip
            return _synthetic(settings, workdir, f"synthetic (fallback from auto: {reason})")
    if dataset == "synthetic":
        return _synthetic(settings, workdir, "synthetic")
    if dataset in VARIANTS:
        return _grouplens(dataset, cache_dir, base_url)
    path = Path(dataset).expanduser()
    if not path.exists():
        names = ", ".join(["auto", *VARIANTS, "synthetic"])
        raise DataError(f"DATASET={dataset!r} is neither a dataset name ({names}) nor an existing directory or zip")
    path = path.resolve()
    checksum = file_sha256(path) if path.is_file() else None
    return Source(path, "local", str(path), f"local: {path}", f"local:{path}", {"sha256": checksum})


def _grouplens(name: str, cache_dir: Path, base_url: str) -> Source:
    download = fetch(name, cache_dir, base_url)
    return Source(download.path, "grouplens", name, f"{name} (GroupLens {download.url})", name, download.as_dict())


def _synthetic(settings: Settings, workdir: Path, source: str) -> Source:
    out = workdir / "synthetic"
    counts = synthetic.generate(settings.synthetic_ratings, settings.seed, out)
    details = {"seed": settings.seed, "requested_ratings": settings.synthetic_ratings, **counts}
    return Source(out, "synthetic", "synthetic", source,
                  f"synthetic:{settings.synthetic_ratings}:{settings.seed}", details)  # fmt: skip


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MB chunks: the checksum recorded in manifests for lineage."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
