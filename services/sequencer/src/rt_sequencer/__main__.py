"""Entry point of `rt-sequencer` (also `python -m rt_sequencer`).

A skeleton for now: it says so and exits with status 2.
"""

import sys


def main() -> int:
    print("rt-sequencer: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
