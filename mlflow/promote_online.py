"""Entry point of the task `promote_online` (python): the online champion/challenger decision, as `./run.sh promote`.

Logic in `mlops.online_promotion`; exit 0 whether or not it promotes, 1 when it could not decide (retried)."""

import sys

from mlops.online_promotion import main

if __name__ == "__main__":
    sys.exit(main())
