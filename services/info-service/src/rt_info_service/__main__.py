"""Entry point of `rt-info-service` (also `python -m rt_info_service`).

A skeleton for now: it says so and exits with status 2.
"""

import sys


def main() -> int:
    print("rt-info-service: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
