"""Entry point of the batch step `ingest` (spark-submit or python): logic in `mlops.jobs.ingest`."""

from mlops.jobs.ingest import main
from mlops.jobs.runner import run

if __name__ == "__main__":
    run(main)
