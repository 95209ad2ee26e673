"""Configuration from the environment, read in one place into a frozen :class:`Settings`.

======================================  =====================  =============================
variable                                setting                meaning
======================================  =====================  =============================
``RT_LOG_PATH``                         ``log_path``           parent of publisher and
                                                               subscriber log folders
                                                               (default ``~/.rt/logs``)
``RT_ROLL_SIZE``                        ``roll_size``          bytes at which log files roll,
                                                               publishers and nodes (1 GiB)
``RT_SINGLE_INGRESS``                   ``single_ingress``     set (not "", "0", "false",
                                                               "no"): push to one node and
                                                               fail over
``REPLICATOR_EXCHANGE_ARCHIVED``        ``archived_exchange``  subscriber GC: unset follows
                                                               the cluster, "0" prunes itself,
                                                               "1" is the lead subscriber
``RT_RAFT_KEEP_ENTRIES``                ``raft_keep_entries``  Raft entries a node keeps
                                                               after a snapshot (tests lower
                                                               it; default 20,000)
``RT_RESET_API``                        ``reset_api``          "0", "false", "no" or "off"
                                                               disable a supervisor's
                                                               /hardReset and /softReset
``RT_RESET_TOKEN``                      ``reset_token``        when set, the reset API and
                                                               the supervisors' Control calls
                                                               require ``Authorization:
                                                               Bearer <token>``
======================================  =====================  =============================

Nothing reads the environment at import time: :func:`settings` reads it when called,
so callers build their settings once, when they start. ``RT_TOPIC_PREFIX`` and
``RT_REPLICAS`` (node names in Kubernetes) arrive with the deployment issue.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .log import DEFAULT_ROLL_SIZE, MAX_FILE_SIZE, MIN_ROLL_SIZE

__all__ = ["Settings", "hostname", "settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    log_path: Path
    roll_size: int = DEFAULT_ROLL_SIZE
    single_ingress: bool = False
    archived_exchange: str | None = None
    raft_keep_entries: int | None = None
    log_path_set: bool = False  #: RT_LOG_PATH was given (``log_path`` is not the default)
    reset_api: bool = True
    reset_token: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``environ``; a value out of range raises ValueError naming it."""
        log_path = environ.get("RT_LOG_PATH")
        return cls(
            log_path=Path(log_path) if log_path else Path.home() / ".rt" / "logs",
            roll_size=_roll_size(environ.get("RT_ROLL_SIZE")),
            single_ingress=_flag(environ.get("RT_SINGLE_INGRESS"), default=False),
            archived_exchange=environ.get("REPLICATOR_EXCHANGE_ARCHIVED"),
            raft_keep_entries=_whole_number("RT_RAFT_KEEP_ENTRIES", environ),
            log_path_set=bool(log_path),
            reset_api=_flag(environ.get("RT_RESET_API"), default=True),
            reset_token=environ.get("RT_RESET_TOKEN", ""),
        )


def settings() -> Settings:
    """The settings of this process's environment, now."""
    return Settings.from_env(os.environ)


def hostname() -> str:
    return socket.gethostname()


def _flag(value: str | None, *, default: bool) -> bool:
    """A yes/no variable: unset or "" is ``default``; "0", "false", "no", "off" are no."""
    if not value:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _roll_size(value: str | None) -> int:
    if not value:
        return DEFAULT_ROLL_SIZE
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"RT_ROLL_SIZE={value!r} is not a number of bytes") from None
    if not MIN_ROLL_SIZE <= size <= MAX_FILE_SIZE:
        raise ValueError(f"RT_ROLL_SIZE={size} is outside {MIN_ROLL_SIZE}..{MAX_FILE_SIZE}")
    return size


def _whole_number(name: str, environ: Mapping[str, str]) -> int | None:
    value = environ.get(name)
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number") from None
    if number < 0:
        raise ValueError(f"{name}={number} is negative")
    return number
