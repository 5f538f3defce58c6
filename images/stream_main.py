"""spark-submit entry point baked into the Spark image: the `quantcore` CLI with the
SparkApplication's arguments (the operator passes `stream ...`).

The SparkApplication's mainApplicationFile points here (local:///opt/quantcore/stream_main.py).
"""

import sys

from quantcore.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
