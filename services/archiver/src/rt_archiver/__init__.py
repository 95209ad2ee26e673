"""rt_archiver: one per node. The retention policy of the merged log (DESIGN section 7).

What it owns: the policy as a pure decision (``_policy``), the process that carries it
out by asking the cluster for prunes (``_archiver``), and the command line
(``__main__``). Publisher archival is the sequencers' (``rt_sequencer.core``: the
nodes drop input copies every node is done with), and a lead subscriber's prunes go
straight to the cluster (``rt.Subscriber.prune``); both need no process here.
"""

from ._archiver import STATUS_FILE, Archiver, read_status
from ._policy import Decision, RetentionPolicy, RolledFile, choose_prune

__all__ = [
    "STATUS_FILE",
    "Archiver",
    "Decision",
    "RetentionPolicy",
    "RolledFile",
    "choose_prune",
    "read_status",
]
