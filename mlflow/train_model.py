"""Entry point of the batch step `train` (python): logic in `mlops.jobs.train`."""

from mlops.jobs.runner import run
from mlops.jobs.train import main

if __name__ == "__main__":
    run(main)
