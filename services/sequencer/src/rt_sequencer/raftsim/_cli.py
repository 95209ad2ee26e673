"""The simulator's command line.

What it owns: ``main`` and ``run_seeds``. Two forms::

    python3 -m rt_sequencer.raftsim --seeds N [--start S] [--nodes 3] [--jobs J]
    python3 -m rt_sequencer.raftsim --seed S [--nodes 3] [--trace]

The first runs seeds S..S+N-1 and prints each failing seed with the command that replays
it; the second replays one seed, with its full trace if asked. Both end with the line
``N seeds, V violations`` (V counts failing seeds) and exit 0 iff V is 0.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections.abc import Sequence

from ._checker import Violation
from ._simulation import SimConfig, Simulation


def run_seeds(
    seeds: Sequence[int], config: SimConfig | None = None, jobs: int = 1
) -> list[tuple[int, list[Violation]]]:
    """Run every seed; return (seed, violations) of the failing ones, in seed order."""
    config = config or SimConfig()
    if jobs <= 1:
        return _run_chunk(list(seeds), config)
    chunks = [list(seeds[start::jobs]) for start in range(jobs)]
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs) as pool:
        parts = pool.starmap(_run_chunk, [(chunk, config) for chunk in chunks])
    return sorted((failure for part in parts for failure in part), key=lambda f: f[0])


def _run_chunk(seeds: list[int], config: SimConfig) -> list[tuple[int, list[Violation]]]:
    failures = []
    for seed in seeds:
        result = Simulation(seed, config).run()
        if result.violations:
            failures.append((seed, result.violations))
    return failures


def _replay_command(seed: int, nodes: int) -> str:
    extra = f" --nodes {nodes}" if nodes != SimConfig().nodes else ""
    return f"python3 -m rt_sequencer.raftsim --seed {seed}{extra} --trace"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m rt_sequencer.raftsim",
        description="Deterministic simulation of the RT Raft core under faults.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=int, help="run this many seeds")
    which.add_argument("--seed", type=int, help="replay one seed")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--nodes", type=int, default=SimConfig().nodes, help="cluster size")
    parser.add_argument("--jobs", type=int, default=1, help="processes for --seeds")
    parser.add_argument("--trace", action="store_true", help="print the trace of --seed")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    config = SimConfig(nodes=args.nodes)

    if args.seed is not None:
        result = Simulation(args.seed, config, trace=args.trace).run()
        for line in result.trace:
            print(line)
        print(f"seed {args.seed}: {result.stats}")
        for violation in result.violations:
            print(f"seed {args.seed}: VIOLATION {violation}")
        print(f"1 seeds, {int(not result.ok)} violations")
        return 0 if result.ok else 1

    if args.seeds < 0:
        parser.error("--seeds must not be negative")
    seeds = range(args.start, args.start + args.seeds)
    failures = run_seeds(seeds, config, args.jobs)
    for seed, violations in failures:
        print(f"seed {seed}: VIOLATION {violations[0]}")
        print(f"  replay: {_replay_command(seed, args.nodes)}")
    print(f"{len(seeds)} seeds, {len(failures)} violations")
    sys.stdout.flush()
    return 0 if not failures else 1
