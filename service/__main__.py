"""`python -m service`: the serving commands (serve, classify, detect-speech, models, health)."""

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main())
