"""Step `validate`: the quality gate over the run's normalized tables.

On success it records the row counts as the last good ones for this dataset (`pointers/last_good_counts.json`),
which the next run of the same dataset is compared against; on failure the pointer is left alone, the JSON
report says why, and the step exits with the data-error code so nothing downstream runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mlops.jobs.runner import job_parser, resolve, run
from mlops.layout import LAST_GOOD_COUNTS, normalized_key, quality_report_key
from mlops.object_store import ObjectStore
from mlops.quality import QualityError, QualityReport, check_tables
from mlops.settings import Settings
from mlops.spark_io import read_manifest, read_pandas

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The step's command line: the shared options plus `--accept-count-change`; returns the report."""
    parser = job_parser("Quality gate over the normalized ratings and movies of a run")
    parser.add_argument(
        "--accept-count-change",
        action="store_true",
        help="do not compare row counts with the last good run (a deliberate change of data)",
    )
    args = parser.parse_args(argv)
    run_id, settings = resolve(args, settings)
    return validate(run_id, settings, compare_counts=not args.accept_count_change)


def validate(run_id: str, settings: Settings, compare_counts: bool = True) -> dict[str, Any]:
    """The quality gate; on success the counts become this dataset's last good ones. Returns the report."""
    started = time.monotonic()
    store = ObjectStore.from_settings(settings)
    manifest = read_manifest(normalized_key(run_id, "ratings"), settings, store)
    dataset_id = manifest.get("dataset_id", manifest.get("source", "unknown"))
    ratings = read_pandas(normalized_key(run_id, "ratings"), settings, store, nullable_ints=True)
    movies = read_pandas(normalized_key(run_id, "movies"), settings, store, nullable_ints=True)
    log.info("validate %s: %d ratings, %d movies of %s", run_id, len(ratings), len(movies), dataset_id)

    pointer = store.get_json(LAST_GOOD_COUNTS) if store.exists(LAST_GOOD_COUNTS) else {}
    previous = pointer.get(dataset_id) if compare_counts else None
    if previous and previous.get("run_id") == run_id:
        previous = None  # a re-run of the same run is not a change
    report = QualityReport(step="validate", dataset_id=dataset_id)
    report.stats["source"] = manifest.get("source")
    try:
        counts = check_tables(ratings, movies, report, previous)
    except QualityError as exc:
        report.fail(exc)
        store.put_json(quality_report_key(run_id, "validate"), report.as_dict())
        log.error("validate %s: FAILED %s", run_id, exc)
        raise
    store.put_json(quality_report_key(run_id, "validate"), report.as_dict())
    pointer[dataset_id] = {**counts, "run_id": run_id, "updated_at": datetime.now(UTC).isoformat()}
    store.put_json(LAST_GOOD_COUNTS, pointer)
    log.info("validate %s: passed %d checks in %.1fs", run_id, len(report.checks), time.monotonic() - started)
    return report.as_dict()


if __name__ == "__main__":
    run(main)
