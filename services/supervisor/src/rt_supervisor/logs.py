"""Logging of the supervisor: the one RT format (``rtcommon.logs``), naming the node."""

from __future__ import annotations

import logging

from rtcommon import logs

__all__ = ["setup_logging"]


def setup_logging(node_name: str, level: int | None = None) -> logging.Logger:
    """Send every log record to stderr as ``time LEVEL <node> supervisor: message``."""
    logs.setup_logging(f"{node_name} supervisor", level)
    # uvicorn's start/stop chatter and per-request access lines are noise here.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    return logging.getLogger("rt_supervisor")
