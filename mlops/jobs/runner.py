"""The command-line contract every batch step shares.

Each step takes `--run-id` (outputs go under `runs/{run_id}/`) and the run parameters that the Airflow
DAG can override per run (`mlops.run_params`); unset parameters fall back to the settings. Exit codes tell
the orchestrator
whether a retry can help: 3 for bad data or a bad setting (`DataError`, `SettingsError`: never retried),
1 for anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from mlops.errors import DataError
from mlops.layout import check_run_id
from mlops.run_params import add_arguments, apply, overrides
from mlops.settings import Settings, SettingsError, get_settings

EXIT_DATA_ERROR = 3
EXIT_FAILURE = 1

log = logging.getLogger("mlops.jobs")


def default_run_id() -> str:
    """A run id for manual runs: one per second, sorting by time."""
    return "manual-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def job_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the shared options; a step adds its own on top."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run-id", default=None, help="scopes every output (default: manual-<utc time>)")
    add_arguments(parser)
    return parser


def resolve(args: argparse.Namespace, settings: Settings | None = None) -> tuple[str, Settings]:
    """The run id and the settings with this run's overrides applied."""
    run_id = check_run_id(args.run_id or default_run_id())
    return run_id, apply(settings or get_settings(), overrides(args))


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run a step's `main`, turning failures into the exit codes the DAG relies on."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main(argv)
    except DataError as exc:
        log.error("data error (not retryable): %s", exc)
        sys.exit(EXIT_DATA_ERROR)
    except SettingsError as exc:  # e.g. fractions that leave no train side: a retry cannot fix it either
        log.error("bad setting (not retryable): %s", exc)
        sys.exit(EXIT_DATA_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        log.exception("step failed")
        sys.exit(EXIT_FAILURE)
