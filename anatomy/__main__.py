"""Entry point: `python -m anatomy <experiment> --help`."""

import sys

from .cli import main

sys.exit(main())
