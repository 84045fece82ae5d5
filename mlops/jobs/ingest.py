"""Step `ingest`: `DATASET` -> raw files + manifest, and the normalized `ratings` / `movies` tables.

Order matters for "nothing downstream is overwritten": the files are parsed (the first half of the
quality gate) before anything normalized is written, and each output is committed by its manifest last.
Outputs are scoped by the run id, so a re-run of the same run replaces only its own outputs.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from mlops.datasets import Source, file_sha256, resolve_source
from mlops.datasets.download import GROUPLENS_BASE_URL
from mlops.datasets.layouts import LocatedFiles, locate, read_movies, read_ratings
from mlops.jobs.runner import job_parser, resolve, run
from mlops.layout import manifest_key, normalized_key, quality_report_key, raw_prefix
from mlops.object_store import ObjectStore
from mlops.progress import stage
from mlops.quality import QualityError, QualityReport
from mlops.settings import Settings
from mlops.spark_io import write_table

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The step's command line: the shared options plus `--grouplens-url`; returns the manifests."""
    parser = job_parser("Ingest DATASET: raw files and manifest, normalized ratings and movies")
    parser.add_argument("--grouplens-url", default=GROUPLENS_BASE_URL, help="base URL of the MovieLens archives")
    args = parser.parse_args(argv)
    run_id, settings = resolve(args, settings)
    return ingest(run_id, settings, args.grouplens_url)


def ingest(run_id: str, settings: Settings, base_url: str = GROUPLENS_BASE_URL) -> dict[str, Any]:
    """Parse the dataset (quality report first), then store raw files and normalized tables; their manifests."""
    started = time.monotonic()
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    workdir = settings.path("local_dir") / "data" / "ingest" / run_id
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        source = resolve_source(settings, workdir, base_url)
        log.info("ingest %s: dataset %s from %s", run_id, source.name, source.path)
        report = QualityReport(step="ingest", dataset_id=source.dataset_id)
        try:
            with stage("ingest", f"parse {source.name}") as progress:
                files = locate(source.path, workdir / "extracted")
                ratings = read_ratings(files)
                movies = read_movies(files)
                progress.rows, progress.note = len(ratings), f"{len(movies):,} movies"
        except QualityError as exc:
            report.fail(exc)
            store.put_json(quality_report_key(run_id, "ingest"), report.as_dict())
            raise
        report.ok("parse", layout=files.layout.name, ratings=len(ratings), movies=len(movies))
        store.put_json(quality_report_key(run_id, "ingest"), report.as_dict())
        log.info("ingest %s: parsed %d ratings, %d movies (%s layout) in %.1fs", run_id, len(ratings), len(movies),
                 files.layout.name, time.monotonic() - started)  # fmt: skip

        raw = _store_raw(run_id, source, files, {"ratings": len(ratings), "movies": len(movies)}, store)
        common = {"run_id": run_id, "inputs": [raw_prefix(run_id)], "source": source.source,
                  "dataset": source.name, "dataset_id": source.dataset_id}  # fmt: skip
        manifests = {
            "raw": raw,
            "ratings": write_table(pa.Table.from_pandas(ratings, preserve_index=False),
                                   normalized_key(run_id, "ratings"), settings, common, store=store),
            "movies": write_table(pa.Table.from_pandas(movies, preserve_index=False),
                                  normalized_key(run_id, "movies"), settings, common, store=store),
        }  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("ingest %s: done in %.1fs (%s)", run_id, time.monotonic() - started, source.source)
    return manifests


def _store_raw(
    run_id: str, source: Source, files: LocatedFiles, counts: dict[str, int], store: ObjectStore
) -> dict[str, Any]:
    """Upload the files exactly as read, then their manifest (source, checksums, row counts)."""
    prefix = raw_prefix(run_id)
    entries = {}
    for role, path in (("ratings", files.ratings), ("movies", files.movies)):
        store.put_file(f"{prefix}/{path.name}", path)
        entries[role] = {
            "file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path), "rows": counts[role]
        }  # fmt: skip
    manifest = {
        "run_id": run_id,
        "source": source.source,
        "dataset": source.name,
        "dataset_id": source.dataset_id,
        "kind": source.kind,
        "layout": files.layout.name,
        "origin": source.details,
        "files": entries,
        "row_counts": counts,
        "created_at": datetime.now(UTC).isoformat(),
    }
    store.put_json(manifest_key(prefix), manifest)
    return manifest


if __name__ == "__main__":
    run(main)
