"""Entry point of the batch step `split_dataset` (spark-submit or python): logic in `mlops.jobs.split_dataset`."""

from mlops.jobs.runner import run
from mlops.jobs.split_dataset import main

if __name__ == "__main__":
    run(main)
