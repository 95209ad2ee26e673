"""Logging of the supervisor: one line per event on stderr, each naming the node."""

from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging"]


def setup_logging(node_name: str, level: int = logging.INFO) -> logging.Logger:
    """Send every log record to stderr as ``time LEVEL <node> supervisor: message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {node_name} supervisor: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's start/stop chatter and per-request access lines are noise here.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    return logging.getLogger("rt_supervisor")
