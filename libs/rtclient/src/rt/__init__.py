"""rt: RT's user API.

``rt.Cluster`` names the nodes; ``rt.Publisher`` writes a local log and
replicates it to the cluster; ``rt.Subscriber`` replicates the merged log and
delivers it from a local copy; ``rt.prune`` truncates a local copy. The ``rt``
command line lives in ``rt.cli``.

Every error raised on purpose derives from :class:`rt.RTError` (the tree is drawn in
``rtcommon.errors``); the ones a caller meets are exported here.
"""

from rtcommon.cluster import ClusterError
from rtcommon.errors import RTError
from rtcommon.log import (
    CodecError,
    LogError,
    LogLockedError,
    LogWriteError,
    PositionError,
    RecordTooLargeError,
)
from rtcommon.streams import StreamNameError
from rtcommon.tls import TLSError

from ._cluster import Cluster
from ._external import EnrolmentError
from ._prune import prune
from ._publisher import IdSequenceError, Publisher
from ._subscriber import PositionOutOfRangeError, Subscriber, SubscriberError

__all__ = [
    "Cluster",
    "ClusterError",
    "CodecError",
    "EnrolmentError",
    "IdSequenceError",
    "LogError",
    "LogLockedError",
    "LogWriteError",
    "PositionError",
    "PositionOutOfRangeError",
    "Publisher",
    "RTError",
    "RecordTooLargeError",
    "StreamNameError",
    "Subscriber",
    "SubscriberError",
    "TLSError",
    "prune",
]
