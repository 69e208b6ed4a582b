"""`python -m clustering ...`: see clustering/cli.py."""

import sys

from clustering.cli import main

sys.exit(main())
