"""Entry point of the batch step `load_to_redis` (spark-submit or python): logic in `mlops.jobs.load_to_redis`."""

from mlops.jobs.load_to_redis import main
from mlops.jobs.runner import run

if __name__ == "__main__":
    run(main)
