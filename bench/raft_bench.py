"""Benchmark of the Raft core and its simulator.

Prints:
  raft: 3-node in-memory commit throughput: N entries/s   (propose() per entry)
  raft: 3-node in-memory commit throughput, propose_batch: N entries/s
  raftsim: S seeds/s

The throughput figures drive three RaftNodes over MemoryStorage, delivering every message
at once: clients propose BATCH entries of PAYLOAD bytes, then the cluster runs until all
three nodes have applied them (persist, send, apply, advance, as a driver would). An entry
counts once it is applied on every node. Rates are per second of this process's CPU time,
so that other load on a shared machine does not skew them (on an idle machine it is the
wall-clock rate: everything here runs on one thread).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services/sequencer/src"))

from rt_sequencer.raft import Config, MemoryStorage, Message, RaftNode
from rt_sequencer.raftsim import SimConfig, Simulation

BATCH = 1000
PAYLOAD = 64
SECONDS = 2.0
SIM_SEEDS = 200


class _Cluster:
    def __init__(self) -> None:
        peers = (1, 2, 3)
        self.storages = [MemoryStorage() for _ in peers]
        self.nodes = [
            RaftNode(Config(i, peers, random.Random(i)), self.storages[i - 1]) for i in peers
        ]
        self.applied = [0, 0, 0]
        self.nodes[0].campaign()
        self.run()

    def run(self) -> None:
        nodes, storages, applied = self.nodes, self.storages, self.applied
        busy = True
        while busy:
            busy = False
            messages: list[Message] = []
            for position, node in enumerate(nodes):
                while node.has_ready():
                    busy = True
                    ready = node.ready()
                    storages[position].save(ready.hard_state, ready.entries, ready.snapshot)
                    messages.extend(ready.messages)
                    applied[position] += len(ready.committed_entries)
                    node.advance(ready)
            for message in messages:
                nodes[message.dst - 1].step(message)


def commit_throughput(batched: bool) -> float:
    cluster = _Cluster()
    leader = cluster.nodes[0]
    payloads = [bytes([65 + n % 26]) * PAYLOAD for n in range(BATCH)]
    start_applied = min(cluster.applied)
    started = time.process_time()
    elapsed = 0.0
    while elapsed < SECONDS:
        if batched:
            leader.propose_batch(payloads)
        else:
            for payload in payloads:
                leader.propose(payload)
        cluster.run()
        elapsed = time.process_time() - started
    return (min(cluster.applied) - start_applied) / elapsed


def simulated_seeds_per_second() -> float:
    started = time.process_time()
    for seed in range(SIM_SEEDS):
        result = Simulation(seed, SimConfig()).run()
        if not result.ok:
            raise SystemExit(f"seed {seed} failed: {result.violations[0]}")
    return SIM_SEEDS / (time.process_time() - started)


def main() -> None:
    print(f"raft: 3-node in-memory commit throughput: {commit_throughput(False):.0f} entries/s")
    print(
        "raft: 3-node in-memory commit throughput, propose_batch: "
        f"{commit_throughput(True):.0f} entries/s"
    )
    print(f"raftsim: {simulated_seeds_per_second():.1f} seeds/s")


if __name__ == "__main__":
    main()
