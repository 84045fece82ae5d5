"""Entry point of the batch step `feature_engineering` (spark-submit or python).

Logic in `mlops.jobs.feature_engineering`.
"""

from mlops.jobs.feature_engineering import main
from mlops.jobs.runner import run

if __name__ == "__main__":
    run(main)
