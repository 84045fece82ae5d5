"""Champion/challenger promotion of the version a run trained: `python mlflow/promote_model.py --run-id R`."""

from mlops.jobs.runner import run
from mlops.training.steps import promote_main

if __name__ == "__main__":
    run(promote_main)
