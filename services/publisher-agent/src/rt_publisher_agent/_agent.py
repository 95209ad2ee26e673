"""The ``rt-publisher-agent`` command, in one of two modes, until SIGTERM or SIGINT:

- ``rt-publisher-agent --cluster FILE --log-dir DIR [--stream NAME]`` replicates a log
  directory another process writes, waking on changes to it (inotify, or polling);
- ``rt-publisher-agent --cluster FILE --listen HOST:PORT [--log-root DIR]`` is a sidecar
  serving the Publish API (``_publish``): clients in any language stream messages to it,
  and it keeps one local log per topic under ``DIR`` and replicates them.

Either way it then sends what is left to the nodes still connected and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import grpc

from rt import Cluster
from rtcommon.cluster import ClusterError, ClusterSpec
from rtcommon.logs import setup_logging
from rtcommon.replication import DEFAULT_DRAIN_TIMEOUT, Replicator
from rtcommon.streams import StreamNameError, publishes_into
from rtcommon.tls import TLSError
from rtproto.v1 import publisher_pb2_grpc

from ._publish import MAX_BATCH_BYTES, PublishService

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rt-publisher-agent",
        description="Replicate one publisher log directory to the nodes of an RT cluster,"
        " until SIGTERM.",
    )
    parser.add_argument("--cluster", required=True, metavar="FILE", help="path to cluster.json")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--log-dir", metavar="DIR", help="replicate this log directory")
    mode.add_argument(
        "--listen", metavar="HOST:PORT", help="serve rtproto.v1.Publisher/Publish here"
    )
    parser.add_argument(
        "--log-root",
        metavar="DIR",
        help="with --listen: parent of the per-topic logs (default: the cluster's folder"
        " under $RT_LOG_PATH)",
    )
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
    parser.add_argument("--log-level", help="logging level (default $RT_LOG_LEVEL, else INFO)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("publisher-agent", args.log_level.upper() if args.log_level else None)
    if args.listen:
        return serve(args)
    try:
        spec = ClusterSpec.from_file(args.cluster)
        cluster = Cluster(spec)  # how it reaches the nodes: with this host's pair, if asked
        replicator = Replicator(
            args.log_dir,
            args.stream,
            spec,
            topic=args.topic,
            single_ingress=args.single_ingress,
            watch=True,
            connect=cluster.connect,
        )
        certified = cluster.certified_publisher(None)
        if certified is not None and not publishes_into(
            certified, replicator.stream, replicator.topic
        ):
            raise ClusterError(
                f"this host's publisher certificate is for {certified!r}: the nodes take"
                f" no stream {replicator.stream!r} of topic {replicator.topic!r} from it"
                f" (its streams are {certified}.<topic>; --topic names the topic)"
            )
    except (ClusterError, StreamNameError, TLSError, OSError) as exc:
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


def serve(args: argparse.Namespace) -> int:
    """The sidecar: the Publish API on ``args.listen`` until SIGTERM or SIGINT."""
    from rt import Cluster

    try:
        cluster = Cluster.from_file(args.cluster)
    except (ClusterError, OSError) as exc:
        print(f"rt-publisher-agent: {exc}", file=sys.stderr)
        return USAGE_ERROR
    service = PublishService(cluster, Path(args.log_root) if args.log_root else None)
    try:
        return asyncio.run(_serve(service, args.listen))
    except OSError as exc:
        print(f"rt-publisher-agent: {exc}", file=sys.stderr)
        return 1
    finally:
        service.close(args.drain_timeout)


async def _serve(service: PublishService, address: str) -> int:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_BATCH_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    publisher_pb2_grpc.add_PublisherServicer_to_server(service, server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    logging.getLogger("rt_publisher_agent").info("serving Publish on %s", address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)
    return 0
