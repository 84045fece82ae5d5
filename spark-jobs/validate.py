"""Entry point of the batch step `validate` (spark-submit or python): logic in `mlops.jobs.validate`."""

from mlops.jobs.runner import run
from mlops.jobs.validate import main

if __name__ == "__main__":
    run(main)
