"""`python -m infill_engine` is the `infill` command."""

import sys

from infill_engine.cli import main

sys.exit(main())
