"""One RT node's sequencer: the merge core wired to gRPC, files and timers.

The decisions are the merge core's (``rt_sequencer.core``: proposals, apply,
backup path, checkpoints, snapshot installs, gossip) and Raft's (``_driver``);
this module feeds them events and carries out what they ask:

- publishers push into the input copies (``_inputs``), whose group syncer moves
  what this node holds; the core hears every write and every held position;
- peers' gossip and Raft messages arrive through the Peer service (``_services``)
  and leave through the links (``_peers``);
- Raft's Readies hand committed entries and snapshots to the core, which applies
  them to the merged log (``_files.MergedLog``) that pull servers follow;
- proposals go to the Raft driver; fetches and merged-log catch-ups run as tasks;
  checkpoints and catch-ups are written by one storage worker, one at a time;
- the core's timer wakes it at the deadline it names;
- at start, damaged storage is set aside: a merged log that no longer reaches its
  checkpoint drops the checkpoint, and damaged Raft state moves to ``raft.damaged`` and
  the node rejoins abstaining (``s/state/rejoining``) until it holds its leader's log;
  the scrubber (``_scrub``) checks the sealed files of the merged log and of the input
  copies while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rtcommon import env
from rtcommon.admin import node_status
from rtcommon.cluster import ClusterError, ClusterSpec, claim_for_cluster, quorum
from rtcommon.follow import SILENT_AFTER, FailoverPolicy, cancelling, follow
from rtcommon.log import (
    SEAL_SIZE,
    Chunk,
    LogMirror,
    SyncPolicy,
    archive_log_files,
    collect_copy,
    file_start,
    folder_bytes,
    fsync_directory,
    write_file_atomically,
)
from rtcommon.session import MissedResetError, holds_data, missed_reset, session_store
from rtcommon.tls import CAStore, ca_store, channel_credentials, server_credentials
from rtproto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    peer_pb2,
    peer_pb2_grpc,
    publisher_pb2_grpc,
    pull_pb2,
    pull_pb2_grpc,
    push_pb2_grpc,
)

from ._clients import Clients
from ._driver import RaftDriver
from ._external import ExternalAccess
from ._files import (
    InputFiles,
    MergedLog,
    load_checkpoint,
    merged_log_end,
    merged_log_holds,
    out_start,
)
from ._inputs import InputStore, InputStream
from ._metrics import NodeMetrics
from ._peers import MAX_PEER_MESSAGE, MAX_RECEIVED_MESSAGE, PeerLink, server_options
from ._scrub import Scrubber
from ._services import (
    AdminService,
    PeerService,
    PeersOnly,
    PruneUnavailableError,
    PullService,
    PushService,
    SubscriberService,
)
from ._signal import Signal
from ._tracing import TracedBatches
from .core import (
    NO_LEADER,
    Action,
    ApplyStalled,
    Archive,
    CatchUpOut,
    Checkpoint,
    Compact,
    EntryRefused,
    Fetch,
    Gossip,
    Propose,
    PruneOut,
    PublishOut,
    RaftState,
    SaveCheckpoint,
    SequencerCore,
    Timing,
    encode_prune,
    encode_ranges,
)
from .raft import (
    CorruptStorageError,
    Entry,
    FileStorage,
    HardState,
    Message,
    RaftError,
    Role,
    Snapshot,
)

__all__ = ["Node", "node_timing"]

log = logging.getLogger(__name__)

#: How long one backup fetch may go without bringing bytes before the core decides again.
FETCH_TIMEOUT = 5.0
#: The core's timer wakes at least this often (it also wakes at every deadline it names).
MAX_TIMER_SLEEP = 1.0
MIN_TIMER_SLEEP = 0.0005
#: Disk use in the status is measured at most this often (seconds).
DISK_USE_EVERY = 2.0
#: How long Admin.Prune waits for its entry to be applied here.
PRUNE_TIMEOUT = 10.0
#: Idle input copies and merge readers are looked for this often (seconds).
IDLE_SWEEP_SECONDS = 5.0


def node_timing() -> Timing:
    """The core's timing on a real node (RT_RAFT_KEEP_ENTRIES lowers the Raft entries
    kept after a snapshot, for tests of snapshot installation)."""
    keep = env.settings().raft_keep_entries
    return Timing(compaction_keep=keep) if keep is not None else Timing()


class Node:
    def __init__(self, spec: ClusterSpec, node_id: int, timing: Timing | None = None) -> None:
        self.spec = spec.node(node_id)
        self.cluster = spec
        self.id = node_id
        self.timing = timing or node_timing()
        data = Path(self.spec.data)
        claim_for_cluster(data / "s", spec, f"{self.spec.name}'s volume")
        self.cluster_id = spec.id
        settings = env.settings()
        self.max_streams = settings.max_streams
        self.max_streams_per_publisher = settings.max_streams_per_publisher
        self._max_message_size = settings.max_message_size
        self._scrub_interval = settings.scrub_interval
        self._scrub_rate = settings.scrub_rate
        self.session = session_store(spec).read()
        stale = missed_reset(data, self.session)
        if stale is not None:
            raise MissedResetError(
                f"{self.spec.name} holds data of session {stale}, but the cluster was reset"
                f" to session {self.session} since: it must not rejoin with it. Its supervisor"
                " wipes it when it starts (or GET /softReset on it)"
            )
        self.in_dir, self.out_dir, self.state_dir = data / "s/in", data / "s/out", data / "s/state"
        for directory in (self.in_dir, self.out_dir, self.state_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.state_dir / "checkpoint"
        #: present while the node rejoins after losing its Raft state (abstaining)
        self.rejoin_marker = self.state_dir / "rejoining"
        self.view_changed = Signal()  #: fires when any node's held positions are heard
        self.clients = Clients()  #: publishers and subscribers connected now
        self.traced = TracedBatches(self.spec.name)  #: publishers' batches traced here
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # fetches and archivals under way
        self._storage_queue: asyncio.Queue[SaveCheckpoint | CatchUpOut] = asyncio.Queue()
        self._timer_wake = asyncio.Event()
        self._timer_at = 0.0
        self._saving: asyncio.Future[None] | None = None  # the checkpoint being written
        self._warned: set[str] = set()
        self._disk_use_cache = (0, 0, 0, 0)
        self._disk_use_due = 0.0
        self._pruning = asyncio.Lock()  # one collection of s/out at a time
        self._archiving = asyncio.Lock()  # input files dropped, or one mended, at a time
        self._external: grpc.aio.Server | None = None
        self._peers: grpc.aio.Server | None = None
        self._tls: CAStore | None = None
        self._fatal: Exception | None = None  # what stopped the merge (the core's fatal)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.storage, damaged = self._open_raft_storage()
        if self.storage.initial_state().term == 0 and (damaged or holds_data(self.spec.data)):
            await self._rejoin_above_peers_terms()
        checkpoint = load_checkpoint(self.checkpoint_path)
        out_end = merged_log_end(self.out_dir)  # its newest file read once, torn tail cut
        if checkpoint.out_position and not merged_log_holds(
            self.out_dir, checkpoint.out_position, out_end
        ):
            log.error(
                "the merged log no longer holds whole records up to the checkpoint's end (%d):"
                " it was cut short or damaged; rebuilding it from the Raft log and the peers",
                checkpoint.out_position,
            )
            checkpoint = Checkpoint()
        snapshot = self.storage.snapshot()
        installing = snapshot.index > checkpoint.applied_index
        self.out = MergedLog(
            self.out_dir,
            roll_size=self.cluster.roll_size,
            # A snapshot ahead of the checkpoint (a lost checkpoint) keeps the merged log
            # as it is: it may reach the snapshot's position without the peers.
            position=(out_end or file_start(self.session, 0))
            if installing
            else out_start(checkpoint, self.session),
        )
        self.inputs = InputStore(
            self.in_dir,
            on_write=self._input_written,
            # what the merged log's files can hold, and no more than a message may be
            max_record_size=min(self._max_message_size, self.cluster.roll_size - SEAL_SIZE),
        )
        self.input_files = InputFiles(self.inputs)
        self.core = SequencerCore(
            self.id,
            len(self.cluster.nodes),
            inputs=self.input_files,
            out=self.out,
            checkpoint=checkpoint,
            snapshot=Checkpoint.decode(snapshot.data) if snapshot.data else None,
            now=loop.time(),
            timing=self.timing,
        )
        stored_commit = max(self.storage.initial_state().commit, snapshot.index)
        self._rejoining = self.rejoin_marker.exists()
        self.driver = RaftDriver(
            node_id=self.id,
            peers=tuple(node.id for node in self.cluster.nodes),
            storage=self.storage,
            # A commit index is synced lazily: it may be behind the checkpoint.
            applied=min(checkpoint.applied_index, stored_commit),
            send=self._send_raft,
            deliver=self._raft_ready,
            node_names={node.id: node.name for node in self.cluster.nodes},
            abstain=self._rejoining,
        )
        credentials = self._peer_credentials()
        self.links = {
            peer.id: PeerLink(self.id, peer, self.session, credentials)
            for peer in self.cluster.nodes
            if peer.id != self.id
        }
        self.core.raft_changed(self._raft_state())
        if installing:
            log.info(
                "Raft's snapshot at %d is ahead of the checkpoint: installing it", snapshot.index
            )
            self.core.snapshot(snapshot.data)
        self.metrics = NodeMetrics(self.status, lambda: self.driver.leader_changes)
        self.scrubber = Scrubber(
            self.out_dir,
            lambda: [(link.peer.name, link.channel) for link in self.links.values()],
            self._scrub_interval,
            self._pruning,
            session=lambda: self.session,
            busy=lambda: self.core.installing,
            rate=self._scrub_rate,
            inputs=self.inputs.streams,
            input_lock=self._archiving,
            input_mended=self._input_mended,
        )
        server = await self._serve()
        for link in self.links.values():
            link.start()
        tasks = [
            asyncio.create_task(coroutine, name=name)
            for name, coroutine in [
                ("raft", self.driver.run()),
                ("syncer", self.inputs.run_syncer()),
                ("idle files", self._close_idle_files()),
                ("own-held", self._follow_own_held()),
                ("timer", self._run_timer()),
                ("storage", self._run_storage()),
                ("health", self._serving_once_led()),
                ("scrub", self.scrubber.run()),
            ]
        ]
        stopper = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [task for task in done if task is not stopper]
        await self._shutdown(server, tasks)
        for task in failed:
            task.result()  # a part that stopped on its own is fatal: raise its error
        if self._fatal is not None:
            raise self._fatal

    def _input_mended(self, name: str) -> None:
        """A file of ``name``'s input copy was replaced by a peer's: its writer, which may
        hold the old one open (the copy's newest file, sealed), lets go of it."""
        stream = self.inputs.streams.get(name)
        if stream is not None:
            stream.suspend("mended")

    async def _close_idle_files(self) -> None:
        """Idle input copies and the merge's idle readers let go of their files, so idle
        streams hold no file descriptors."""
        while True:
            await asyncio.sleep(IDLE_SWEEP_SECONDS)
            now = time.monotonic()
            self.inputs.suspend_idle(now)
            self.input_files.close_idle(now)

    async def _serving_once_led(self) -> None:
        """Health turns SERVING once this node knows a leader: only then can the cluster
        merge what is pushed (a fresh cluster elects one within about a second)."""
        while self.driver.leader == NO_LEADER:
            await self.driver.role_changed.wait_for(1.0)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("node %s serving on %s and %s", self.spec.name, self.spec.push, self.spec.pull)
        await asyncio.Event().wait()  # a part of the node: it ends only with the node

    def stop(self) -> None:
        self._stopping.set()

    async def _serve(self) -> grpc.aio.Server:
        # Peers with no listener of their own come to this port, snapshots and all.
        most = MAX_RECEIVED_MESSAGE if self.spec.peer else MAX_PEER_MESSAGE
        server = grpc.aio.server(options=server_options(most))
        access = None
        if self.cluster.publisher_tls:
            if not (self.spec.external and self.cluster.has_tls):
                raise ClusterError(
                    "publisher_tls needs the cluster's TLS material and external ports"
                )
            # no certificate reaches this port, so the access check refuses every push,
            # saying where to push instead
            access = ExternalAccess(self._ca_store())
        push_pb2_grpc.add_PushServicer_to_server(PushService(self, access), server)
        pull_pb2_grpc.add_PullServicer_to_server(PullService(self), server)
        publisher_pb2_grpc.add_SubscriberServicer_to_server(SubscriberService(self), server)
        if not self.spec.peer:  # no listener of their own: peers come to the push port
            peer_pb2_grpc.add_PeerServicer_to_server(PeerService(self), server)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(self), server)
        self._health = health.aio.HealthServicer()
        # The servicer starts as SERVING; this node serves once it knows a leader.
        await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for address in dict.fromkeys((self.spec.push, self.spec.pull)):
            if server.add_insecure_port(env.listen_address(address)) == 0:
                raise OSError(f"cannot listen on {address}")
        await server.start()
        self._external = await self._serve_external()
        self._peers = await self._serve_peers()
        return server

    async def _serve_peers(self) -> grpc.aio.Server | None:
        """The listener for the other nodes, when the cluster names one: Peer, and Admin
        and Pull (a forwarded prune, a merged-log catch-up), over mutual TLS with the
        cluster's CA when it has ``internal_tls``, where only the other nodes get in."""
        if not self.spec.peer:
            return None
        server = grpc.aio.server(options=server_options(MAX_PEER_MESSAGE))
        authenticate = self.cluster.internal_tls
        gate = PeersOnly(self.id, len(self.cluster.nodes)) if authenticate else None
        peer_pb2_grpc.add_PeerServicer_to_server(PeerService(self, gate), server)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(self, gate), server)
        pull_pb2_grpc.add_PullServicer_to_server(PullService(self, gate), server)
        if authenticate:
            store = self._ca_store()
            credentials = server_credentials(store.ca_cert(), *store.server_pair(self.spec.name))
            bound = server.add_secure_port(env.listen_address(self.spec.peer), credentials)
        else:
            bound = server.add_insecure_port(env.listen_address(self.spec.peer))
        if bound == 0:
            raise OSError(f"cannot listen on {self.spec.peer}")
        await server.start()
        log.info(
            "peers' listener on %s (%s)", self.spec.peer, "mutual TLS" if authenticate else "plain"
        )
        return server

    def _ca_store(self) -> CAStore:
        if self._tls is None:
            self._tls = ca_store(self.cluster.tls_dir, self.cluster.tls_secret)
        return self._tls

    def _peer_credentials(self) -> grpc.ChannelCredentials | None:
        """How this node proves itself to its peers: its own pair (internal TLS only)."""
        if not self.cluster.internal_tls:
            return None
        store = self._ca_store()
        return channel_credentials(store.ca_cert(), *store.server_pair(self.spec.name))

    async def _serve_external(self) -> grpc.aio.Server | None:
        """The external push listener (DESIGN section 9): Push alone, mutual TLS with the
        cluster CA, when the cluster names an address for it and keeps TLS material."""
        if not (self.spec.external and self.cluster.has_tls):
            return None
        store = self._ca_store()
        cert, key = store.server_pair(self.spec.name)
        server = grpc.aio.server(options=server_options(MAX_RECEIVED_MESSAGE))
        push_pb2_grpc.add_PushServicer_to_server(PushService(self, ExternalAccess(store)), server)
        credentials = server_credentials(store.ca_cert(), cert, key)
        if server.add_secure_port(env.listen_address(self.spec.external), credentials) == 0:
            raise OSError(f"cannot listen on {self.spec.external}")
        await server.start()
        log.info("external push (mutual TLS) on %s", self.spec.external)
        return server

    async def _shutdown(self, server: grpc.aio.Server, tasks: list[asyncio.Task]) -> None:
        self._stopping.set()  # also when a part failed: nothing new starts from here
        await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        for listener in (self._external, self._peers):
            if listener is not None:
                await listener.stop(grace=0.5)
        await server.stop(grace=0.5)
        for task in [*tasks, *self._tasks]:
            task.cancel()
        for task in [*tasks, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.scrubber.stop()
        for link in self.links.values():
            await link.close()
        if self._saving is not None:
            with contextlib.suppress(Exception):
                await self._saving
        checkpoint = self.core.checkpoint()
        if checkpoint is not None and checkpoint.applied_index > self.core.saved.applied_index:
            with contextlib.suppress(Exception):
                await self._save_checkpoint(checkpoint)
        self.input_files.close()
        self.out.close()
        self.inputs.close()
        self.storage.close()

    def _open_raft_storage(self) -> tuple[FileStorage, bool]:
        """Raft's storage, and whether it was damaged: a damaged one (a garbage hard
        state, a bad record before the stored commit) is moved aside to ``raft.damaged``
        for a post-mortem, and the node starts as one that lost its Raft state: it
        rejoins from its peers (it may have voted, whether or not it holds data)."""
        directory = self.state_dir / "raft"
        try:
            return FileStorage(directory), False
        except CorruptStorageError as exc:
            aside = self.state_dir / "raft.damaged"
            log.error("Raft's storage is damaged (%s): moved to %s, rejoining", exc, aside.name)
            shutil.rmtree(aside, ignore_errors=True)
            directory.rename(aside)
            fsync_directory(self.state_dir)
            return FileStorage(directory), True

    async def _rejoin_above_peers_terms(self) -> None:
        """This node lost its Raft state (deleted by hand, by a soft reset, or moved aside
        as damaged) but ran before, so it may have voted in a recent term. A leader
        elected with that vote had it from a quorum, so all but ``quorum - 1`` of the
        peers know its term: the node waits for ``n - quorum + 1`` peers to tell their
        terms, then starts above them all, with no vote, so it never votes twice in one
        term. It then catches up from the leader (entries, or a snapshot) like a node far
        behind, abstaining from votes and campaigns until it does."""
        nodes = len(self.cluster.nodes)
        needed = nodes - quorum(nodes) + 1
        peers = [peer for peer in self.cluster.nodes if peer.id != self.id]
        terms: dict[int, int] = {}
        waited = 0.0
        while len(terms) < min(needed, len(peers)):
            for peer in peers:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    terms[peer.id] = (await node_status(peer.push, timeout=1.0)).term
            if len(terms) < min(needed, len(peers)):
                if waited % 10 == 0:
                    log.warning(
                        "%s lost its Raft state: waiting for %d peer(s) to tell their terms"
                        " (%d answered)",
                        self.spec.name,
                        needed,
                        len(terms),
                    )
                await asyncio.sleep(1.0)
                waited += 1
        term = max(terms.values(), default=0) + 1
        # It may have acknowledged entries it no longer holds: until it holds them again
        # (raft.Config.abstain) it gives no vote, across restarts too.
        write_file_atomically(self.rejoin_marker, b"%d\n" % term)
        self.storage.save(HardState(term=term), [], must_sync=True)
        log.warning(
            "%s holds data but no Raft state: rejoining at term %d, above the %d peer(s)"
            " that answered",
            self.spec.name,
            term,
            len(terms),
        )

    # -- events into the core ------------------------------------------------------------

    def _raft_state(self) -> RaftState:
        driver = self.driver
        return RaftState(
            role=driver.role,
            term=driver.term,
            leader=driver.leader,
            last_index=driver.last_index,
            first_index=driver.first_index,
        )

    def _now(self) -> None:
        """Stamp the events that follow with the loop's time."""
        self.core.advance(asyncio.get_running_loop().time())

    def _raft_ready(self, entries: list[Entry], snapshot: Snapshot | None) -> None:
        if (
            self._rejoining
            and not self.driver.abstaining
            # the entries that ended it are on disk (a Ready is delivered after its save,
            # but a compaction delivers too, with entries maybe not saved yet)
            and self.storage.last_index() >= self.driver.commit_index
        ):
            self._rejoining = False
            self.rejoin_marker.unlink(missing_ok=True)
            log.info("%s caught up with the leader after rejoining: it votes again", self.spec.name)
        self._now()
        core = self.core
        if snapshot is not None:
            core.snapshot(snapshot.data)
        if entries:
            core.committed(entries)
        core.raft_changed(self._raft_state())
        self._pump()

    def _input_written(self, stream: str) -> None:
        self._now()
        self.core.input_written(stream)
        self._pump()

    def step_raft(self, message: Message) -> None:
        """A Raft message from a peer (the Peer service's Raft); an append waits until
        this node holds the bytes it names (``SequencerCore.appends``)."""
        for ready in self.core.appends.offer(message):
            self.driver.step(ready)

    def quorum_held(self, stream: str) -> int:
        """Where a quorum of nodes holds ``stream``, as far as this node knows."""
        return self.core.view.quorum_held(stream)

    @property
    def node_count(self) -> int:
        return len(self.cluster.nodes)

    def status(self) -> admin_pb2.NodeStatus:
        """This node's status (the Admin service's Status; ``rt status`` shows it)."""
        driver, merger, out = self.driver, self.core.merger, self.out
        input_bytes, output_bytes, free, total = self._disk_use()
        return admin_pb2.NodeStatus(
            node=self.spec.name,
            session=self.session,
            input_bytes=input_bytes,
            output_bytes=output_bytes,
            disk_free=free,
            disk_total=total,
            pruned_before=merger.pruned_before,
            clients=self.clients.describe(),
            role=driver.role.value,
            term=driver.term,
            leader=driver.leader,
            commit_index=driver.commit_index,
            applied_index=merger.applied_index,
            out_position=out.written_position,
            out_start=out.first_position,
            streams=[
                admin_pb2.StreamStatus(
                    stream=name,
                    held=stream.held,
                    merged=merger.merged.get(name, 0),
                    topic=stream.topic or "",
                    records_in=stream.mirror.records_written,
                    records_merged=merger.records_merged.get(name, 0),
                )
                for name, stream in sorted(self.inputs.streams.items())
            ],
            bytes_merged=merger.bytes_merged,
            dedup=[
                admin_pb2.DedupStatus(
                    topic=topic,
                    origin=origin,
                    watermark=watermark,
                    dropped=merger.dropped.get(topic, {}).get(origin, 0),
                )
                for topic, marks in sorted(merger.watermarks.items())
                for origin, watermark in sorted(marks.items())
            ],
        )

    def _snapshot_stored(self, done: asyncio.Future[bool], action: Compact) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # the driver failed: the node stops
        self._now()
        if done.result():
            self.core.snapshot_stored(action.checkpoint)
        else:
            self.core.snapshot_refused(action.checkpoint)
        self._pump()

    def _archive(self, action: Archive) -> None:
        """Every node is done with ``action.stream`` before ``action.position``: drop this
        copy's whole files before it (in a worker thread) and tell the publisher."""
        stream = self.inputs.streams.get(action.stream)
        if stream is not None:
            self._start_task(self._drop_input(stream, action), f"archive {action.stream}")

    async def _drop_input(self, stream: InputStream, action: Archive) -> None:
        try:
            async with self._archiving:
                freed = await asyncio.to_thread(stream.drop_files_before, action.position)
        except OSError as exc:
            log.warning("archiving %s before %d: %s", action.stream, action.position, exc)
            self.core.archive_failed(action.stream)
            return
        stream.mark_archived(action.position)
        if freed:
            log.info("archived %s before %d (%d bytes)", action.stream, action.position, freed)

    @property
    def pruned_before(self) -> int:
        """The cluster's retention point, as far as this node has applied."""
        return self.core.merger.pruned_before

    @property
    def collected_before(self) -> int:
        """This node's merged log is collected before this position (the retention
        point, held back to the stored snapshot's end)."""
        return self.core.collected_before

    async def prune(self, before: int, *, forwarded: bool = False) -> int:
        """Collect the merged log before ``before`` on every node (Admin.Prune): the
        leader proposes a Prune entry and answers once it applied it; a follower passes
        the request on to the leader. Returns the retention point then."""
        if before <= self.pruned_before:
            return self.pruned_before
        driver = self.driver
        if driver.role is not Role.LEADER:
            leader = driver.leader
            if forwarded or leader == NO_LEADER or leader not in self.links:
                raise PruneUnavailableError("no leader is known now; try again")
            stub = admin_pb2_grpc.AdminStub(self.links[leader].channel)
            request = admin_pb2.PruneRequest(before=before, forwarded=True)
            reply = await stub.Prune(request, timeout=PRUNE_TIMEOUT)
            return reply.pruned_before
        try:
            accepted = await driver.propose(encode_prune(before))
        except RaftError as exc:
            raise PruneUnavailableError(f"the prune was not proposed: {exc}") from exc
        if accepted is None:
            raise PruneUnavailableError("the prune was not proposed: leadership changed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PRUNE_TIMEOUT
        while self.core.applied_index < accepted.last_index:
            if loop.time() >= deadline:
                raise PruneUnavailableError(
                    f"the prune (entry {accepted.last_index}) was not applied within"
                    f" {PRUNE_TIMEOUT:.0f} s"
                )
            await self.out.appended.wait_for(0.5)
        if self.pruned_before < min(before, self.out.position):
            # Another entry took its index (leadership changed before it committed).
            raise PruneUnavailableError("the prune was lost to a change of leader; try again")
        return self.pruned_before

    async def _prune_out(self, before: int) -> None:
        """Carry out a PruneOut: collect s/out's rolled files wholly before ``before``."""
        async with self._pruning:
            try:
                emptied = await asyncio.to_thread(archive_log_files, self.out_dir, before)
            except OSError as exc:  # asked again at the next restart
                log.warning("collecting the merged log before %d: %s", before, exc)
                return
        if emptied:
            log.info("collected %d merged-log file(s) before %d", len(emptied), before)

    def _disk_use(self) -> tuple[int, int, int, int]:
        """Bytes of input copies and of merged log, free and total bytes of the volume's
        file system; the folders are walked at most every ``DISK_USE_EVERY`` seconds, as
        consoles ask for the status every second."""
        now = time.monotonic()
        if now >= self._disk_use_due:
            usage = shutil.disk_usage(self.spec.data)
            inputs, out = folder_bytes(self.in_dir), folder_bytes(self.out_dir)
            self._disk_use_cache = (inputs, out, usage.free, usage.total)
            self._disk_use_due = now + DISK_USE_EVERY
        return self._disk_use_cache

    def on_gossip(
        self, node: int, held: dict[str, int], topics: dict[str, str], done: dict[str, int]
    ) -> None:
        """A peer's held and done positions (the Peer service's Gossip)."""
        self._now()
        self.core.held(node, held, topics, done)
        self.view_changed.fire()
        self._pump()

    def heard_protocol(self, node: int, protocol: int) -> None:
        """Peer ``node`` speaks peer protocol ``protocol`` (its gossip says): what this
        node sends it from now on is in that form."""
        link = self.links.get(node)
        if link is not None and link.protocol != protocol:
            log.info("node %d speaks peer protocol %d", node, protocol)
            link.protocol = protocol

    async def _follow_own_held(self) -> None:
        while True:
            self._now()
            held = self.inputs.held()
            self.core.held(self.id, held, self.inputs.topics())
            if self.traced:
                self.traced.held(held)
            self.view_changed.fire()
            self._pump()
            await self.inputs.changed.wait_for(MAX_TIMER_SLEEP)

    async def _run_timer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._timer_at = min(self.core.next_deadline(), loop.time() + MAX_TIMER_SLEEP)
            # Always a real wait, however short: a deadline the core names in the past
            # must not spin the loop that serves everything else.
            delay = max(MIN_TIMER_SLEEP, self._timer_at - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timer_wake.wait()
            self._timer_wake.clear()
            self.core.tick(loop.time())
            self._pump()

    # -- the core's actions --------------------------------------------------------------

    def _pump(self) -> None:
        """Carry out what the core asks for, then wake its timer if it wants it sooner."""
        core = self.core
        if self._stopping.is_set():
            return  # shutting down: nothing new starts
        if core.fatal is not None:
            log.critical(
                "%s: stopping without a checkpoint, to go on from the last one", core.fatal
            )
            self._fatal = core.fatal
            self._stopping.set()
            return
        while core.view.conflicts:
            self._warn_once(f"topic conflict: {core.view.conflicts.popleft()}")
        for append in core.appends.release():  # held or merged positions may have moved
            self.driver.step(append)
        publish = False
        while actions := core.take_actions():
            for action in actions:
                if isinstance(action, PublishOut):
                    publish = True
                else:
                    self._act(action)
        if publish:
            self.out.publish()
            if self.traced:
                self.traced.merged(core.merger.merged, core.merger.applied_index)
        if core.next_deadline() < self._timer_at:
            self._timer_wake.set()

    def _act(self, action: Action) -> None:
        if isinstance(action, Gossip):
            self.links[action.peer].send_gossip(action.held, action.topics, action.done)
        elif isinstance(action, Propose):
            if self.traced:
                self.traced.proposed({r.stream: r.end for r in action.ranges})
            future = self.driver.propose(encode_ranges(action.ranges))
            future.add_done_callback(self._proposal_done)
        elif isinstance(action, Fetch):
            self._start_task(self._fetch(action), f"fetch {action.stream}")
        elif isinstance(action, SaveCheckpoint | CatchUpOut):
            self._storage_queue.put_nowait(action)
        elif isinstance(action, Compact):
            stored = self.driver.compact(action.index, action.checkpoint.encode(), action.keep)
            stored.add_done_callback(lambda done: self._snapshot_stored(done, action))
        elif isinstance(action, Archive):
            self._archive(action)
        elif isinstance(action, PruneOut):
            self._start_task(self._prune_out(action.before), "collect s/out")
        elif isinstance(action, EntryRefused):
            log.error("Raft entry %d skipped, as on every node: %s", action.index, action.reason)
        elif isinstance(action, ApplyStalled):
            log.error(
                "Raft entry %d waits: %s (tried again every %.1f s for %.0f s, then this"
                " node stops and starts afresh)",
                action.index,
                action.reason,
                self.timing.apply_retry,
                self.timing.apply_stall_limit,
            )
            if action.stream:  # damaged bytes there are mended from a peer's copy
                self.scrubber.check_input_soon(action.stream)
        else:
            raise TypeError(f"unknown action {action!r}")

    def _warn_once(self, message: str) -> None:
        """Log a warning the first time it comes (the same trouble recurs every keepalive
        or fetch retry); later ones at debug level."""
        if message in self._warned:
            log.debug("%s", message)
        elif len(self._warned) < 1000:
            self._warned.add(message)
            log.warning("%s", message)

    def _start_task(self, coroutine, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _proposal_done(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.info("proposal refused: %s", error)
        self._now()
        self.core.proposed(None if error is not None else future.result())
        self._pump()

    def _send_raft(self, peer: int, message: Message) -> None:
        link = self.links.get(peer)
        if link is not None:
            link.send_raft(message)

    async def _fetch(self, action: Fetch) -> None:
        """The backup path: copy a stream's input from a peer, up to the target."""
        try:
            stream = self.inputs.open(action.stream, action.topic)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(FETCH_TIMEOUT) as deadline:
                fetched = self.links[action.peer].fetch(action.stream, stream.written)
                async with contextlib.aclosing(fetched) as chunks:
                    async for chunk in chunks:
                        stream.write(chunk)
                        if stream.written >= action.target:
                            break
                        if chunk.data:
                            # A fetch goes on while bytes come: one cut off at a fixed
                            # time would begin a long record again each time, from its
                            # start, and might never get to its end.
                            deadline.reschedule(loop.time() + FETCH_TIMEOUT)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            log.info("fetch of %s from node %d: %s", action.stream, action.peer, exc)
        except Exception as exc:  # a refused chunk, a topic conflict, a disk error
            self._warn_once(f"fetch of {action.stream} from node {action.peer} failed: {exc}")
        finally:
            self._now()
            self.core.fetch_ended(action.stream)
            self._pump()

    # -- checkpoints and snapshot installs: one at a time --------------------------------

    async def _run_storage(self) -> None:
        while True:
            action = await self._storage_queue.get()
            if isinstance(action, SaveCheckpoint):
                # A shutdown waits for a save under way rather than cutting it short.
                self._saving = asyncio.ensure_future(self._save_checkpoint(action.checkpoint))
                await asyncio.shield(self._saving)
                self._now()
                self.core.checkpoint_saved(action.checkpoint)
            elif self.core.install_target == action.target:
                if await self._catch_up_out(action.target):
                    self._now()
                    self.core.out_caught_up(action.target, self.out)
                else:
                    await self._install_newer(action)
            self._pump()

    async def _save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Sync the merged log, then record how far it goes."""
        await self.out.sync()
        await asyncio.to_thread(write_file_atomically, self.checkpoint_path, checkpoint.encode())

    async def _install_newer(self, action: CatchUpOut) -> None:
        """Every peer collected past the snapshot's merged-log end: install the newest of
        the peers' stored snapshots instead (each peer collects only before its own, so
        it can serve it), or try the catch-up again a little later."""
        replies = await asyncio.gather(
            *(link.snapshot(timeout=5.0) for link in self.links.values()), return_exceptions=True
        )
        found = [reply for reply in replies if isinstance(reply, tuple) and reply[0]]
        newest = max(found, default=(0, b""))
        self._now()
        if newest[0] and self.core.install_newer(newest[1]):
            log.warning(
                "every peer collected its merged log past %d: installing a newer snapshot, at %d",
                action.target,
                newest[0],
            )
            return
        await asyncio.sleep(1.0)
        self._storage_queue.put_nowait(action)

    async def file_digest(self, position: int, stream: str = "") -> peer_pb2.FileDigestReply:
        """The digest of a sealed file of the merged log (or of ``stream``'s input copy),
        for a peer's scrubber (Peer.FileDigest)."""
        return await self.scrubber.digest(position, stream)

    def stored_snapshot(self) -> tuple[int, bytes]:
        """Raft's stored snapshot (the Peer service's Snapshot): its index and data."""
        snapshot = self.storage.snapshot()
        return snapshot.index, snapshot.data

    async def _catch_up_out(self, target: int) -> bool:
        """Bring the merged log to ``target``, from its own files first, then following
        one peer after another, and reopen it there. False (the log left closed) when
        every peer collected its merged log past ``target``."""
        log.info("installing a snapshot: the merged log goes to %d", target)
        self.out.close()
        peers = list(self.links.values())
        mirror = LogMirror(self.out_dir, sync=SyncPolicy.NONE)
        collected_past = 0  # peers in a row that collected past the target
        try:

            def pull_from(index: int) -> AsyncIterator[common_pb2.LogChunk]:
                stub = pull_pb2_grpc.PullStub(peers[index].channel)
                return cancelling(
                    stub.Pull(pull_pb2.PullRequest(position=mirror.end or 0, pieces=True))
                )

            def write(chunk: common_pb2.LogChunk) -> bool:
                nonlocal mirror
                before = mirror.end
                if chunk.collected:  # the peer collected what this log still lacks
                    if chunk.position > target:
                        # It collected past this snapshot's end (its own snapshot is newer):
                        # the peer whose snapshot this is, or a newer snapshot, will do.
                        raise CollectedPastTargetError(
                            f"it collected its merged log up to {chunk.position}, past the"
                            f" snapshot's end {target}"
                        )
                    log.info("the merged log goes on at %d, past collected files", chunk.position)
                    mirror.close()
                    collect_copy(self.out_dir, chunk.position)
                    mirror = LogMirror(self.out_dir, sync=SyncPolicy.NONE)
                mirror.write(Chunk(chunk.position, chunk.data, chunk.sealed))
                return mirror.end != before

            def on_break(index: int, error: BaseException, progressed: bool, delay: float) -> None:
                nonlocal collected_past
                if isinstance(error, OSError):
                    raise error  # this node's disk: no peer mends that
                log.warning("catching up the merged log from %s: %s", peers[index].peer.name, error)
                collected_past = 0 if progressed else collected_past
                if isinstance(error, CollectedPastTargetError):
                    collected_past += 1
                    if collected_past >= len(peers):
                        raise error

            if peers:
                try:
                    await follow(
                        FailoverPolicy(len(peers)),
                        pull_from,
                        write,
                        done=lambda: (mirror.end or 0) >= target,
                        on_break=on_break,
                        silence=SILENT_AFTER,
                    )
                except CollectedPastTargetError:
                    return False
            mirror.sync()  # the checkpoint that follows says these bytes are on disk
        finally:
            mirror.close()
        self.out = MergedLog(self.out_dir, roll_size=self.cluster.roll_size, position=target)
        return True


class CollectedPastTargetError(Exception):
    """A peer serving a snapshot install collected past the snapshot's end."""


def run_node(spec: ClusterSpec, node_id: int) -> None:
    node = Node(spec, node_id)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, node.stop)
        await node.run()

    asyncio.run(main())
