"""The whole-node simulator's command line (the shape is the Raft simulator's)::

    python3 -m rt_sequencer.nodesim --seeds N [--start S] [--nodes 3] [--jobs J]
    python3 -m rt_sequencer.nodesim --seed S [--nodes 3] [--trace]

Both end with the line ``N seeds, V violations`` and exit 0 iff V is 0. ``--seed``
prints the seed's counters (:class:`NodeSimStats`); ``--seeds`` prints, before its last
two lines, the counters summed over every seed (``totals: ...``: how much each fault and
mechanism was exercised, prunes included).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import time
from collections.abc import Sequence

from ..raftsim import SimResult
from ..raftsim._cli import Failures, seeds_main
from ._simulation import NodeSimConfig, NodeSimStats, NodeSimulation

PROG = "rt_sequencer.nodesim"
#: Counters not summed over seeds (a bound, not an amount).
_NOT_SUMMED = ("recovery_ticks",)


def simulate(seed: int, *, nodes: int = 3, trace: bool = False) -> SimResult:
    return NodeSimulation(seed, NodeSimConfig(nodes=nodes), trace=trace).run()


def run_seeds(seeds: Sequence[int], nodes: int = 3, jobs: int = 1) -> Failures:
    return run_seeds_with_totals(seeds, nodes, jobs)[0]


def run_seeds_with_totals(
    seeds: Sequence[int], nodes: int = 3, jobs: int = 1
) -> tuple[Failures, dict[str, int]]:
    """Run every seed in ``jobs`` processes; return the failing ones (seed, violations) in
    seed order, and every counter of :class:`NodeSimStats` summed over the seeds."""
    if jobs <= 1:
        return _run_chunk(list(seeds), nodes)
    chunks = [list(seeds[start::jobs]) for start in range(jobs)]
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs) as pool:
        parts = pool.starmap(_run_chunk, [(chunk, nodes) for chunk in chunks])
    failures = sorted((f for part, _ in parts for f in part), key=lambda f: f[0])
    totals = _zero_totals()
    for _, part in parts:
        for name, value in part.items():
            totals[name] += value
    return failures, totals


def _zero_totals() -> dict[str, int]:
    names = [f.name for f in dataclasses.fields(NodeSimStats)]
    return {name: 0 for name in names if name not in _NOT_SUMMED}


def _run_chunk(seeds: list[int], nodes: int) -> tuple[Failures, dict[str, int]]:
    failures: Failures = []
    totals = _zero_totals()
    for seed in seeds:
        result = simulate(seed, nodes=nodes)
        if result.violations:
            failures.append((seed, result.violations))
        for name in totals:
            totals[name] += getattr(result.stats, name)
    return failures, totals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python3 -m {PROG}",
        description="Deterministic simulation of whole RT nodes (Raft and merge) under faults.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=int, help="run this many seeds")
    which.add_argument("--seed", type=int, help="replay one seed")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--nodes", type=int, default=NodeSimConfig().nodes, help="cluster size")
    parser.add_argument("--jobs", type=int, default=1, help="processes for --seeds")
    parser.add_argument("--trace", action="store_true", help="print the trace of --seed")
    args = parser.parse_args(argv)
    if args.seed is not None:  # one seed: as the Raft simulator replays it
        return seeds_main(
            argv,
            prog=PROG,
            description=parser.description or "",
            default_nodes=NodeSimConfig().nodes,
            simulation=simulate,
        )
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if args.seeds < 0:
        parser.error("--seeds must not be negative")
    seeds = range(args.start, args.start + args.seeds)
    started = time.monotonic()
    failures, totals = run_seeds_with_totals(seeds, args.nodes, args.jobs)
    extra = f" --nodes {args.nodes}" if args.nodes != NodeSimConfig().nodes else ""
    for seed, violations in failures:
        print(f"seed {seed}: VIOLATION {violations[0]}")
        print(f"  replay: python3 -m {PROG} --seed {seed}{extra} --trace")
    elapsed = time.monotonic() - started
    print("totals: " + ", ".join(f"{name}={value}" for name, value in totals.items()))
    print(f"{PROG}: {len(seeds)} seeds in {elapsed:.1f} s on {args.jobs} process(es)")
    print(f"{len(seeds)} seeds, {len(failures)} violations")
    sys.stdout.flush()
    return 0 if not failures else 1
