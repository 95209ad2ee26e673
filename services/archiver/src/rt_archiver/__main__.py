"""Entry point of ``rt-archiver --cluster FILE --node N`` (also ``python -m rt_archiver``).

The retention policy comes from the environment (``RT_RETENTION_DURATION``,
``RT_MAX_LOG_SIZE``, ``RT_MAX_DISK_USAGE_PERCENT``; see ``rtcommon.env``), each
overridden by its flag. The process checks the merged log every ``--interval`` seconds
until SIGTERM or SIGINT, then exits 0. A cluster file, node or setting it cannot use is
an error (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from rtcommon import env
from rtcommon.cluster import ClusterError, ClusterSpec
from rtcommon.logs import setup_logging
from rtcommon.telemetry import setup_telemetry

from ._archiver import Archiver
from ._policy import RetentionPolicy


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rt-archiver",
        description="Run one RT node's archiver: the retention policy of the merged log.",
    )
    parser.add_argument("--cluster", required=True, metavar="FILE", help="path to cluster.json")
    parser.add_argument("--node", required=True, type=int, metavar="N", help="this node's id")
    parser.add_argument(
        "--retention-duration",
        type=float,
        metavar="MINUTES",
        help="collect rolled files whose newest message is older (RT_RETENTION_DURATION;"
        " default 10080)",
    )
    parser.add_argument(
        "--max-log-size",
        metavar="SIZE",
        help="keep the merged log at most this big, e.g. 5Gi (RT_MAX_LOG_SIZE; default 5Gi)",
    )
    parser.add_argument(
        "--max-disk-usage-percent",
        type=float,
        metavar="PERCENT",
        help="collect while the volume is fuller (RT_MAX_DISK_USAGE_PERCENT; default 90)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="check this often (RT_ARCHIVER_INTERVAL; default 10)",
    )
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> env.Settings:
    """The environment's settings with the flags given put over them; ValueError if one
    is invalid."""
    flags = {
        "RT_RETENTION_DURATION": args.retention_duration,
        "RT_MAX_LOG_SIZE": args.max_log_size,
        "RT_MAX_DISK_USAGE_PERCENT": args.max_disk_usage_percent,
        "RT_ARCHIVER_INTERVAL": args.interval,
    }
    given = {name: str(value) for name, value in flags.items() if value is not None}
    return env.Settings.from_env({**os.environ, **given})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = ClusterSpec.from_file(args.cluster)
        node = spec.node(args.node)
        settings = settings_of(args)
    except (ClusterError, ValueError) as exc:
        print(f"rt-archiver: {exc}", file=sys.stderr)
        return 1
    setup_logging(f"{node.name} archiver")
    setup_telemetry("archiver", node.name)
    policy = RetentionPolicy.from_settings(settings)
    archiver = Archiver(spec, args.node, policy, settings.archiver_interval)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(archiver.run())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
