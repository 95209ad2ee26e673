"""Entry point of ``rt-archiver --cluster FILE --node N`` (also ``python -m rt_archiver``).

The retention policy is a later issue: for now the process logs one line saying so and
waits for SIGTERM or SIGINT, then exits 0. A cluster file or node it cannot read is an
error (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from rtcommon.cluster import ClusterError, ClusterSpec
from rtcommon.logs import setup_logging

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rt-archiver",
        description="Run one RT node's archiver (retention is not implemented yet: it idles).",
    )
    parser.add_argument("--cluster", required=True, metavar="FILE", help="path to cluster.json")
    parser.add_argument("--node", required=True, type=int, metavar="N", help="this node's id")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    # Block the stop signals first, so one arriving during start-up waits for sigwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    args = parse_args(argv)
    try:
        node = ClusterSpec.from_file(args.cluster).node(args.node)
    except ClusterError as exc:
        print(f"rt-archiver: {exc}", file=sys.stderr)
        return 1
    setup_logging(f"{node.name} archiver")
    logging.getLogger("rt_archiver").info("retention policy not implemented yet; idle")
    signal.sigwait(_STOP_SIGNALS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
