"""rt: RT's user API.

``rt.Cluster`` names the nodes; ``rt.Publisher`` writes a local log and
replicates it to the cluster; ``rt.Subscriber`` replicates the merged log and
delivers it from a local copy; ``rt.prune`` truncates a local copy. The ``rt``
command line lives in ``rt.cli``.
"""

from ._cluster import Cluster
from ._prune import prune
from ._publisher import IdSequenceError, Publisher
from ._subscriber import PositionOutOfRangeError, Subscriber, SubscriberError

__all__ = [
    "Cluster",
    "IdSequenceError",
    "PositionOutOfRangeError",
    "Publisher",
    "Subscriber",
    "SubscriberError",
    "prune",
]
