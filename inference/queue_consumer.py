"""Inference consumer service: `python inference/queue_consumer.py [--index i] [--metrics-port P]`.

A thin entry point; the service lives in `mlops.consumer`.
"""

import sys

from mlops.consumer.app import main

if __name__ == "__main__":
    sys.exit(main())
