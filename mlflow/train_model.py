"""Train, evaluate and register the recommender for one pipeline run: `python mlflow/train_model.py --run-id R`."""

from mlops.jobs.runner import run
from mlops.training.steps import train_main

if __name__ == "__main__":
    run(train_main)
