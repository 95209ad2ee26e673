"""Entry point of ``rt-publisher-agent`` (also ``python -m rt_publisher_agent``)."""

import sys

from ._agent import main

if __name__ == "__main__":
    sys.exit(main())
