"""The ``rt-publisher-agent`` command: replicate a log directory another process writes.

``rt-publisher-agent --cluster FILE --log-dir DIR [--stream NAME]`` runs until SIGTERM or
SIGINT, waking on changes to the directory (inotify, or polling), then sends what is
left to the nodes still connected and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from rtcommon.cluster import ClusterError, ClusterSpec
from rtcommon.logs import setup_logging
from rtcommon.replication import DEFAULT_DRAIN_TIMEOUT, Replicator
from rtcommon.streams import StreamNameError

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rt-publisher-agent",
        description="Replicate one publisher log directory to the nodes of an RT cluster,"
        " until SIGTERM.",
    )
    parser.add_argument("--cluster", required=True, metavar="FILE", help="path to cluster.json")
    parser.add_argument("--log-dir", required=True, metavar="DIR", help="the log directory")
    parser.add_argument(
        "--stream", metavar="NAME", help="stream name on the nodes (default: the directory name)"
    )
    parser.add_argument(
        "--topic",
        metavar="T",
        help="the topic the log publishes on (default: the directory's .topic file, else the"
        " stream name); deduplication of a .dedup topic is per topic",
    )
    parser.add_argument(
        "--single-ingress",
        action="store_true",
        default=None,
        help="push to one node and fail over (default: $RT_SINGLE_INGRESS)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="S",
        help="on SIGTERM, seconds to go on sending what is left (default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("publisher-agent", args.log_level.upper())
    try:
        spec = ClusterSpec.from_file(args.cluster)
        replicator = Replicator(
            args.log_dir,
            args.stream,
            spec,
            topic=args.topic,
            single_ingress=args.single_ingress,
            watch=True,
        )
    except (ClusterError, StreamNameError, OSError) as exc:
        print(f"rt-publisher-agent: {exc}", file=sys.stderr)
        return USAGE_ERROR
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    replicator.start()
    logging.getLogger("rt_publisher_agent").info(
        "replicating %s as stream %s on topic %s to %d node(s)",
        args.log_dir,
        replicator.stream,
        replicator.topic,
        len(spec.nodes),
    )
    while not stop.wait(1.0):
        pass
    replicator.stop(args.drain_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
