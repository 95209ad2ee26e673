"""One log line format for every RT process, so a cluster's interleaved output reads as
one log::

    2026-12-01T14:30:00.123 INFO node-0 sequencer: node node-0 serving on ...
    2026-12-01T14:30:00.456 WARNING node-2 supervisor: hard reset: Stopping services
    2026-12-01T14:30:01.002 INFO launcher: starting 3 nodes in DATA

time (local, milliseconds), level, who (the node and the part, or the process), message.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["log_formatter", "setup_logging"]


def log_formatter(who: str) -> logging.Formatter:
    return logging.Formatter(
        f"%(asctime)s.%(msecs)03d %(levelname)s {who}: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    )


def setup_logging(who: str, level: int | str = logging.INFO) -> None:
    """Send every log record of this process to stderr in the one format, as ``who``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(who))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
