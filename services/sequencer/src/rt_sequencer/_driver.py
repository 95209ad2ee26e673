"""The Raft driver: runs the sans-I/O core against real time, disk and network.

It owns the :class:`~rt_sequencer.raft.RaftNode` exclusively, and speaks node ids
(0-based, as in cluster.json) to the rest of the node: Raft's own ids stay inside. Ticks, messages
from peers and proposals queue in an inbox; one task steps them in, then takes
each Ready in turn: persist (in a worker thread, so the event loop keeps
serving), send, hand committed entries on, ``advance``. Nothing touches the
core while a Ready is being persisted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._metrics import FSYNC_SECONDS
from ._signal import Signal
from .core import NO_LEADER, node_of, raft_id
from .raft import (
    Accepted,
    Config,
    Entry,
    FileStorage,
    Message,
    RaftError,
    RaftNode,
    Role,
    Snapshot,
)

__all__ = ["RaftDriver"]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.02
ELECTION_TICKS = 25  # 0.5 to 1 s without a leader before campaigning
HEARTBEAT_TICKS = 5  # 0.1 s


class RaftDriver:
    def __init__(
        self,
        *,
        node_id: int,
        peers: tuple[int, ...],
        storage: FileStorage,
        applied: int,
        send: Callable[[int, Message], None],
        deliver: Callable[[list[Entry], Snapshot | None], None],
        rng: random.Random | None = None,
        node_names: dict[int, str] | None = None,
        abstain: bool = False,
    ) -> None:
        """``node_names`` names nodes in Raft's log lines (by node id; default
        ``node-<id>``); ``abstain``: this node rejoined after losing its Raft state
        (``raft.Config.abstain``)."""
        node_names = node_names or {peer: f"node-{peer}" for peer in peers}
        self.storage = storage
        self.node = RaftNode(
            Config(
                node_id=raft_id(node_id),
                peers=tuple(raft_id(peer) for peer in peers),
                rng=rng or random.Random(),
                election_tick=ELECTION_TICKS,
                heartbeat_tick=HEARTBEAT_TICKS,
                applied=applied,
                forward_proposals=False,
                abstain=abstain,
                on_event=lambda line: log.info("raft: %s", line),
                node_name=lambda raft_node: node_names[node_of(raft_node)],
            ),
            storage,
        )
        self._send = send
        self._deliver = deliver
        self._inbox: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self.role_changed = Signal()
        self.leader_changes = 0  #: times a new leader became known here
        self.role = self.node.role
        self.leader = node_of(self.node.leader_id)  #: the node id of the leader known

    @property
    def abstaining(self) -> bool:
        return self.node.abstaining

    # -- inputs (any task) ---------------------------------------------------------------

    def step(self, message: Message) -> None:
        self._post("step", message)

    def propose(self, data: bytes) -> asyncio.Future[Accepted | None]:
        future: asyncio.Future[Accepted | None] = asyncio.get_running_loop().create_future()
        self._post("propose", (data, future))
        return future

    def compact(self, index: int, data: bytes, keep: int) -> asyncio.Future[bool]:
        """Store ``data`` as the snapshot at ``index``; cut the log as ``core.Compact``
        says. The future is done once the snapshot is on disk (True), or at once with
        False when Raft has not committed and stored ``index`` here yet (a merge state
        installed from a peer's newer snapshot runs ahead of this node's Raft log)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._post("compact", (index, data, keep, future))
        return future

    @property
    def term(self) -> int:
        return self.node.term

    @property
    def last_index(self) -> int:
        return self.node.last_index

    @property
    def commit_index(self) -> int:
        return self.node.commit_index

    @property
    def first_index(self) -> int:
        return self.storage.first_index()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick_forever())
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._drain_inbox()
                while self.node.has_ready():
                    await self._handle_ready()
        finally:
            ticker.cancel()

    def _post(self, kind: str, item: Any) -> None:
        self._inbox.append((kind, item))
        self._wake.set()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self._post("tick", None)

    async def _drain_inbox(self) -> None:
        node = self.node
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "tick":
                node.tick()
            elif kind == "step":
                try:
                    node.step(item)
                except RaftError as exc:
                    log.warning("dropped a raft message from node %d: %s", item.src, exc)
            elif kind == "propose":
                data, future = item
                try:
                    accepted = node.propose(data)
                except RaftError as exc:
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(accepted)
            elif kind == "compact":
                index, data, keep, stored = item
                if index > min(self.node.commit_index, self.storage.last_index()):
                    if not stored.done():
                        stored.set_result(False)
                    continue
                try:
                    await asyncio.to_thread(self._compact, index, data, keep)
                except Exception as exc:
                    if not stored.done():
                        stored.set_exception(exc)
                    raise
                if not stored.done():
                    stored.set_result(True)
                self._deliver([], None)  # the first index moved

    def _compact(self, index: int, data: bytes, keep: int) -> None:
        if index <= self.storage.snapshot().index:
            return
        self.storage.create_snapshot(index, data)
        # Never past what Raft has handed over to apply (after a restart it hands over
        # again what the checkpoint already holds).
        cut = min(index - keep, self.node.applied_index)
        if cut - self.storage.first_index() >= keep:  # see core.Compact
            self.storage.compact(cut)

    async def _handle_ready(self) -> None:
        ready = self.node.ready()
        if ready.must_sync:
            # fsyncs: in a worker thread, so the loop keeps serving meanwhile
            started = time.perf_counter()
            await asyncio.to_thread(
                self.storage.save, ready.hard_state, ready.entries, ready.snapshot
            )
            FSYNC_SECONDS.record(time.perf_counter() - started, {"what": "raft"})
        elif ready.hard_state is not None:
            # Only the commit index moved: kept in memory, written with the next sync.
            self.storage.save(ready.hard_state, [], None, must_sync=False)
        for message in ready.messages:
            self._send(node_of(message.dst), message)
        if ready.soft_state is not None:
            leader = node_of(ready.soft_state.leader_id)
            if leader != self.leader and leader != NO_LEADER:
                self.leader_changes += 1
            self.role, self.leader = ready.soft_state.role, leader
            log.info("raft: %s, leader %s, term %d", self.role.value, self.leader, self.term)
            self.role_changed.fire()
        # Every Ready is reported, even an empty one: the merge follows Raft's state.
        self._deliver(ready.committed_entries, ready.snapshot)
        self.node.advance(ready)

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER
