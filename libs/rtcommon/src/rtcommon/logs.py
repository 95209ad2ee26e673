"""One log format for every RT process, so a cluster's interleaved output reads as one
log::

    2026-12-01T14:30:00.123 INFO node-0 sequencer: node node-0 serving on ...
    2026-12-01T14:30:00.456 WARNING node-2 supervisor: hard reset: Stopping services
    2026-12-01T14:30:01.002 INFO launcher: starting 3 nodes in DATA

time (local, milliseconds), level, who (the node and the part, or the process), message.
With ``RT_LOG_FORMAT=json`` each line is a JSON object instead, for a log collector::

    {"time": "2026-12-01T14:30:00.123", "level": "INFO", "service": "sequencer",
     "node": "node-0", "logger": "rt_sequencer._node", "message": "node node-0 serving ..."}

``RT_LOG_LEVEL`` sets the level (INFO); with ``RT_LOG_DIR`` every record also goes to
``<RT_LOG_DIR>/<part>.log`` (rotated at 10 MiB, three kept): ``rt cluster up`` gives each
node ``DATA/node-<n>/logs``.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from pathlib import Path

__all__ = ["log_formatter", "setup_logging"]

LOG_FILE_BYTES = 10 << 20
LOG_FILES_KEPT = 3
_TIME = "%Y-%m-%dT%H:%M:%S"


class _JSONFormatter(logging.Formatter):
    def __init__(self, who: str) -> None:
        super().__init__(datefmt=_TIME)
        node, _, service = who.rpartition(" ")
        self.service, self.node = service, node

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": f"{self.formatTime(record, _TIME)}.{int(record.msecs):03d}",
            "level": record.levelname,
            "service": self.service,
            "node": self.node,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def log_formatter(who: str) -> logging.Formatter:
    """The formatter of ``who``'s lines (``"node-0 sequencer"``, ``"launcher"``)."""
    if os.environ.get("RT_LOG_FORMAT", "").lower() == "json":
        return _JSONFormatter(who)
    return logging.Formatter(f"%(asctime)s.%(msecs)03d %(levelname)s {who}: %(message)s", _TIME)


def setup_logging(who: str, level: int | str | None = None) -> None:
    """Send every log record of this process to stderr in the one format, as ``who``
    (and to its file under ``RT_LOG_DIR``); ``level`` defaults to ``RT_LOG_LEVEL``."""
    formatter = log_formatter(who)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handlers: list[logging.Handler] = [handler]
    folder = os.environ.get("RT_LOG_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        part = who.rpartition(" ")[2]
        to_file = logging.handlers.RotatingFileHandler(
            Path(folder, f"{part}.log"), maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILES_KEPT
        )
        to_file.setFormatter(formatter)
        handlers.append(to_file)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level if level is not None else os.environ.get("RT_LOG_LEVEL", "INFO").upper())
