"""What both simulators share: the event queue, the trace and the run wrapper.

What it owns: :class:`SimulationBase`: the event queue, the trace, the network between
nodes, disk delays and the scheduling of a write that must be synced (with a crash
planned into it). A subclass sets ``checker`` (anything with a ``violations`` list) and
``stats`` (with a ``ticks`` counter), schedules its first events and pops them in
``_run``; :meth:`SimulationBase.run` turns whatever the code
under test raises into an ``exception`` violation, so a seed reports rather than
crashes.
"""

from __future__ import annotations

import heapq
import random
import traceback
from typing import Any

from ._checker import Violation
from ._network import Network
from ._result import SimResult

TICK_STEPS = 10
"""Simulated time steps per nominal tick; network and disk delays are a few steps."""


class SimulationBase:
    checker: Any
    stats: Any

    def __init__(self, seed: int, *, trace: bool) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.trace: list[str] | None = [] if trace else None
        self.now = 0
        self._queue: list[tuple[int, int, int, int, Any]] = []
        self._sequence = 0
        self.network = Network(self.rng)

    def run(self) -> SimResult:
        try:
            self._run()
        except Exception as error:  # whatever the code under test raises is a finding
            detail = f"{type(error).__name__}: {error}"
            self.checker.violations.append(Violation("exception", detail, self.now))
            if self.trace is not None:
                self.trace.extend(traceback.format_exc().splitlines())
        self.stats.ticks = self.now // TICK_STEPS
        return SimResult(self.seed, self.checker.violations, self.stats, self.trace or [])

    def _run(self) -> None:
        raise NotImplementedError

    def _push(self, time: int, kind: int, target: int, payload: Any = None) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (time, self._sequence, kind, target, payload))

    def _disk_delay(self, slow: float = 0.05) -> int:
        """A disk's delay in steps: mostly short, sometimes a slow fsync."""
        if self.rng.random() < slow:
            return self.rng.randint(5, 30)
        return self.rng.randint(1, 3)

    def _schedule_write(
        self, node: int, incarnation: int, *, crash_during: bool, persisted: int, crash: int
    ) -> None:
        """A write that must be synced: event ``persisted`` when it is durable, and if a
        crash is planned into it, event ``crash`` at a random point before that."""
        delay = self._disk_delay()
        if crash_during:
            self._push(self.now + self.rng.randrange(delay), crash, node, incarnation)
        self._push(self.now + delay, persisted, node, incarnation)

    def _note(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now:>6} {text}")
