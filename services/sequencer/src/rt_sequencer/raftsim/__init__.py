"""rt_sequencer.raftsim: a deterministic simulator that runs the real Raft core.

What it owns: the simulation (``_simulation``: event loop, nodes driven as a real
driver must drive them, clients, fault schedule), the simulated network (``_network``),
the safety checker (``_checker``) and the command line (``_cli``, run as
``python3 -m rt_sequencer.raftsim``). Everything random is drawn from one
``random.Random(seed)``, so a seed replays exactly.
"""

from ._base import TICK_STEPS, SimulationBase
from ._checker import SafetyChecker, Violation
from ._cli import main, run_seeds
from ._result import SimResult
from ._simulation import SimConfig, SimStats, Simulation, lose_unsynced_commit, tear_write

__all__ = [
    "TICK_STEPS",
    "SafetyChecker",
    "SimConfig",
    "SimResult",
    "SimStats",
    "Simulation",
    "SimulationBase",
    "Violation",
    "lose_unsynced_commit",
    "main",
    "run_seeds",
    "tear_write",
]
