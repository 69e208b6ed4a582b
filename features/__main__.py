"""`python -m features train|embed ...`."""

import sys

from features.cli import main

if __name__ == "__main__":
    sys.exit(main())
