"""The simulated network between nodes.

What it owns: :class:`Network` — which directed links are cut (symmetric and asymmetric
partitions) and the current fault profile (loss, duplication, delay and its spread, which
is what reorders messages). It decides, for each message sent, whether and when copies of
it arrive; the simulation's event queue carries them. Every random choice comes from the
simulation's one ``random.Random``.
"""

from __future__ import annotations

import random


class Network:
    __slots__ = ("_cut", "_rng", "duplicate_rate", "long_delay_rate", "loss_rate", "max_delay")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._cut: set[tuple[int, int]] = set()
        self.loss_rate = 0.0
        self.duplicate_rate = 0.0
        self.long_delay_rate = 0.0
        self.max_delay = 5

    def calm(self) -> None:
        """No loss, duplication or long delays; links stay as they are."""
        self.loss_rate = 0.0
        self.duplicate_rate = 0.0
        self.long_delay_rate = 0.0
        self.max_delay = 5

    def heal(self) -> None:
        self._cut.clear()

    def cut(self, src: int, dst: int) -> None:
        self._cut.add((src, dst))

    def partition(self, groups: list[list[int]]) -> None:
        """Cut every link between different groups, both ways."""
        for group in groups:
            for other in groups:
                if other is not group:
                    for src in group:
                        for dst in other:
                            self._cut.add((src, dst))

    def isolate(self, node: int, nodes: list[int]) -> str:
        """Cut ``node`` from every other node, both ways; return a description."""
        self.partition([[node], [other for other in nodes if other != node]])
        return f"n{node} isolated"

    def split_randomly(self, nodes: list[int]) -> str:
        """Cut ``nodes`` into two random groups, both ways; return a description."""
        order = list(nodes)
        self._rng.shuffle(order)
        split = self._rng.randint(1, len(order) - 1) if len(order) > 1 else 1
        groups = [order[:split], order[split:]]
        self.partition(groups)
        return f"partition {groups[0]} | {groups[1]}"

    def silence_one_way(self, nodes: list[int]) -> str:
        """One random node sends nothing, or receives nothing (an asymmetric partition)."""
        node = self._rng.choice(nodes)
        outgoing = self._rng.random() < 0.5
        for other in nodes:
            if other != node:
                if outgoing:
                    self.cut(node, other)
                else:
                    self.cut(other, node)
        return f"asymmetric, n{node} {'sends' if outgoing else 'receives'} nothing"

    def change_profile(self) -> str:
        """Draw new loss, duplication and delay rates; return a description."""
        rng = self._rng
        self.loss_rate = rng.choice((0.0, 0.02, 0.1, 0.3))
        self.duplicate_rate = rng.choice((0.0, 0.05, 0.2))
        self.long_delay_rate = rng.choice((0.0, 0.05, 0.2))
        self.max_delay = rng.choice((2, 5, 10))
        return (
            f"network loss={self.loss_rate} dup={self.duplicate_rate} "
            f"long={self.long_delay_rate} max_delay={self.max_delay}"
        )

    def is_cut(self, src: int, dst: int) -> bool:
        return (src, dst) in self._cut

    def delays(self, src: int, dst: int) -> list[int]:
        """Delays (in simulation steps) of the copies of one message that will arrive."""
        if (src, dst) in self._cut:
            return []
        rng = self._rng
        if self.loss_rate and rng.random() < self.loss_rate:
            return []
        copies = 2 if self.duplicate_rate and rng.random() < self.duplicate_rate else 1
        delays = []
        for _ in range(copies):
            if self.long_delay_rate and rng.random() < self.long_delay_rate:
                delays.append(rng.randint(self.max_delay, 10 * self.max_delay))
            else:
                delays.append(rng.randint(1, self.max_delay))
        return delays
