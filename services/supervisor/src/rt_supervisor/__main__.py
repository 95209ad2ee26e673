"""Entry point of `rt-supervisor` (also `python -m rt_supervisor`).

A skeleton for now: it says so and exits with status 2.
"""

import sys


def main() -> int:
    print("rt-supervisor: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
