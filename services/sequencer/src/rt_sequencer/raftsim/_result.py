"""One seed's outcome, as both simulators report it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._checker import Violation


@dataclass(slots=True)
class SimResult:
    """One seed's outcome (of this simulator or of ``rt_sequencer.nodesim``)."""

    seed: int
    violations: list[Violation]
    stats: Any  #: the simulator's counters (SimStats here)
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations
