"""rt_sequencer.nodesim: a seeded, deterministic simulation of whole RT nodes.

What it owns: the simulation (``_simulation``: the event loop, nodes of Raft plus the
merge core driven as the real node drives them, publishers, the fault schedule), the
simulated disks (``_storage``), the checker of the merge's promises (``_checker``) and
the command line (``_cli``, run as ``python3 -m rt_sequencer.nodesim``). Everything
random is drawn from one ``random.Random(seed)``, so a seed replays exactly. The
network model is the Raft simulator's (``rt_sequencer.raftsim``).
"""

from ._checker import MergeChecker
from ._cli import main, run_seeds
from ._simulation import NodeSimConfig, NodeSimStats, NodeSimulation

__all__ = [
    "MergeChecker",
    "NodeSimConfig",
    "NodeSimStats",
    "NodeSimulation",
    "main",
    "run_seeds",
]
