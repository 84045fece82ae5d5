"""Entry point of the batch step `evaluate_and_promote` (python): logic in `mlops.jobs.evaluate_and_promote`."""

from mlops.jobs.evaluate_and_promote import main
from mlops.jobs.runner import run

if __name__ == "__main__":
    run(main)
