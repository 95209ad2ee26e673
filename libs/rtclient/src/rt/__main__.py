"""`python -m rt` is the `rt` command."""

import sys

from rt.cli import main

if __name__ == "__main__":
    sys.exit(main())
