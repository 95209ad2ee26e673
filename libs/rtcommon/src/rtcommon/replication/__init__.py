"""rtcommon.replication: ships a publisher's log directory to the nodes of a cluster.

What it owns: the :class:`Replicator` (``_replicator``: quorum tracking and the
thread-safe calls other threads use, on the process's background loop) and the push
links (``_link``: one push stream to a node, its sessions, reads and retries). Used by
``rt.Publisher`` in-process and by ``rt-publisher-agent`` for a directory another
process writes.
"""

from ._link import MAX_MESSAGE_BYTES, Connect, plain_channel
from ._replicator import DEFAULT_DRAIN_TIMEOUT, DEFAULT_REPLY_TIMEOUT, Replicator

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_REPLY_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "Connect",
    "Replicator",
    "plain_channel",
]
