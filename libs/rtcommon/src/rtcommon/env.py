"""Configuration from the environment: RT's variable names.

| variable                      | meaning                                                    |
|-------------------------------|------------------------------------------------------------|
| ``RT_LOG_PATH``               | parent of publisher and subscriber log folders             |
| ``RT_ROLL_SIZE``              | bytes at which log files roll (publishers and nodes)       |
| ``RT_SINGLE_INGRESS``         | set (non-empty, not "0"): push to one node, fail over      |

``REPLICATOR_EXCHANGE_ARCHIVED`` (subscriber garbage collection) is read by
``rt.Subscriber``; ``RT_TOPIC_PREFIX`` and ``RT_REPLICAS`` (node names in Kubernetes)
arrive with the deployment issue.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .log import DEFAULT_ROLL_SIZE, MAX_FILE_SIZE, MIN_ROLL_SIZE

__all__ = ["hostname", "log_path", "roll_size", "single_ingress"]


def log_path() -> Path:
    """``$RT_LOG_PATH``, or ``~/.rt/logs`` when unset."""
    value = os.environ.get("RT_LOG_PATH")
    return Path(value) if value else Path.home() / ".rt" / "logs"


def roll_size() -> int:
    """``$RT_ROLL_SIZE`` in bytes, or the default (1 GiB); refuses values out of range."""
    value = os.environ.get("RT_ROLL_SIZE")
    if not value:
        return DEFAULT_ROLL_SIZE
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"RT_ROLL_SIZE={value!r} is not a number of bytes") from None
    if not MIN_ROLL_SIZE <= size <= MAX_FILE_SIZE:
        raise ValueError(f"RT_ROLL_SIZE={size} is outside {MIN_ROLL_SIZE}..{MAX_FILE_SIZE}")
    return size


def single_ingress() -> bool:
    return os.environ.get("RT_SINGLE_INGRESS", "") not in ("", "0", "false", "no")


def hostname() -> str:
    return socket.gethostname()
