"""End-to-end verification of the streaming inference (`./run.sh verify`); logic in `mlops.consumer.verify`."""

import sys

from mlops.consumer.verify import main

if __name__ == "__main__":
    sys.exit(main())
