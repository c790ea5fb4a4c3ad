"""`python -m convserve` runs the convserve CLI."""

import sys

from convserve.cli import main

sys.exit(main())
