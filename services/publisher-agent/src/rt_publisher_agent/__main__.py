"""Entry point of `rt-publisher-agent` (also `python -m rt_publisher_agent`).

A skeleton for now: it says so and exits with status 2.
"""

import sys


def main() -> int:
    print("rt-publisher-agent: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
