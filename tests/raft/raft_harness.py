"""Interaction harness for the scripted Raft tests (tests/raft/scripts/*.txt).

What it owns: the script format and :class:`InteractionEnv`, which runs script commands
against real RaftNodes on MemoryStorage and returns what happened as text.

A script is a sequence of blocks separated by blank lines. Each block is optional
``#`` comment lines, one command line, a ``----`` line and the expected output::

    # Node 1 wins the election.
    campaign 1
    ----
    1 became pre-candidate at term 0

Commands (node ids are 1..N):

    add-nodes N [prevote=B] [checkquorum=B] [election=T] [heartbeat=T]
                [inflight=K] [max-msg-bytes=K] [forward=B]
    campaign ID                   start an election on ID
    propose ID DATA...            propose one entry, or a batch of several
    tick ID [xK]                  tick ID K times (default 1)
    tick-heartbeat ID             tick ID heartbeat-timeout times
    tick-election ID              tick ID until its election timeout fires
                                  (a leader: one election timeout, for check-quorum)
    process-ready ID...           handle one Ready on each ID (persist, queue messages, apply)
    deliver-msgs ID... [drop=B]   step (or drop) every message queued for each ID
    stabilize [ID...]             alternate process-ready and deliver-msgs until quiet
    partition G | G ...           cut all links between groups (messages dropped on delivery)
    heal                          restore all links
    crash ID                      lose ID's memory and queued messages (storage survives);
                                  messages sent to a crashed node are lost
    restart ID                    start ID again from its storage
    compact ID INDEX              snapshot ID's application at INDEX and compact its log
    log ID                        ID's stored hard state, snapshot and entries
    status ID                     ID's role and indexes, and its view of peers if leader
    raft-state                    one line per node

Events the core reports (role changes, votes, snapshots) appear in the output where
they happen. Set RT_REWRITE=1 to re-record the expected output of every block.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rt_sequencer.raft import (
    Config,
    Entry,
    MemoryStorage,
    Message,
    ProposalDroppedError,
    RaftNode,
    format_entry,
    format_message,
    format_ready,
)


@dataclass
class Block:
    comments: list[str]
    command: str
    expected: list[str]


def parse_script(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    position = 0
    while position < len(lines):
        while position < len(lines) and not lines[position].strip():
            position += 1
        if position >= len(lines):
            break
        comments = []
        while lines[position].startswith("#"):
            comments.append(lines[position])
            position += 1
        command = lines[position]
        position += 1
        if position >= len(lines) or lines[position] != "----":
            raise ValueError(f"line {position + 1}: expected ---- after {command!r}")
        position += 1
        expected = []
        while position < len(lines) and lines[position].strip():
            expected.append(lines[position])
            position += 1
        blocks.append(Block(comments, command, expected))
    return blocks


def render_script(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        parts.append("\n".join([*block.comments, block.command, "----", *block.expected]))
    return "\n\n".join(parts) + "\n"


@dataclass
class _Machine:
    """One node with the state that survives it (storage) and its application."""

    storage: MemoryStorage = field(default_factory=MemoryStorage)
    node: RaftNode | None = None
    applied: list[bytes] = field(default_factory=list)


class InteractionEnv:
    def __init__(self) -> None:
        self.machines: dict[int, _Machine] = {}
        self.inbox: dict[int, list[Message]] = {}
        self.cut: set[tuple[int, int]] = set()
        self.options: dict[str, str] = {}
        self.output: list[str] = []
        self._indent = ""

    # -- plumbing ------------------------------------------------------------------------

    def run(self, command: str) -> list[str]:
        self.output = []
        self._indent = ""
        words = command.split()
        handler = getattr(self, "cmd_" + words[0].replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {words[0]!r}")
        handler(words[1:])
        return self.output or ["ok"]

    def _say(self, line: str) -> None:
        self.output.append(self._indent + line)

    def _node(self, node_id: int) -> RaftNode:
        node = self.machines[node_id].node
        if node is None:
            raise ValueError(f"node {node_id} is crashed")
        return node

    def _start(self, node_id: int) -> None:
        options = self.options
        peers = tuple(sorted(self.machines))
        machine = self.machines[node_id]
        machine.node = RaftNode(
            Config(
                node_id=node_id,
                peers=peers,
                rng=random.Random(node_id),
                election_tick=int(options.get("election", 10)),
                heartbeat_tick=int(options.get("heartbeat", 1)),
                pre_vote=options.get("prevote", "true") == "true",
                check_quorum=options.get("checkquorum", "true") == "true",
                max_inflight=int(options.get("inflight", 256)),
                max_size_per_msg=int(options.get("max-msg-bytes", 1 << 20)),
                forward_proposals=options.get("forward", "true") == "true",
                on_event=self._say,
            ),
            machine.storage,
        )
        snapshot = machine.storage.snapshot()
        machine.applied = [line for line in snapshot.data.split(b"\n") if line]

    @staticmethod
    def _ids(words: list[str]) -> list[int]:
        return [int(word) for word in words if "=" not in word]

    @staticmethod
    def _flags(words: list[str]) -> dict[str, str]:
        return dict(word.split("=", 1) for word in words if "=" in word)

    # -- commands ------------------------------------------------------------------------

    def cmd_add_nodes(self, words: list[str]) -> None:
        count = int(words[0])
        self.options = self._flags(words[1:])
        for node_id in range(1, count + 1):
            self.machines[node_id] = _Machine()
            self.inbox[node_id] = []
        for node_id in self.machines:
            self._start(node_id)

    def cmd_campaign(self, words: list[str]) -> None:
        self._node(int(words[0])).campaign()

    def cmd_propose(self, words: list[str]) -> None:
        node = self._node(int(words[0]))
        data = [word.encode() for word in words[1:]]
        try:
            accepted = node.propose(data[0]) if len(data) == 1 else node.propose_batch(data)
        except ProposalDroppedError as error:
            self._say(f"refused: {type(error).__name__}: {error}")
            return
        if accepted is None:
            self._say(f"forwarded to {node.leader_id}")
        else:
            self._say(
                f"appended at term {accepted.term}, "
                f"index {accepted.first_index}..{accepted.last_index}"
            )

    def cmd_tick(self, words: list[str]) -> None:
        node = self._node(int(words[0]))
        times = int(words[1][1:]) if len(words) > 1 else 1
        for _ in range(times):
            node.tick()

    def cmd_tick_heartbeat(self, words: list[str]) -> None:
        node = self._node(int(words[0]))
        for _ in range(int(self.options.get("heartbeat", 1))):
            node.tick()

    def cmd_tick_election(self, words: list[str]) -> None:
        node = self._node(int(words[0]))
        raft = node._raft  # the harness may look inside: it needs the drawn timeout
        if node.role.value == "leader":
            remaining = raft.election_timeout - raft.election_elapsed
        else:
            remaining = raft.randomized_election_timeout - raft.election_elapsed
        for _ in range(max(remaining, 1)):
            node.tick()

    def cmd_process_ready(self, words: list[str]) -> None:
        ids = self._ids(words)
        for node_id in ids:
            self._with_header(len(ids) > 1, f"> {node_id} handling Ready")
            self._process_ready(node_id)
        self._indent = ""

    def _with_header(self, wanted: bool, header: str) -> None:
        if wanted:
            self._indent = ""
            self._say(header)
            self._indent = "  "

    def _process_ready(self, node_id: int) -> bool:
        machine = self.machines[node_id]
        node = machine.node
        if node is None or not node.has_ready():
            return False
        ready = node.ready()
        for line in format_ready(ready):
            self._say(line)
        machine.storage.save(ready.hard_state, ready.entries, ready.snapshot)
        for message in ready.messages:
            # A crashed node's network endpoint is gone: nothing queues up for it.
            if self.machines[message.dst].node is not None:
                self.inbox[message.dst].append(message)
        if ready.snapshot is not None:
            machine.applied = [line for line in ready.snapshot.data.split(b"\n") if line]
        machine.applied.extend(e.data for e in ready.committed_entries if e.data)
        node.advance(ready)
        return True

    def cmd_deliver_msgs(self, words: list[str]) -> None:
        drop = self._flags(words).get("drop") == "true"
        ids = self._ids(words)
        for node_id in ids:
            if self.inbox[node_id]:
                self._with_header(len(ids) > 1, f"> {node_id} receiving messages")
                self._deliver(node_id, drop)
        self._indent = ""

    def _deliver(self, node_id: int, drop: bool = False) -> bool:
        messages = self.inbox[node_id]
        if not messages:
            return False
        self.inbox[node_id] = []
        node = self.machines[node_id].node
        for message in messages:
            if drop or node is None or (message.src, node_id) in self.cut:
                self._say(f"dropped: {format_message(message)}")
                continue
            self._say(format_message(message))
            node.step(message)
        return True

    def cmd_stabilize(self, words: list[str]) -> None:
        ids = self._ids(words) or sorted(self.machines)
        active = True
        while active:
            active = False
            for node_id in ids:
                machine = self.machines[node_id]
                if machine.node is not None and machine.node.has_ready():
                    self._with_header(True, f"> {node_id} handling Ready")
                    self._process_ready(node_id)
                    active = True
            for node_id in ids:
                if self.inbox[node_id]:
                    self._with_header(True, f"> {node_id} receiving messages")
                    self._deliver(node_id)
                    active = True
        self._indent = ""

    def cmd_partition(self, words: list[str]) -> None:
        groups = [[int(w) for w in part.split()] for part in " ".join(words).split("|")]
        for group in groups:
            for other in groups:
                if other is not group:
                    self.cut.update((src, dst) for src in group for dst in other)

    def cmd_heal(self, words: list[str]) -> None:
        self.cut.clear()

    def cmd_crash(self, words: list[str]) -> None:
        node_id = int(words[0])
        self.machines[node_id].node = None
        self.inbox[node_id] = []

    def cmd_restart(self, words: list[str]) -> None:
        self._start(int(words[0]))

    def cmd_compact(self, words: list[str]) -> None:
        node_id, index = int(words[0]), int(words[1])
        machine = self.machines[node_id]
        node = self._node(node_id)
        if index > node.applied_index:
            raise ValueError(f"node {node_id} has applied only {node.applied_index}")
        # Applied entries are data lines; no-ops carry none, so count through the log.
        state = _application_state(machine, index)
        machine.storage.create_snapshot(index, b"\n".join(state))
        machine.storage.compact(index)
        self.cmd_log(words[:1])

    def cmd_log(self, words: list[str]) -> None:
        storage = self.machines[int(words[0])].storage
        hard = storage.initial_state()
        self._say(f"HardState Term:{hard.term} Vote:{hard.vote} Commit:{hard.commit}")
        snapshot = storage.snapshot()
        if snapshot.index:
            self._say(f"Snapshot Index:{snapshot.index} Term:{snapshot.term}")
        first, last = storage.first_index(), storage.last_index()
        for entry in storage.entries(first, last + 1) if last >= first else []:
            self._say(format_entry(entry))

    def cmd_status(self, words: list[str]) -> None:
        node_id = int(words[0])
        status = self._node(node_id).status()
        applied = b",".join(self.machines[node_id].applied).decode()
        self._say(
            f"{node_id}: {status.role.value} term={status.term} lead={status.leader_id} "
            f"commit={status.commit} applied={status.applied} "
            f"log={status.first_index}..{status.last_index} state=[{applied}]"
        )
        for peer in status.peers:
            paused = " paused" if peer.paused else ""
            self._say(
                f"  peer {peer.peer}: {peer.state.value} match={peer.match} next={peer.next} "
                f"inflight={peer.inflight}{paused}"
            )

    def cmd_raft_state(self, words: list[str]) -> None:
        for node_id, machine in sorted(self.machines.items()):
            node = machine.node
            if node is None:
                self._say(f"{node_id}: crashed")
            else:
                self._say(
                    f"{node_id}: {node.role.value} term={node.term} lead={node.leader_id} "
                    f"commit={node.commit_index} last={node.last_index}"
                )


def _application_state(machine: _Machine, index: int) -> list[bytes]:
    """The application state (data of applied entries) as of log index ``index``."""
    storage = machine.storage
    snapshot = storage.snapshot()
    state = [line for line in snapshot.data.split(b"\n") if line]
    if index > snapshot.index:
        entries: list[Entry] = storage.entries(snapshot.index + 1, index + 1)
        state.extend(e.data for e in entries if e.data)
    return state
