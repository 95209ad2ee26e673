"""This machine, as a local cluster sees it: free ports on loopback, processes in /proc.

Used by the local launcher (``rt cluster up`` checks its ports), the integration test
fixtures and the benchmarks (free base ports, process trees, CPU seconds). Linux only:
processes are read from /proc directly (no psutil).
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

__all__ = [
    "children",
    "cmdline",
    "cpu_seconds",
    "descendants",
    "find_free_base_port",
    "is_gone",
    "port_free",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_handed_out: set[int] = set()
_handed_lock = threading.Lock()


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a TCP server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def find_free_base_port(span: int = 30, rest_offset: int = 1000, info_offset: int = 1100) -> int:
    """A random base B whose ports B..B+span, B+rest_offset..+span and B+info_offset are
    all free (the ports of a local cluster of three nodes with ``--base-port B``, and its
    info-service).

    Drawn below 31700 so that every port stays under Linux's ephemeral range (32768 and
    up), where outgoing connections could take one between this probe and the bind.
    Bases handed out in this process are not handed out again.
    """
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 31700 - info_offset)
        with _handed_lock:
            if any(abs(base - other) <= span for other in _handed_out):
                continue
            ports = [*range(base, base + span + 1)]
            ports += range(base + rest_offset, base + rest_offset + span + 1)
            ports.append(base + info_offset)
            if all(port_free(port) for port in ports):
                _handed_out.add(base)
                return base
    raise RuntimeError("no free base port found in 20000..31700")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """Live (non-zombie) children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and int(stat[1]) == pid and stat[0] != "Z":
                found.append(int(entry))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Live children of ``pid``, their children, and so on."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds ``pid`` has used (0 if it is gone)."""
    stat = _stat(pid)
    return 0.0 if stat is None else (int(stat[11]) + int(stat[12])) / _TICKS
