"""Entry point of ``rt-supervisor --cluster FILE --node N`` (also ``python -m rt_supervisor``).

Reads the node from the cluster file, binds the node's REST address first (so a port
already in use fails at once, exit 1, with a clear message), then runs the node until
SIGTERM or SIGINT (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence

from rtcommon import env
from rtcommon.cluster import ClusterError, ClusterSpec, cluster_source
from rtcommon.telemetry import setup_telemetry

from .logs import setup_logging
from .node import run_node


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rt-supervisor",
        description="Run one RT node: start and restart its sequencer and archiver, "
        "serve its REST API.",
    )
    parser.add_argument(
        "--cluster",
        required=True,
        metavar="FILE",
        help="path to cluster.json, or env:STREAM in a Kubernetes deployment",
    )
    parser.add_argument(
        "--node",
        type=int,
        metavar="N",
        help="this node's id (default: the ordinal ending the host name, as a StatefulSet's"
        " pod has)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long children get to stop after SIGTERM before SIGKILL (default 5)",
    )
    return parser.parse_args(argv)


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) into its parts."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def host_ordinal() -> int:
    """The ordinal a StatefulSet's pod name ends with (``rt-feed-2``: 2)."""
    name = env.hostname().split(".")[0]
    ordinal = name.rpartition("-")[2]
    if not ordinal.isdigit():
        raise ValueError(f"host name {name!r} ends with no ordinal: give --node")
    return int(ordinal)


def bind(address: str) -> socket.socket:
    host, port = split_address(env.listen_address(address))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = cluster_source(args.cluster)
    try:
        spec = ClusterSpec.from_file(cluster)
        node = spec.node(args.node if args.node is not None else host_ordinal())
        env.settings()  # a malformed setting fails here, plainly
    except (ClusterError, ValueError) as exc:
        print(f"rt-supervisor: {exc}", file=sys.stderr)
        return 1
    log = setup_logging(node.name)
    setup_telemetry("supervisor", node.name)
    try:
        rest_socket = bind(node.rest)
    except (OSError, ValueError) as exc:
        log.error("cannot serve REST on %s: %s", node.rest, exc)
        return 1
    log.info("starting (pid %d, cluster %s)", os.getpid(), cluster)
    return asyncio.run(run_node(cluster, spec, node, rest_socket, grace=args.grace))


if __name__ == "__main__":
    sys.exit(main())
