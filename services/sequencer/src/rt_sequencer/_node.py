"""One RT node's sequencer: its parts, the tasks that connect them, and its lifecycle.

Data flow: publishers push into the input copies (``_inputs``); a group syncer
makes them durable and gossip tells every node what every node holds
(``_peers``); the leader proposes, for each stream, the range a quorum holds
(one proposal in flight at a time, so ranges always start where the merge
stands); Raft commits it (``_driver``); every node applies it to the merged
log (``_merge``), fetching from a peer any input bytes it missed; pull servers
follow the merged log (``_services``). Checkpoints of the merge state let a
restart resume, and serve as Raft snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rtcommon.cluster import ClusterSpec
from rtcommon.log import Chunk, LogMirror, SyncPolicy
from rtproto.v1 import admin_pb2_grpc, peer_pb2_grpc, pull_pb2, pull_pb2_grpc, push_pb2_grpc

from ._driver import RaftDriver
from ._inputs import InputStore
from ._merge import Checkpoint, MergedLog, Merger, Range, encode_ranges, initial_out_position
from ._peers import SERVER_OPTIONS, ClusterView, PeerLink, backoff_sleep
from ._services import AdminService, PeerService, PullService, PushService
from .raft import Entry, FileStorage, RaftError, Snapshot

__all__ = ["Node"]

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 0.5
#: Raft entries kept after a checkpoint, so a follower that lags a little needs no snapshot
#: (RT_RAFT_KEEP_ENTRIES lowers it, for tests of snapshot installation).
COMPACTION_KEEP = int(os.environ.get("RT_RAFT_KEEP_ENTRIES", "20000"))
BACKUP_CHECK_INTERVAL = 0.1
#: Proposals a leader has in its log but not yet applied, at most: a bound on the work
#: a new leader discards or a slow follower has to catch up on.
MAX_PROPOSALS_IN_FLIGHT = 16
PROPOSAL_SPACING = 0.003
#: A stream whose push has been quiet this long, while a peer holds more, is fetched.
PUSH_QUIET = 0.3


class Node:
    def __init__(self, spec: ClusterSpec, node_id: int) -> None:
        self.spec = spec.node(node_id)
        self.cluster = spec
        self.id = node_id
        data = Path(self.spec.data)
        self.in_dir, self.out_dir, self.state_dir = data / "s/in", data / "s/out", data / "s/state"
        for directory in (self.in_dir, self.out_dir, self.state_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.view = ClusterView(len(spec.nodes))
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._committed: asyncio.Queue[tuple[list[Entry], Snapshot | None]] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._installing = False  # a snapshot install owns the merged log meanwhile

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        checkpoint_path = self.state_dir / "checkpoint"
        checkpoint = Checkpoint.load(checkpoint_path) or Checkpoint()
        self.out = MergedLog(
            self.out_dir,
            roll_size=self.cluster.roll_size,
            position=initial_out_position(checkpoint, self._session()),
        )
        self.inputs = InputStore(self.in_dir)
        self.merger = Merger(
            self.inputs,
            self.out,
            checkpoint,
            checkpoint_path=checkpoint_path,
            fetch=self.request_fetch,
        )
        self.storage = FileStorage(self.state_dir / "raft")
        self.links = {
            peer.id: PeerLink(
                self.id,
                peer,
                self.inputs.held,
                self.inputs.topics,
                self.inputs.changed,
                peer_leads=lambda raft_id=peer.id + 1: self.driver.leader == raft_id,
            )
            for peer in self.cluster.nodes
            if peer.id != self.id
        }
        self.driver = RaftDriver(
            node_id=self.id + 1,
            peers=tuple(node.id + 1 for node in self.cluster.nodes),
            storage=self.storage,
            applied=checkpoint.applied_index,
            send=self._send_raft,
            deliver=lambda entries, snapshot: self._committed.put_nowait((entries, snapshot)),
        )
        server = await self._serve()
        for link in self.links.values():
            link.start()
        tasks = [
            asyncio.create_task(coroutine, name=name)
            for name, coroutine in [
                ("raft", self.driver.run()),
                ("syncer", self.inputs.run_syncer()),
                ("applier", self._apply_forever()),
                ("proposer", self._propose_forever()),
                ("checkpointer", self._checkpoint_forever()),
                ("own-view", self._watch_own_held()),
                ("backup", self._backup_forever()),
                ("health", self._serving_once_led()),
            ]
        ]
        stopper = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [task for task in done if task is not stopper]
        await self._shutdown(server, tasks)
        for task in failed:
            task.result()  # a part that stopped on its own is fatal: raise its error

    async def _serving_once_led(self) -> None:
        """Health turns SERVING once this node knows a leader: only then can the cluster
        merge what is pushed (a fresh cluster elects one within about a second)."""
        while not self.driver.leader:
            await self.driver.role_changed.wait_for(1.0)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("node %s serving on %s and %s", self.spec.name, self.spec.push, self.spec.pull)
        await asyncio.Event().wait()  # a part of the node: it ends only with the node

    def stop(self) -> None:
        self._stopping.set()

    async def _serve(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        push_pb2_grpc.add_PushServicer_to_server(PushService(self), server)
        pull_pb2_grpc.add_PullServicer_to_server(PullService(self), server)
        peer_pb2_grpc.add_PeerServicer_to_server(PeerService(self), server)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(self), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for address in dict.fromkeys((self.spec.push, self.spec.pull)):
            if server.add_insecure_port(address) == 0:
                raise OSError(f"cannot listen on {address}")
        await server.start()
        return server

    async def _shutdown(self, server: grpc.aio.Server, tasks: list[asyncio.Task]) -> None:
        await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(grace=0.5)
        for task in [*tasks, *self._fetching.values()]:
            task.cancel()
        for task in [*tasks, *self._fetching.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for link in self.links.values():
            await link.close()
        with contextlib.suppress(Exception):
            await self.merger.save_checkpoint()
        self.merger.close()
        self.out.close()
        self.inputs.close()
        self.storage.close()

    def _session(self) -> int:
        path = Path(self.cluster.session_file) if self.cluster.session_file else None
        if path is None or not path.exists():
            return 0
        return int(path.read_text().strip() or 0)

    # -- raft ----------------------------------------------------------------------------

    def _send_raft(self, message) -> None:
        link = self.links.get(message.dst - 1)
        if link is not None:
            link.send_raft(message)

    async def _propose_forever(self) -> None:
        """On the leader: propose what a quorum holds beyond what is proposed.

        Proposals are pipelined: each range starts where the previous proposal of its
        stream ended, without waiting for it to commit, so entries flow continuously.
        A new leader first applies its whole log, so that its proposals start from the
        merge state every node will have; a change of term starts over from there.
        """
        proposed: dict[str, int] | None = None  # stream -> end of the last range proposed
        term = 0
        outstanding: list[int] = []  # last indexes of proposals not yet applied
        wake = asyncio.Event()
        for signal_ in (self.merger.applied, self.view.changed, self.driver.role_changed):
            signal_.notify(wake)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 0.05)
            wake.clear()
            driver, merger = self.driver, self.merger
            if not driver.is_leader or driver.term != term:
                proposed, term, outstanding = None, driver.term, []
                if not driver.is_leader:
                    continue
            if proposed is None:
                if merger.applied_index < driver.last_index:
                    continue  # entries of earlier terms still to apply
                proposed = dict(merger.merged)
            outstanding = [index for index in outstanding if index > merger.applied_index]
            if len(outstanding) >= MAX_PROPOSALS_IN_FLIGHT:
                continue
            ranges = []
            for stream in sorted(self.view.streams()):
                held = self.view.quorum_held(stream)
                start = proposed.get(stream, 0)
                topic = self.view.topics.get(stream)
                if held > start and topic is not None:
                    ranges.append(Range(stream, start, held, topic))
            if not ranges:
                continue
            try:
                accepted = await self.driver.propose(encode_ranges(ranges))
            except RaftError as exc:
                log.info("proposal refused: %s", exc)
                proposed = None
                continue
            if accepted is None or accepted.term != term:
                proposed = None
                continue
            outstanding.append(accepted.last_index)
            for item in ranges:
                proposed[item.stream] = item.end
            # Each proposal is a round of messages through every node: under a steady
            # stream, one every few milliseconds carries as much for far less work.
            await asyncio.sleep(PROPOSAL_SPACING)

    async def _apply_forever(self) -> None:
        snapshot = self.storage.snapshot()
        if snapshot.index > self.merger.applied_index:
            # Raft took a snapshot this node had not finished installing when it stopped.
            await self._install(Checkpoint.decode(snapshot.data))
        while True:
            entries, snapshot = await self._committed.get()
            if snapshot is not None and snapshot.index > self.merger.applied_index:
                await self._install(Checkpoint.decode(snapshot.data))
            for entry in entries:
                await self.merger.apply(entry.index, entry.data)
            self.merger.finish_batch()

    async def _checkpoint_forever(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            if self._installing or self.merger.applied_index == self.merger.saved.applied_index:
                continue
            state = await self.merger.save_checkpoint()
            if state.applied_index - self.storage.first_index() > 2 * COMPACTION_KEEP:
                self.driver.compact(state.applied_index, state.encode(), COMPACTION_KEEP)

    async def _install(self, checkpoint: Checkpoint) -> None:
        """A snapshot from the leader: bring the merged log to its position from the peers,
        then take its state, and checkpoint it before anything else is applied."""
        log.info("installing a snapshot at index %d", checkpoint.applied_index)
        self._installing = True
        try:
            self.out.close()
            target = checkpoint.out_position
            attempt = 0
            while not await self._catch_up_out(target):
                attempt += 1
                await backoff_sleep(attempt)
            self.out = MergedLog(self.out_dir, roll_size=self.cluster.roll_size, position=target)
            self.merger.out = self.out
            self.merger.restore(checkpoint)
            await self.merger.save_checkpoint()
        finally:
            self._installing = False

    async def _catch_up_out(self, target: int) -> bool:
        """Pull the merged log from one peer after another until it reaches ``target``."""
        with LogMirror(self.out_dir, sync=SyncPolicy.NONE) as mirror:
            for link in self.links.values():
                if (mirror.end or 0) >= target:
                    break
                try:
                    await self._pull_out_into(link, mirror, target)
                except grpc.aio.AioRpcError as exc:
                    log.warning(
                        "catching up the merged log from %s: %s", link.peer.name, exc.code()
                    )
            mirror.sync()  # the checkpoint that follows says these bytes are on disk
            return (mirror.end or 0) >= target

    async def _pull_out_into(self, link: PeerLink, mirror: LogMirror, target: int) -> None:
        stub = pull_pb2_grpc.PullStub(link.channel)
        call = stub.Pull(pull_pb2.PullRequest(position=mirror.end or 0))
        async for chunk in call:
            mirror.write(Chunk(chunk.position, chunk.data, chunk.sealed))
            if (mirror.end or 0) >= target:
                call.cancel()
                return

    # -- held positions and the backup path ----------------------------------------------

    async def _watch_own_held(self) -> None:
        while True:
            self.view.update(self.id, self.inputs.held(), self.inputs.topics())
            await self.inputs.changed.wait_for(1.0)

    def request_fetch(self, stream: str, target: int) -> None:
        """Fetch ``stream`` from the peer that holds most of it, unless already fetching."""
        task = self._fetching.get(stream)
        if task is None or task.done():
            self._fetching[stream] = asyncio.create_task(self._fetch(stream, target))

    async def _fetch(self, stream_name: str, target: int) -> None:
        stream = self.inputs.open(stream_name, self.view.topics.get(stream_name))
        attempt = 0
        while stream.written < max(target, self.view.best_peer(stream_name, self.id)[1]):
            peer, held = self.view.best_peer(stream_name, self.id)
            if held <= stream.written:
                await backoff_sleep(attempt)
                attempt += 1
                if attempt > 8:
                    return
                continue
            try:
                async with asyncio.timeout(5):
                    async for chunk in self.links[peer].fetch(stream_name, stream.written):
                        stream.write(chunk)
                        if stream.written >= held:
                            break
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                log.info("fetch of %s from node %d: %s", stream_name, peer, exc)
                attempt += 1
                await backoff_sleep(attempt)

    async def _backup_forever(self) -> None:
        """Streams this node lags on while their push is quiet go to the backup path."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(BACKUP_CHECK_INTERVAL)
            for name in self.view.streams():
                stream = self.inputs.streams.get(name)
                written = stream.written if stream else 0
                quiet = stream is None or loop.time() - stream.last_write > PUSH_QUIET
                _, held = self.view.best_peer(name, self.id)
                if held > written and quiet:
                    self.request_fetch(name, held)


def run_node(spec: ClusterSpec, node_id: int) -> None:
    node = Node(spec, node_id)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, node.stop)
        await node.run()

    asyncio.run(main())
