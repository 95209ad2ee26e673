"""The simulators' command line.

What it owns: ``main``, ``run_seeds`` and the pieces the whole-node simulator
(``rt_sequencer.nodesim``) shares: ``run_in_parallel`` and ``seeds_main``. Two forms::

    python3 -m rt_sequencer.raftsim --seeds N [--start S] [--nodes 3] [--jobs J]
    python3 -m rt_sequencer.raftsim --seed S [--nodes 3] [--trace]

The first runs seeds S..S+N-1 and prints each failing seed with the command that replays
it; the second replays one seed, with its full trace if asked. Both end with the line
``N seeds, V violations`` (V counts failing seeds) and exit 0 iff V is 0.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ._checker import Violation
from ._simulation import SimConfig, Simulation

Failures = list[tuple[int, list[Violation]]]


class Result(Protocol):
    violations: list[Violation]
    trace: list[str]
    stats: Any


def run_in_parallel(
    simulate: Callable[[int], Result], seeds: Sequence[int], jobs: int = 1
) -> Failures:
    """Run ``simulate`` (picklable) on every seed, in ``jobs`` processes; return
    (seed, violations) of the failing ones, in seed order."""
    if jobs <= 1:
        return _run_chunk(simulate, list(seeds))
    chunks = [list(seeds[start::jobs]) for start in range(jobs)]
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs) as pool:
        parts = pool.starmap(_run_chunk, [(simulate, chunk) for chunk in chunks])
    return sorted((failure for part in parts for failure in part), key=lambda f: f[0])


def _run_chunk(simulate: Callable[[int], Result], seeds: list[int]) -> Failures:
    failures = []
    for seed in seeds:
        result = simulate(seed)
        if result.violations:
            failures.append((seed, result.violations))
    return failures


def _raft_simulation(seed: int, config: SimConfig, trace: bool = False) -> Result:
    return Simulation(seed, config, trace=trace).run()


def run_seeds(seeds: Sequence[int], config: SimConfig | None = None, jobs: int = 1) -> Failures:
    """Run every seed of the Raft simulation; return the failing ones, in seed order."""
    simulate = functools.partial(_raft_simulation, config=config or SimConfig())
    return run_in_parallel(simulate, seeds, jobs)


def seeds_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    default_nodes: int,
    simulation: Callable[..., Result],
) -> int:
    """The command line of a simulator: ``simulation(seed, nodes=, trace=)`` runs one."""
    parser = argparse.ArgumentParser(prog=f"python3 -m {prog}", description=description)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=int, help="run this many seeds")
    which.add_argument("--seed", type=int, help="replay one seed")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--nodes", type=int, default=default_nodes, help="cluster size")
    parser.add_argument("--jobs", type=int, default=1, help="processes for --seeds")
    parser.add_argument("--trace", action="store_true", help="print the trace of --seed")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")

    if args.seed is not None:
        result = simulation(args.seed, nodes=args.nodes, trace=args.trace)
        for line in result.trace:
            print(line)
        print(f"seed {args.seed}: {result.stats}")
        for violation in result.violations:
            print(f"seed {args.seed}: VIOLATION {violation}")
        print(f"1 seeds, {int(bool(result.violations))} violations")
        return 1 if result.violations else 0

    if args.seeds < 0:
        parser.error("--seeds must not be negative")
    seeds = range(args.start, args.start + args.seeds)
    started = time.monotonic()
    failures = run_in_parallel(functools.partial(simulation, nodes=args.nodes), seeds, args.jobs)
    extra = f" --nodes {args.nodes}" if args.nodes != default_nodes else ""
    for seed, violations in failures:
        print(f"seed {seed}: VIOLATION {violations[0]}")
        print(f"  replay: python3 -m {prog} --seed {seed}{extra} --trace")
    elapsed = time.monotonic() - started
    print(f"{prog}: {len(seeds)} seeds in {elapsed:.1f} s on {args.jobs} process(es)")
    print(f"{len(seeds)} seeds, {len(failures)} violations")
    sys.stdout.flush()
    return 0 if not failures else 1


def _raft_for_cli(seed: int, *, nodes: int, trace: bool = False) -> Result:
    return _raft_simulation(seed, SimConfig(nodes=nodes), trace)


def main(argv: Sequence[str] | None = None) -> int:
    return seeds_main(
        argv,
        prog="rt_sequencer.raftsim",
        description="Deterministic simulation of the RT Raft core under faults.",
        default_nodes=SimConfig().nodes,
        simulation=_raft_for_cli,
    )
