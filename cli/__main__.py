"""`python -m cli ...` runs the `strata` command."""

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main())
