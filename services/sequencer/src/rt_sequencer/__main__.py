"""Entry point of ``rt-sequencer --cluster FILE --node N`` (also ``python -m rt_sequencer``)."""

from __future__ import annotations

import argparse
import logging
import resource
import sys

from rtcommon.cluster import ClusterError, ClusterSpec
from rtcommon.errors import RTError
from rtcommon.logs import setup_logging
from rtcommon.telemetry import setup_telemetry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rt-sequencer", description=__doc__)
    parser.add_argument("--cluster", required=True, help="the cluster.json of the cluster")
    parser.add_argument("--node", type=int, required=True, help="this node's id (0, 1, 2)")
    args = parser.parse_args(argv)
    try:
        spec = ClusterSpec.from_file(args.cluster)
        name = spec.node(args.node).name
    except ClusterError as exc:
        print(f"rt-sequencer: {exc}", file=sys.stderr)
        return 1
    setup_logging(f"{name} sequencer")
    setup_telemetry("sequencer", name)
    _raise_open_file_limit()
    from ._node import run_node

    try:
        run_node(spec, args.node)
    except RTError as exc:  # a condition it cannot start in, said plainly
        logging.getLogger("rt_sequencer").error("stopped: %s", exc)
        return 1
    return 0


def _raise_open_file_limit() -> None:
    """Take the hard limit on open files as the soft one: each input stream keeps files
    open (RT_MAX_STREAMS of them, 1000 by default), and a distribution's soft limit of
    1024 would run a busy node out of them (EMFILE) long before its streams run out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            logging.getLogger("rt_sequencer").warning(
                "open files stay limited to %d: %s", soft, exc
            )


if __name__ == "__main__":
    sys.exit(main())
