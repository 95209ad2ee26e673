"""Entry point of ``python3 -m rt_sequencer.nodesim`` (see ``_cli``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
