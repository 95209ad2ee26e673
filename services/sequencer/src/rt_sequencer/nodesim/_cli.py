"""The whole-node simulator's command line (the shape is the Raft simulator's)::

    python3 -m rt_sequencer.nodesim --seeds N [--start S] [--nodes 3] [--jobs J]
    python3 -m rt_sequencer.nodesim --seed S [--nodes 3] [--trace]

Both end with the line ``N seeds, V violations`` and exit 0 iff V is 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ..raftsim import SimResult
from ..raftsim._cli import Failures, run_in_parallel, seeds_main
from ._simulation import NodeSimConfig, NodeSimulation


def simulate(seed: int, *, nodes: int = 3, trace: bool = False) -> SimResult:
    return NodeSimulation(seed, NodeSimConfig(nodes=nodes), trace=trace).run()


def run_seeds(seeds: Sequence[int], nodes: int = 3, jobs: int = 1) -> Failures:
    return run_in_parallel(functools.partial(simulate, nodes=nodes), seeds, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    return seeds_main(
        argv,
        prog="rt_sequencer.nodesim",
        description="Deterministic simulation of whole RT nodes (Raft and merge) under faults.",
        default_nodes=NodeSimConfig().nodes,
        simulation=simulate,
    )
