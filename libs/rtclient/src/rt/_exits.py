"""The exit status of every ``rt`` command, in one table (``rt --help`` shows it).

====  ================================================================
code  meaning
====  ================================================================
0     done
1     failed (a node or the cluster did not do what was asked)
2     usage: bad arguments, or no readable cluster description
130   interrupted (Ctrl-C)
====  ================================================================
"""

from __future__ import annotations

import sys

from rtcommon.cluster import ClusterError, ClusterSpec

__all__ = ["EXIT_CODES_HELP", "FAILED", "INTERRUPTED", "OK", "USAGE", "read_cluster"]

OK = 0
FAILED = 1
USAGE = 2
INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit status: 0 done; 1 failed; 2 usage (bad arguments, or no readable cluster"
    " description); 130 interrupted (Ctrl-C)"
)


def read_cluster(path: str, command: str) -> ClusterSpec | None:
    """The cluster described at ``path``; None, said on stderr as ``rt <command>: ...``, when
    there is no readable description (the caller exits with USAGE)."""
    try:
        return ClusterSpec.from_file(path)
    except ClusterError as exc:
        print(f"rt {command}: {exc}", file=sys.stderr)
        return None
