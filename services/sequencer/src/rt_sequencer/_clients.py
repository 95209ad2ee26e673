"""The publishers and subscribers connected to this node, for ``GET /rtClients``.

Each Push and Pull call registers a :class:`Client` for as long as it lasts and counts
the bytes it moves; :meth:`Clients.describe` lists them with their positions and a rate
that decays exponentially (time constant ``RATE_WINDOW`` seconds), so an idle client
drops towards 0 bytes/s instead of keeping its lifetime average.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterator

from rtproto.v1 import admin_pb2

__all__ = ["Client", "Clients"]

RATE_WINDOW = 5.0


class Client:
    """One connected client: what it is, where it stands, how fast it moves."""

    def __init__(self, kind: str, stream: str, peer: str, name: str, clock: Callable[[], float]):
        self.kind, self.stream, self.peer, self.name = kind, stream, peer, name
        self._clock = clock
        self.since = time.time()
        self.position = 0
        self.bytes = 0
        self._rate = 0.0
        self._rate_at = clock()

    def moved(self, size: int, position: int) -> None:
        """``size`` bytes went through; the client now stands at ``position``."""
        self._decay()
        self._rate += size / RATE_WINDOW
        self.bytes += size
        self.position = position

    def rate(self) -> float:
        self._decay()
        return self._rate

    def _decay(self) -> None:
        now = self._clock()
        self._rate *= math.exp(-(now - self._rate_at) / RATE_WINDOW)
        self._rate_at = now


class Clients:
    """The node's connected clients, keyed by a registration number."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clients: dict[int, Client] = {}
        self._numbers = itertools.count()

    @contextlib.contextmanager
    def connected(self, kind: str, stream: str, peer: str, name: str = "") -> Iterator[Client]:
        number = next(self._numbers)
        client = self._clients[number] = Client(kind, stream, peer, name, self._clock)
        try:
            yield client
        finally:
            del self._clients[number]

    def describe(self) -> list[admin_pb2.ClientStatus]:
        return [
            admin_pb2.ClientStatus(
                kind=client.kind,
                stream=client.stream,
                peer=client.peer,
                name=client.name,
                position=client.position,
                bytes=client.bytes,
                bytes_per_second=round(client.rate()),
                since=client.since,
            )
            for client in self._clients.values()
        ]
