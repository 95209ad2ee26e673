"""The sequencer on its own: real rt-sequencer processes, real gRPC, raw push and pull.

These tests drive the node's wire contracts directly (push.proto, pull.proto),
so they check the cluster's promises without the client library: merged logs
byte-identical on every node, each stream's records once and in order, the
backup path, dedup, restarts and leader loss, and clear errors for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import rt
from rt_sequencer._peers import PEER_PROTOCOL
from rt_sequencer._peers import encode_message as encode_raft_message
from rt_sequencer.core import Range, encode_ranges, raft_id
from rt_sequencer.raft import Entry, Message, MessageType
from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.log import (
    Chunk,
    Codec,
    LogReader,
    LogWriter,
    encode_message,
    file_is_sealed,
    file_name,
    file_start,
    list_log_files,
    read_log,
    scan,
)
from rtproto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    peer_pb2,
    peer_pb2_grpc,
    pull_pb2,
    pull_pb2_grpc,
    push_pb2,
    push_pb2_grpc,
)

BIN = Path(sys.executable).parent
ROLL = 64 << 10
OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class Nodes:
    """rt-sequencer processes of one cluster, started and stopped by hand."""

    def __init__(
        self, root: Path, count: int, base: int, roll_size: int = ROLL, peer_ports: bool = False
    ) -> None:
        """``peer_ports``: the nodes listen for each other on ports of their own (plain
        text), not on their push ports."""
        self.root = root
        self.spec = ClusterSpec(
            nodes=tuple(
                NodeSpec(
                    id=i,
                    name=f"node-{i}",
                    push=f"127.0.0.1:{base + 2 + 10 * i}",
                    pull=f"127.0.0.1:{base + 1 + 10 * i}",
                    peer=f"127.0.0.1:{base + 3 + 10 * i}" if peer_ports else "",
                    rest="",
                    data=str(root / f"node-{i}"),
                )
                for i in range(count)
            ),
            roll_size=roll_size,
        )
        self.path = root / "cluster.json"
        self.spec.to_file(self.path)
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, i: int, wait: bool = True) -> None:
        log = open(self.root / f"node-{i}.log", "ab")  # noqa: SIM115 (the process owns it)
        self.procs[i] = subprocess.Popen(
            [BIN / "rt-sequencer", "--cluster", self.path, "--node", str(i)], stderr=log
        )
        if wait:
            self.wait_serving(i)

    def wait_serving(self, i: int) -> None:
        """Until node ``i`` serves: it knows a leader, so a quorum of nodes is up."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.procs[i].poll() is None, self.log(i)
            try:
                with grpc.insecure_channel(self.spec.nodes[i].push) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"node {i} did not start")

    def log(self, i: int) -> str:
        """What node ``i``'s processes logged (each of its lives)."""
        return (self.root / f"node-{i}.log").read_text(errors="replace")

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        self.procs[i].send_signal(sig)
        self.procs[i].wait(30)

    def status(self, i: int) -> admin_pb2.NodeStatus:
        with grpc.insecure_channel(self.spec.nodes[i].push) as channel:
            return admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=5)

    def out(self, i: int) -> Path:
        return self.root / f"node-{i}" / "s" / "out"

    def wait_merged(self, count: int, nodes=None, timeout: float = 60) -> None:
        """Until each node's merged log holds ``count`` records."""
        for i in nodes if nodes is not None else self.procs:
            deadline = time.monotonic() + timeout
            while len(read_log(self.out(i))) < count:
                assert time.monotonic() < deadline, f"node {i} merged too little"
                time.sleep(0.1)

    def wait_alike(self, timeout: float = 30) -> None:
        """Until every node's merged log ends at the same position."""
        deadline = time.monotonic() + timeout
        while len({self.status(i).out_position for i in self.procs}) != 1:
            assert time.monotonic() < deadline, "the merged logs do not end alike"
            time.sleep(0.1)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def nodes(tmp_path, free_base_port):
    started = []

    def make(count: int, roll_size: int = ROLL, peer_ports: bool = False) -> Nodes:
        cluster = Nodes(tmp_path, count, free_base_port(), roll_size, peer_ports)
        for i in range(count):
            cluster.start(i, wait=False)
        for i in range(count):
            cluster.wait_serving(i)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop_all()


def write_publisher_log(directory: Path, origin: str, ids, *, size: int = 80) -> None:
    with LogWriter(directory, roll_size=ROLL) as writer:
        for i in ids:
            payload = origin.encode() + b"-%d-" % i + b"x" * size
            writer.append(encode_message(payload, origin=origin, ts=i, id=i, codec=Codec.RAW))


async def push(
    address: str,
    stream: str,
    directory: Path,
    start_at: int | None = None,
    topic: str = "",
) -> int:
    """Push a publisher log to one node until the node holds all of it; return its end."""
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        queue: asyncio.Queue = asyncio.Queue()

        async def requests():
            opening = push_pb2.PushOpen(stream=stream, topic=topic, publisher="test")
            yield push_pb2.PushRequest(open=opening)
            while (item := await queue.get()) is not None:
                yield item

        call = push_pb2_grpc.PushStub(channel).Push(requests())
        held = (await call.read()).held
        end = held
        start = start_at if start_at is not None else held
        with LogReader(directory, start, chunk_size=1 << 20, pieces=True) as reader:
            while items := reader.read_chunks():
                for chunk in items:
                    if isinstance(chunk, Chunk):
                        end = chunk.end
                        await queue.put(
                            push_pb2.PushRequest(
                                chunk=common_pb2.LogChunk(
                                    position=chunk.position, data=chunk.data, sealed=chunk.sealed
                                )
                            )
                        )
        while held < end:
            held = (await call.read()).held
        await queue.put(None)
        return end


def push_to(nodes: Nodes, which, stream: str, directory: Path, topic: str = "") -> None:
    async def all_of_them():
        await asyncio.gather(
            *(push(nodes.spec.nodes[i].push, stream, directory, topic=topic) for i in which)
        )

    asyncio.run(asyncio.wait_for(all_of_them(), 60))


def assert_identical(nodes: Nodes, which) -> None:
    names = sorted(os.listdir(nodes.out(which[0])))
    names = [n for n in names if n.startswith("log.")]
    for i in which[1:]:
        assert sorted(n for n in os.listdir(nodes.out(i)) if n.startswith("log.")) == names
        _, mismatch, errors = filecmp.cmpfiles(
            nodes.out(which[0]), nodes.out(i), names, shallow=False
        )
        assert (mismatch, errors) == ([], []), f"node {i} differs from node {which[0]}"


def assert_each_stream_once_in_order(records, expected: dict[str, list[int]]) -> None:
    seen: dict[str, list[int]] = {}
    for record in records:
        seen.setdefault(record.origin, []).append(record.id)
    assert seen == expected


def test_three_nodes_merge_two_streams_into_identical_logs(nodes, tmp_path):
    cluster = nodes(3)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 3001))
    write_publisher_log(tmp_path / "pub/b.feed", "b", range(1, 3001))
    push_to(cluster, [0, 1, 2], "a.feed", tmp_path / "pub/a.feed")
    push_to(cluster, [0, 1, 2], "b.feed", tmp_path / "pub/b.feed")
    cluster.wait_merged(6000)
    assert_identical(cluster, [0, 1, 2])
    assert_each_stream_once_in_order(
        read_log(cluster.out(0)), {"a": list(range(1, 3001)), "b": list(range(1, 3001))}
    )
    assert len(os.listdir(cluster.out(0))) > 5  # the merged log rolled
    status = [cluster.status(i) for i in range(3)]
    assert sorted(s.role for s in status) == ["follower", "follower", "leader"]
    assert len({s.out_position for s in status}) == 1
    # Each node hears what its peers speak (until then it speaks the oldest form to them).
    deadline = time.monotonic() + 10
    for i in range(3):
        for peer in (p for p in range(3) if p != i):
            while f"node {peer} speaks peer protocol {PEER_PROTOCOL}" not in cluster.log(i):
                assert time.monotonic() < deadline, cluster.log(i)
                time.sleep(0.1)


def open_files(pid: int, folder: Path) -> list[str]:
    """The log files in ``folder`` that process ``pid`` holds open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(f"{folder}/log."):
                found.append(target)
    return found


def test_backup_path_brings_bytes_to_nodes_the_publisher_cannot_reach(nodes, tmp_path):
    cluster = nodes(3)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 2001))
    push_to(cluster, [0], "a.feed", tmp_path / "pub/a.feed")  # single ingress
    cluster.wait_merged(2000)
    assert_identical(cluster, [0, 1, 2])
    for i in (1, 2):
        copy = read_log(Path(cluster.spec.nodes[i].data) / "s/in/a.feed")
        assert [r.id for r in copy] == list(range(1, 2001))
    # Fetched copies are sealed where the publisher's files are (issue 14 #14): the
    # chunk that ends a sealed file carries the seal, though the fetch stops there.
    names = [f"log.{s}.{r}" for s, r in list_log_files(tmp_path / "pub/a.feed")]
    assert all(file_is_sealed(tmp_path / "pub/a.feed" / name) for name in names)
    for i in (1, 2):
        folder = Path(cluster.spec.nodes[i].data) / "s/in/a.feed"
        assert [name for name in names if not file_is_sealed(folder / name)] == []
    # Each fetch's call ends once it brought what was asked (issue 14 #8: calls left
    # open kept readers, and their files, open on the serving node for good): node 0
    # keeps open only its own copy's file and the merge's reader of it.
    served = Path(cluster.spec.nodes[0].data) / "s/in/a.feed"
    deadline = time.monotonic() + 10
    while len(open_files(cluster.procs[0].pid, served)) > 2:
        assert time.monotonic() < deadline, open_files(cluster.procs[0].pid, served)
        time.sleep(0.2)


def test_dedup_streams_merge_each_origin_id_once_per_topic(nodes, tmp_path):
    cluster = nodes(1)
    # two publishers sending the same messages (HA), one restarted mid-way and resending
    write_publisher_log(tmp_path / "pub/a.feed.dedup", "src", range(1, 501))
    write_publisher_log(tmp_path / "pub/b.feed.dedup", "src", range(1, 401))
    write_publisher_log(tmp_path / "pub/b.feed.dedup", "src", range(350, 701))
    write_publisher_log(tmp_path / "pub/c.plain", "src", range(1, 11))  # not deduplicated
    # another dedup topic, same origin and ids: its own watermarks, nothing dropped
    write_publisher_log(tmp_path / "pub/z.other.dedup", "src", range(1, 21))
    push_to(cluster, [0], "a.feed.dedup", tmp_path / "pub/a.feed.dedup", topic="feed.dedup")
    push_to(cluster, [0], "b.feed.dedup", tmp_path / "pub/b.feed.dedup", topic="feed.dedup")
    push_to(cluster, [0], "c.plain", tmp_path / "pub/c.plain", topic="plain")
    push_to(cluster, [0], "z.other.dedup", tmp_path / "pub/z.other.dedup", topic="other.dedup")
    cluster.wait_merged(730)
    time.sleep(0.5)
    ids = [r.id for r in read_log(cluster.out(0))]
    assert sorted(ids[:700]) == list(range(1, 701)) and len(set(ids[:700])) == 700
    assert ids[700:] == list(range(1, 11)) + list(range(1, 21))
    dedup = {(d.topic, d.origin): (d.watermark, d.dropped) for d in cluster.status(0).dedup}
    assert dedup == {("feed.dedup", "src"): (700, 500 + 751 - 700), ("other.dedup", "src"): (20, 0)}
    topics = {s.stream: s.topic for s in cluster.status(0).streams}
    assert topics == {
        "a.feed.dedup": "feed.dedup",
        "b.feed.dedup": "feed.dedup",
        "c.plain": "plain",
        "z.other.dedup": "other.dedup",
    }


def test_a_stream_keeps_its_topic(nodes, tmp_path):
    cluster = nodes(1)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 11))
    push_to(cluster, [0], "a.feed", tmp_path / "pub/a.feed", topic="feed")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        push_to(cluster, [0], "a.feed", tmp_path / "pub/a.feed", topic="feed.dedup")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "topic 'feed', not 'feed.dedup'" in caught.value.details()


def test_a_killed_node_restarts_and_catches_up(nodes, tmp_path):
    cluster = nodes(3)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 1001))
    push_to(cluster, [0, 1, 2], "a.feed", tmp_path / "pub/a.feed")
    cluster.wait_merged(1000)
    cluster.kill(2)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1001, 3001))
    push_to(cluster, [0, 1], "a.feed", tmp_path / "pub/a.feed")
    cluster.wait_merged(3000, nodes=[0, 1])
    cluster.start(2)
    cluster.wait_merged(3000, nodes=[2])
    cluster.wait_alike()
    assert_identical(cluster, [0, 1, 2])
    assert [r.id for r in read_log(cluster.out(2))] == list(range(1, 3001))


def test_the_cluster_goes_on_without_its_leader(nodes, tmp_path):
    cluster = nodes(3)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 501))
    push_to(cluster, [0, 1, 2], "a.feed", tmp_path / "pub/a.feed")
    cluster.wait_merged(500)
    leader = next(i for i in range(3) if cluster.status(i).role == "leader")
    cluster.kill(leader)
    rest = [i for i in range(3) if i != leader]
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(501, 1001))
    push_to(cluster, rest, "a.feed", tmp_path / "pub/a.feed")
    cluster.wait_merged(1000, nodes=rest)
    assert_identical(cluster, rest)
    assert [r.id for r in read_log(cluster.out(rest[0]))] == list(range(1, 1001))


def test_bad_pushes_and_pulls_get_clear_errors(nodes, tmp_path):
    cluster = nodes(1)
    address = cluster.spec.nodes[0].push
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 11))
    good = read_log(tmp_path / "pub/a.feed")

    def push_raw(stream: str, chunks) -> grpc.RpcError:
        with grpc.insecure_channel(address) as channel:
            requests = [push_pb2.PushRequest(open=push_pb2.PushOpen(stream=stream))]
            requests += [push_pb2.PushRequest(chunk=chunk) for chunk in chunks]
            with pytest.raises(grpc.RpcError) as caught:
                for _ in push_pb2_grpc.PushStub(channel).Push(iter(requests), timeout=10):
                    pass
            return caught.value

    error = push_raw("../etc", [])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "stream name" in error.details()
    error = push_raw("a.feed", [common_pb2.LogChunk(position=5, data=good[0].raw)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "mid-file" in error.details()
    assert str(tmp_path) not in error.details()  # no server path told
    inputs = Path(cluster.spec.nodes[0].data) / "s/in"
    assert not (inputs / "a.feed").exists()  # a new stream refused at once leaves nothing
    first = common_pb2.LogChunk(position=0, data=good[0].raw)
    skipping = common_pb2.LogChunk(position=good[1].position, data=good[2].raw)
    error = push_raw("a.feed", [first, skipping])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "gap" in error.details()
    corrupt = bytearray(good[1].raw)
    corrupt[-1] ^= 1
    error = push_raw(
        "a.feed", [common_pb2.LogChunk(position=good[0].position, data=bytes(corrupt))]
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "CRC32C" in error.details()
    assert read_log(Path(cluster.spec.nodes[0].data) / "s/in/a.feed") == good[:1]

    with grpc.insecure_channel(cluster.spec.nodes[0].pull) as channel:
        stub = pull_pb2_grpc.PullStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(stub.Pull(pull_pb2.PullRequest(position=file_start(0, 0) + 10**6))))
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "past the end" in caught.value.details()
        assert str(tmp_path) not in caught.value.details()  # no server path told

    with grpc.insecure_channel(address) as channel:  # a peer's backup fetch, likewise
        fetch = peer_pb2_grpc.PeerStub(channel).Fetch
        inside = peer_pb2.FetchRequest(stream="a.feed", position=3)  # in the first record
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(fetch(inside, timeout=10)))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not the start of a record" in caught.value.details()


def test_a_node_far_behind_installs_a_snapshot(nodes, tmp_path, monkeypatch):
    monkeypatch.setenv("RT_RAFT_KEEP_ENTRIES", "5")
    cluster = nodes(3)
    directory = tmp_path / "pub/a.feed"
    write_publisher_log(directory, "a", range(1, 101))
    push_to(cluster, [0, 1, 2], "a.feed", directory)
    cluster.wait_merged(100)
    cluster.kill(2)
    for batch in range(30):  # one push, one proposal: many Raft entries
        write_publisher_log(directory, "a", range(101 + 20 * batch, 121 + 20 * batch))
        push_to(cluster, [0, 1], "a.feed", directory)
        cluster.wait_merged(120 + 20 * batch, nodes=[0])
    time.sleep(1.5)  # a checkpoint, then compaction
    for i in (0, 1):  # both compacted: node 2's entries are gone, only a snapshot will do
        assert (Path(cluster.spec.nodes[i].data) / "s/state/raft/snapshot").exists()
    # Node 2 comes back while node 0 is down: it must get the merged log from node 1.
    cluster.kill(0)
    cluster.start(2)
    cluster.wait_merged(700, nodes=[2])
    deadline = time.monotonic() + 30
    while cluster.status(2).out_position != cluster.status(1).out_position:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert_identical(cluster, [1, 2])
    assert "installing a snapshot" in cluster.log(2)
    # A restart right after the install resumes from its checkpoint.
    cluster.kill(2)
    cluster.start(2)
    write_publisher_log(directory, "a", range(701, 751))
    push_to(cluster, [1, 2], "a.feed", directory)
    cluster.wait_merged(750, nodes=[1, 2])
    cluster.start(0)
    cluster.wait_merged(750, nodes=[0])
    cluster.wait_alike()
    assert_identical(cluster, [0, 1, 2])


def test_a_push_over_different_bytes_is_refused_not_trimmed(nodes, tmp_path):
    """Issue 14 #5: records pushed at positions another push already filled with other
    bytes are refused; the first log stays, and the second push learns it at once."""
    cluster = nodes(1)
    write_publisher_log(tmp_path / "forged", "x", range(1, 6))
    write_publisher_log(tmp_path / "victim", "a", range(1, 11))
    push_to(cluster, [0], "a.feed", tmp_path / "forged")
    cluster.wait_merged(5)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(push(cluster.spec.nodes[0].push, "a.feed", tmp_path / "victim", start_at=0))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "differs from the" in refused.value.details()
    assert [r.origin for r in read_log(cluster.out(0))] == ["x"] * 5


def test_a_pull_from_a_damaged_merged_log_ends_with_data_loss_not_a_stall(nodes, tmp_path):
    """Issue 14 #11: bytes zeroed at the tail of a running node's merged log stop a
    reader short of the end its writer claims; the Pull ends with DATA_LOSS after a
    short while (the subscriber goes to another node) instead of staying open and
    silent. (A node that restarts on such a log rebuilds it:
    test_a_node_rebuilds_damaged_storage_from_its_peers.)"""
    cluster = nodes(3)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 201))
    push_to(cluster, [0, 1, 2], "a.feed", tmp_path / "pub/a.feed")
    cluster.wait_merged(200)
    last = sorted(cluster.out(0).glob("log.*"))[-1]
    with open(last, "r+b") as file:  # the tail zeroed: at least two records' headers
        file.seek(last.stat().st_size - 300)
        file.write(b"\0" * 300)
    started = time.monotonic()
    with grpc.insecure_channel(cluster.spec.nodes[0].pull) as channel:
        stub = pull_pb2_grpc.PullStub(channel)
        request = pull_pb2.PullRequest(**{"from": pull_pb2.PullRequest.START})
        with pytest.raises(grpc.RpcError) as broken:
            for _ in stub.Pull(request, timeout=30):
                pass
    assert broken.value.code() == grpc.StatusCode.DATA_LOSS, broken.value.details()
    assert "not whole records" in broken.value.details()
    assert time.monotonic() - started < 15


def test_a_node_refuses_streams_beyond_its_limit(nodes, tmp_path, monkeypatch):
    """Issue 14 #7 (part): streams are not free; past RT_MAX_STREAMS a new stream's push
    is refused with RESOURCE_EXHAUSTED, leaving no folder, and the streams held go on."""
    monkeypatch.setenv("RT_MAX_STREAMS", "2")
    cluster = nodes(1)
    for name in ("a", "b"):
        write_publisher_log(tmp_path / name, name, range(1, 11))
        push_to(cluster, [0], f"{name}.feed", tmp_path / name)
    write_publisher_log(tmp_path / "c", "c", range(1, 11))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        push_to(cluster, [0], "c.feed", tmp_path / "c")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "RT_MAX_STREAMS" in refused.value.details()
    assert not (Path(cluster.spec.nodes[0].data) / "s/in/c.feed").exists()
    write_publisher_log(tmp_path / "a", "a", range(11, 21))
    push_to(cluster, [0], "a.feed", tmp_path / "a")
    cluster.wait_merged(30)


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_message_over_the_size_limit_is_refused_before_it_is_read(nodes, tmp_path, monkeypatch):
    """Issue 14 #6: one 512 MiB chunk took a sequencer to 1.6 GB. A gRPC message larger
    than a node takes (16 MiB; 128 MiB where peers come too: log bytes travel in pieces,
    Raft snapshots whole) is refused with
    RESOURCE_EXHAUSTED before it is read in; the node's memory stays where it was, and
    it goes on merging. A message over RT_MAX_MESSAGE_SIZE is refused by the publisher
    itself, writing nothing, and by the node in pieces."""
    monkeypatch.setenv("RT_MAX_MESSAGE_SIZE", "1Mi")
    cluster = nodes(1)
    write_publisher_log(tmp_path / "a", "a", range(1, 11))
    push_to(cluster, [0], "a.feed", tmp_path / "a")
    pid = cluster.procs[0].pid
    before = resident_bytes(pid)

    async def push_oversized() -> None:
        async with grpc.aio.insecure_channel(cluster.spec.nodes[0].push, options=OPTIONS) as ch:
            call = push_pb2_grpc.PushStub(ch).Push()
            await call.write(push_pb2.PushRequest(open=push_pb2.PushOpen(stream="b.feed")))
            held = (await call.read()).held
            chunk = common_pb2.LogChunk(position=held, data=bytes(256 << 20))
            await call.write(push_pb2.PushRequest(chunk=chunk))
            await call.read()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(asyncio.wait_for(push_oversized(), 60))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
    assert resident_bytes(pid) - before < 64 << 20
    assert cluster.procs[0].poll() is None
    write_publisher_log(tmp_path / "a", "a", range(11, 21))
    push_to(cluster, [0], "a.feed", tmp_path / "a")
    cluster.wait_merged(20)

    # A record the merged log's files (ROLL bytes here) cannot hold is refused at the push.
    with LogWriter(tmp_path / "c", roll_size=4 * ROLL) as writer:
        writer.append(encode_message(bytes(ROLL), origin="c", ts=1, id=1, codec=Codec.RAW))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        push_to(cluster, [0], "c.feed", tmp_path / "c")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit" in refused.value.details()
    # Likewise one that comes in pieces, by its first piece.
    with LogWriter(tmp_path / "d", roll_size=4 << 20) as writer:
        writer.append(encode_message(bytes(2 << 20), origin="d", ts=1, id=1, codec=Codec.RAW))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        push_to(cluster, [0], "d.feed", tmp_path / "d")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit" in refused.value.details()

    with rt.Publisher(cluster.spec, "feed", log_dir=tmp_path / "pub", codec="raw") as publisher:
        for size in (2 << 20, ROLL):  # over RT_MAX_MESSAGE_SIZE, over the roll size
            with pytest.raises(rt.RecordTooLargeError, match="RT_MAX_MESSAGE_SIZE"):
                publisher.publish(bytes(size))
        end = publisher.publish(bytes(ROLL // 2))  # within both
        assert end == publisher.position
        publisher.flush(30)


def test_a_record_longer_than_a_grpc_message_is_pushed_fetched_and_pulled_in_pieces(
    nodes, tmp_path, monkeypatch
):
    """Issue 14 (limits: message size near the roll size, chunked): a node's push port
    takes no gRPC message over 16 MiB, yet a 20 MiB record goes through: pushed in pieces
    to one node, fetched in pieces by the two others from it (the backup path), merged
    alike, and pulled in pieces, none over a few MiB, that make the merged log's bytes."""
    monkeypatch.setenv("RT_MAX_MESSAGE_SIZE", "32Mi")
    cluster = nodes(3, roll_size=64 << 20, peer_ports=True)
    big = encode_message(os.urandom(20 << 20), origin="a", ts=2, id=2, codec=Codec.RAW)
    directory = tmp_path / "pub/a.feed"
    with LogWriter(directory, roll_size=64 << 20) as writer:
        writer.append(encode_message(b"before", origin="a", ts=1, id=1, codec=Codec.RAW))
        writer.append(big)
        writer.append(encode_message(b"after", origin="a", ts=3, id=3, codec=Codec.RAW))
    push_to(cluster, [0], "a.feed", directory)  # single ingress: 1 and 2 fetch from 0
    cluster.wait_merged(3)
    assert_identical(cluster, [0, 1, 2])
    merged = read_log(cluster.out(2))
    assert [r.id for r in merged] == [1, 2, 3] and merged[1].payload == big[-(20 << 20) :]

    def pull(pieces: bool, max_chunk_bytes: int = 0) -> list[int]:
        """The sizes of the chunks that bring the merged log, checked against it."""
        sizes, pulled = [], b""
        with grpc.insecure_channel(cluster.spec.nodes[2].pull, options=OPTIONS) as channel:
            stub = pull_pb2_grpc.PullStub(channel)
            request = pull_pb2.PullRequest(
                position=file_start(0, 0), pieces=pieces, max_chunk_bytes=max_chunk_bytes
            )
            for chunk in stub.Pull(request, timeout=60):
                sizes.append(len(chunk.data))
                pulled += chunk.data
                if chunk.position + len(chunk.data) >= merged[-1].position:
                    break
        assert pulled == b"".join(r.raw for r in merged)
        return sizes

    assert max(pull(pieces=True)) <= 4 << 20
    assert max(pull(pieces=True, max_chunk_bytes=2**32 - 1)) <= 8 << 20  # 4 MiB at most
    # A subscriber from before pieces asks for none, and is sent the record whole.
    assert max(pull(pieces=False)) >= 20 << 20

    # A publisher not sending pieces is refused before its message is read in.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(asyncio.wait_for(push_whole(cluster.spec.nodes[0].push, big), 60))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # While a long record comes, the node's replies say what it received (held moves
    # only once it is whole), so a publisher does not take a slow push for a hang.
    first = asyncio.run(asyncio.wait_for(push_first_piece(cluster.spec.nodes[0].push, big), 10))
    assert (first.held, first.received, first.takes_pieces) == (0, 1 << 20, True)


async def push_first_piece(address: str, record: bytes) -> push_pb2.PushReply:
    """The node's first reply that tells of the first mebibyte of ``record``, pushed as
    a piece into a new stream (nothing more is sent)."""
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        call = push_pb2_grpc.PushStub(channel).Push()
        await call.write(push_pb2.PushRequest(open=push_pb2.PushOpen(stream="c.feed")))
        await call.read()
        piece = common_pb2.LogChunk(position=0, data=record[: 1 << 20])
        await call.write(push_pb2.PushRequest(chunk=piece))
        while (reply := await call.read()).received < len(piece.data):
            pass
        return reply


async def push_whole(address: str, record: bytes) -> None:
    """One record pushed whole, as one gRPC message, into a new stream."""
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        call = push_pb2_grpc.PushStub(channel).Push()
        await call.write(push_pb2.PushRequest(open=push_pb2.PushOpen(stream="b.feed")))
        held = (await call.read()).held
        await call.write(
            push_pb2.PushRequest(chunk=common_pb2.LogChunk(position=held, data=record))
        )
        await call.read()


def test_a_pull_from_inside_a_record_is_refused(nodes, tmp_path):
    cluster = nodes(1)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 11))
    push_to(cluster, [0], "a.feed", tmp_path / "pub/a.feed")
    cluster.wait_merged(10)
    merged = read_log(cluster.out(0))
    with grpc.insecure_channel(cluster.spec.nodes[0].pull) as channel:
        stub = pull_pb2_grpc.PullStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(stub.Pull(pull_pb2.PullRequest(position=merged[2].position + 3))))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not the start of a record" in caught.value.details()
        first = next(iter(stub.Pull(pull_pb2.PullRequest(position=merged[2].position))))
        assert first.position == merged[2].position and first.data.startswith(merged[3].raw)


@pytest.mark.parametrize("damage", ["garbage", "torn", "missing"])
def test_a_damaged_checkpoint_does_not_stop_a_node(nodes, tmp_path, monkeypatch, damage):
    """A checkpoint that cannot be decoded counts as none: the node recovers from its
    Raft snapshot, its own merged log and its peers, and merges on, identically."""
    monkeypatch.setenv("RT_RAFT_KEEP_ENTRIES", "5")
    cluster = nodes(3)
    directory = tmp_path / "pub/a.feed"
    for batch in range(15):  # many entries, so that the Raft log is compacted
        write_publisher_log(directory, "a", range(1 + 20 * batch, 21 + 20 * batch))
        push_to(cluster, [0, 1, 2], "a.feed", directory)
        cluster.wait_merged(20 + 20 * batch, nodes=[0])
    time.sleep(1.5)  # a checkpoint, then compaction
    state = Path(cluster.spec.nodes[2].data) / "s/state"
    assert (state / "raft/snapshot").exists()
    cluster.kill(2, signal.SIGTERM)
    checkpoint = state / "checkpoint"
    if damage == "garbage":
        checkpoint.write_bytes(os.urandom(64))
    elif damage == "torn":
        checkpoint.write_bytes(checkpoint.read_bytes()[:7])
    else:
        checkpoint.unlink()
    cluster.start(2)
    write_publisher_log(directory, "a", range(301, 401))
    push_to(cluster, [0, 1, 2], "a.feed", directory)
    cluster.wait_merged(400)
    cluster.wait_alike()
    assert_identical(cluster, [0, 1, 2])
    assert [r.id for r in read_log(cluster.out(2))] == list(range(1, 401))
    assert cluster.procs[2].poll() is None  # running, not crash-looping


def damage_merged_log(out: Path, how: str) -> None:
    newest = sorted(p for p in out.iterdir() if p.name.startswith("log."))[-1]
    data = bytearray(newest.read_bytes())
    if how == "cut-short":
        del data[len(data) // 2 :]
    elif how == "flipped-byte":
        data[len(data) // 2] ^= 0x40
    else:  # zeroed tail
        data[-300:] = bytes(300)
    newest.write_bytes(bytes(data))


def damage_raft_state(raft: Path, how: str) -> None:
    if how == "garbage-hardstate":
        (raft / "hardstate").write_bytes(os.urandom(28))
    else:  # a flipped byte in the Raft log's first record
        data = bytearray((raft / "log").read_bytes())
        data[12] ^= 0x01
        (raft / "log").write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        "out:cut-short",
        "out:flipped-byte",
        "out:zeroed-tail",
        "raft:garbage-hardstate",
        "raft:flipped-log-byte",
    ],
)
def test_a_node_rebuilds_damaged_storage_from_its_peers(nodes, tmp_path, monkeypatch, damage):
    """Issue 14 #12: a merged log cut short or damaged where its checkpoint says it is
    whole, a garbage hard state or a bad record in the Raft log: the node does not
    crash-loop but rebuilds what is damaged from its Raft log and its peers (a damaged
    Raft state is moved aside, and the node rejoins abstaining from votes until it holds
    the leader's log), then merges on identically."""
    monkeypatch.setenv("RT_RAFT_KEEP_ENTRIES", "5")
    cluster = nodes(3)
    directory = tmp_path / "pub/a.feed"
    for batch in range(10):
        write_publisher_log(directory, "a", range(1 + 20 * batch, 21 + 20 * batch))
        push_to(cluster, [0, 1, 2], "a.feed", directory)
        cluster.wait_merged(20 + 20 * batch, nodes=[0])
    time.sleep(1.5)  # a checkpoint, then compaction
    cluster.wait_merged(200)
    victim = next(i for i in range(3) if cluster.status(i).role != "leader")
    cluster.kill(victim, signal.SIGTERM)
    state = Path(cluster.spec.nodes[victim].data) / "s/state"
    kind, how = damage.split(":")
    if kind == "out":
        damage_merged_log(cluster.out(victim), how)
    else:
        damage_raft_state(state / "raft", how)
    cluster.start(victim)
    write_publisher_log(directory, "a", range(201, 301))
    push_to(cluster, [0, 1, 2], "a.feed", directory)
    cluster.wait_merged(300)
    cluster.wait_alike()
    assert_identical(cluster, [0, 1, 2])
    assert [r.id for r in read_log(cluster.out(victim))] == list(range(1, 301))
    assert cluster.procs[victim].poll() is None  # running, not crash-looping
    if kind == "raft":
        assert (state / "raft.damaged").is_dir()  # kept for a post-mortem
        deadline = time.monotonic() + 30
        while (state / "rejoining").exists():  # it votes again once caught up
            assert time.monotonic() < deadline
            time.sleep(0.1)


def swap_two_records(path: Path) -> None:
    """Swap two neighbouring records of the same length: every record still passes its
    CRC, but the file is not the one its peers hold."""
    data = path.read_bytes()
    records, _, _, _, _ = scan(data, 0, 0)
    for a, b in itertools.pairwise(records):
        if len(a.raw) == len(b.raw) and a.raw != b.raw:
            start = a.position - len(a.raw)
            path.write_bytes(data[:start] + b.raw + a.raw + data[b.position :])
            return
    raise AssertionError("no two neighbouring records of one length")


@pytest.mark.parametrize("damage", ["flipped-byte", "swapped-records"])
def test_a_sealed_merged_file_that_rots_or_differs_is_mended_from_a_peer(
    nodes, tmp_path, monkeypatch, damage
):
    """Issue 14 #10: a flipped byte in a sealed file of a running node's merged log was
    never noticed (its merged log differed from the others' for good). The scrubber
    finds it by the records' CRCs, or, when every record still passes its CRC, by the
    file's digest that both peers agree on, and puts a peer's copy in its place."""
    monkeypatch.setenv("RT_SCRUB_INTERVAL", "0.5")
    cluster = nodes(3)
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 2001))
    push_to(cluster, [0, 1, 2], "a.feed", tmp_path / "pub/a.feed")
    cluster.wait_merged(2000)
    sealed = sorted(cluster.out(1).glob("log.*"))[:-1]
    assert len(sealed) >= 2
    victim = sealed[1]
    healthy = cluster.out(0) / victim.name
    if damage == "flipped-byte":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x10
        victim.write_bytes(bytes(data))
    else:
        swap_two_records(victim)
    assert victim.read_bytes() != healthy.read_bytes()
    deadline = time.monotonic() + 30
    while victim.read_bytes() != healthy.read_bytes():
        assert time.monotonic() < deadline, "not mended"
        time.sleep(0.2)
    assert_identical(cluster, [0, 1, 2])
    assert [r.id for r in read_log(cluster.out(1))] == list(range(1, 2001))
    # An input copy's newest file, sealed (its publisher closed it), is checked too: it
    # stays when the others are archived, and the copy's writer may hold it open.
    copies = [Path(node.data, "s", "in", "a.feed") for node in cluster.spec.nodes]
    newest = file_name(*list_log_files(copies[1])[-1])
    assert file_is_sealed(copies[1] / newest)
    data = bytearray((copies[1] / newest).read_bytes())
    data[len(data) // 2] ^= 0x10
    (copies[1] / newest).write_bytes(bytes(data))
    while (copies[1] / newest).read_bytes() != (copies[0] / newest).read_bytes():
        assert time.monotonic() < deadline + 30, "the input file was not mended"
        time.sleep(0.2)


def test_a_subscriber_leaves_a_node_that_stopped_answering(nodes, tmp_path):
    """Issue 14: a subscriber on a node that stops (SIGSTOP: its connections stay open,
    nothing comes) waited for good. Nodes send a heartbeat every idle second; from a
    node silent for five (SILENT_AFTER) the subscriber goes to another."""
    cluster = nodes(3)
    directory = tmp_path / "pub/a.feed"
    write_publisher_log(directory, "a", range(1, 101))
    push_to(cluster, [0, 1, 2], "a.feed", directory)
    got: list[int] = []
    subscriber = rt.Subscriber(
        cluster.spec, log_dir=tmp_path / "sub", node=0, on_message=lambda m, p: got.append(m.id)
    )
    with subscriber:
        deadline = time.monotonic() + 30
        while len(got) < 100:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        cluster.procs[0].send_signal(signal.SIGSTOP)
        try:
            write_publisher_log(directory, "a", range(101, 201))
            push_to(cluster, [1, 2], "a.feed", directory)
            stopped = time.monotonic()
            while len(got) < 200:
                assert time.monotonic() - stopped < 10, f"{len(got)} delivered"
                time.sleep(0.1)
        finally:
            cluster.procs[0].send_signal(signal.SIGCONT)
    assert got == list(range(1, 201))


def test_a_stream_belongs_to_the_log_that_first_pushed_it(nodes, tmp_path):
    """Issue 14 #5 for internal publishers: a second publisher's log pushing under the
    same stream name (two hosts of one name, a folder copied by hand) is refused with
    PERMISSION_DENIED before any of its bytes is taken; the first goes on."""
    cluster = nodes(1)
    with rt.Publisher(cluster.spec, "feed", log_dir=tmp_path / "a", publisher_id="dup") as first:
        first.publish(b"one")
        first.flush(30)
        owner = (first.directory / ".owner").read_text().strip()
        stream = first.stream

        async def impostor() -> None:
            async with grpc.aio.insecure_channel(cluster.spec.nodes[0].push) as channel:
                call = push_pb2_grpc.PushStub(channel).Push()
                opening = push_pb2.PushOpen(stream=stream, topic="feed", owner="f" * 32)
                await call.write(push_pb2.PushRequest(open=opening))
                await call.read()

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(asyncio.wait_for(impostor(), 30))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "another publisher's log" in refused.value.details()
        assert str(tmp_path) not in refused.value.details()
        first.publish(b"two")
        first.flush(30)
    copy = Path(cluster.spec.nodes[0].data) / "s/in" / stream
    assert (copy / ".owner").read_text().strip() == owner
    cluster.wait_merged(2)


def test_a_damaged_input_copy_is_mended_from_a_peer_and_the_merge_goes_on(nodes, tmp_path):
    """A byte that rots in a sealed file of a node's input copy, in bytes it has not
    merged yet, stopped its merge at that entry: it stalled, stopped after the stall
    limit and stalled again after every restart while the others went on. The merge
    reads its input checking each record's CRC, and the stream's copy is checked at once
    against the peers' (whose copies agree) and mended from one; the entry goes on."""
    cluster = nodes(3)
    victim = 2
    cluster.kill(victim, signal.SIGTERM)
    directory = tmp_path / "pub/a.feed"
    write_publisher_log(directory, "a", range(1, 2001))
    push_to(cluster, [0, 1], "a.feed", directory)
    cluster.wait_merged(2000, nodes=[0, 1])
    # The victim holds the stream (a copy of a peer's input copy) but merged none of it.
    ins = [Path(node.data, "s", "in", "a.feed") for node in cluster.spec.nodes]
    shutil.copytree(ins[0], ins[victim])
    sealed = sorted(ins[victim].glob("log.*"))[:-1]
    assert len(sealed) >= 2
    damaged = bytearray(sealed[1].read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    sealed[1].write_bytes(bytes(damaged))
    cluster.start(victim)
    cluster.wait_merged(2000, nodes=[victim], timeout=30)
    assert sealed[1].read_bytes() == (ins[0] / sealed[1].name).read_bytes()
    cluster.wait_alike()
    assert_identical(cluster, [0, 1, 2])
    assert [r.id for r in read_log(cluster.out(victim))] == list(range(1, 2001))
    assert cluster.procs[victim].poll() is None  # merged on, never stopped
    assert f"input file {sealed[1].name} of a.feed mended from" in cluster.log(victim)


def ten_merged(nodes, tmp_path) -> tuple[Nodes, Path, int]:
    """Three nodes that merged ten records of ``a.feed`` (topic ``feed``): the cluster,
    the publisher's log and the leader."""
    cluster = nodes(3)
    directory = tmp_path / "pub/a.feed"
    write_publisher_log(directory, "a", range(1, 11))
    push_to(cluster, [0, 1, 2], "a.feed", directory, topic="feed")
    cluster.wait_merged(10)
    return cluster, directory, next(i for i in range(3) if cluster.status(i).role == "leader")


def test_forged_gossip_neither_names_a_bad_stream_nor_stops_the_merge(nodes, tmp_path):
    """Issue 14 #1 and #2 on a cluster without TLS between nodes: gossip naming ``..``
    is refused, and gossip in both followers' names claiming 10**18 bytes of a real
    stream puts no range past what the leader holds into the Raft log, so merging goes
    on (it stopped for good before)."""
    cluster, directory, leader = ten_merged(nodes, tmp_path)
    session = cluster.status(leader).session

    def gossip(state: peer_pb2.NodeState) -> None:
        with grpc.insecure_channel(cluster.spec.nodes[leader].push) as channel:
            peer_pb2_grpc.PeerStub(channel).Gossip(iter([state]), timeout=10)

    with pytest.raises(grpc.RpcError) as refused:
        named = {"held": {"..": 5}, "topics": {"..": "feed"}}
        gossip(peer_pb2.NodeState(node=(leader + 1) % 3, session=session, **named))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for follower in (i for i in range(3) if i != leader):
        gossip(
            peer_pb2.NodeState(
                node=follower, session=session, held={"a.feed": 10**18}, topics={"a.feed": "feed"}
            )
        )
    write_publisher_log(directory, "a", range(11, 101))
    push_to(cluster, [0, 1, 2], "a.feed", directory, topic="feed")
    cluster.wait_merged(100)
    assert_identical(cluster, [0, 1, 2])
    assert [r.id for r in read_log(cluster.out(leader))] == list(range(1, 101))


def test_a_node_serves_only_once_it_knows_a_leader(nodes, tmp_path):
    """Issue 14 #13: gRPC health (and so ``ready`` and ``/health``) said SERVING before
    any leader existed. A node alone of three has no leader: NOT_SERVING; once a second
    node is up and a leader is elected, SERVING."""
    cluster = nodes(3)
    cluster.stop_all()
    cluster.start(0, wait=False)

    def health() -> int | None:
        try:
            with grpc.insecure_channel(cluster.spec.nodes[0].push) as channel:
                return (
                    health_pb2_grpc.HealthStub(channel)
                    .Check(health_pb2.HealthCheckRequest(), timeout=1)
                    .status
                )
        except grpc.RpcError:
            return None  # not listening yet

    deadline = time.monotonic() + 10
    while health() is None:
        assert time.monotonic() < deadline, cluster.log(0)
        time.sleep(0.1)
    for _ in range(20):  # two seconds: elections time out within one
        assert health() == health_pb2.HealthCheckResponse.NOT_SERVING
        time.sleep(0.1)
    cluster.start(1)
    cluster.wait_serving(0)


def test_a_forged_proposal_never_reaches_the_raft_log(nodes, tmp_path):
    """Issue 14 #2: a PROPOSE sent to the leader (nodes never forward proposals) put a
    range past what any node held into the Raft log, and merging stopped for good. The
    leader drops it: only its own core, which proposes what it holds, proposes."""
    cluster, directory, leader = ten_merged(nodes, tmp_path)
    status = cluster.status(leader)
    merged = next(s.merged for s in status.streams if s.stream == "a.feed")
    forged = encode_ranges([Range("a.feed", merged, merged + 10**9, "feed")])
    follower = (leader + 1) % 3
    message = Message(
        MessageType.PROPOSE,
        src=raft_id(follower),
        dst=raft_id(leader),
        term=0,
        entries=[Entry(0, 0, forged)],
    )
    batch = peer_pb2.RaftBatch(
        from_node=follower, messages=[encode_raft_message(message)], session=status.session
    )
    with grpc.insecure_channel(cluster.spec.nodes[leader].push) as channel:
        peer_pb2_grpc.PeerStub(channel).Raft(iter([batch]), timeout=10)
    write_publisher_log(directory, "a", range(11, 101))
    push_to(cluster, [0, 1, 2], "a.feed", directory, topic="feed")
    cluster.wait_merged(100, timeout=30)
    assert_identical(cluster, [0, 1, 2])
    assert "dropped 1 proposal(s)" in cluster.log(leader)


def test_partial_gossip_moves_only_the_streams_it_names(nodes, tmp_path):
    """With many streams, a node's gossip after the first whole state names only those
    whose positions moved (``NodeState.partial``): the receiver keeps the others, and a
    whole state replaces them all. Seen through what node 0 tells a pusher a quorum holds,
    with nodes 1 and 2 down and their gossip written here."""
    cluster = nodes(3)
    session = cluster.status(0).session
    cluster.kill(1)
    cluster.kill(2)
    topics = {"x.feed": "feed", "y.feed": "feed"}

    def gossip(*states: dict) -> None:
        for node in (1, 2):
            with grpc.insecure_channel(cluster.spec.nodes[0].push) as channel:
                messages = [peer_pb2.NodeState(node=node, session=session, **s) for s in states]
                peer_pb2_grpc.PeerStub(channel).Gossip(iter(messages), timeout=10)

    def replicated(stream: str) -> int:
        opening = push_pb2.PushRequest(open=push_pb2.PushOpen(stream=stream, topic="feed"))
        with grpc.insecure_channel(cluster.spec.nodes[0].push) as channel:
            replies = push_pb2_grpc.PushStub(channel).Push(iter([opening]), timeout=10)
            return next(iter(replies)).replicated

    gossip(
        {"held": {"x.feed": 100, "y.feed": 10}, "topics": topics},
        {"held": {"y.feed": 20}, "partial": True},
    )
    assert (replicated("x.feed"), replicated("y.feed")) == (100, 20)
    gossip({"held": {"y.feed": 30}, "topics": topics})  # whole: x is no longer held there
    assert (replicated("x.feed"), replicated("y.feed")) == (0, 30)


def test_a_raft_message_with_a_term_out_of_bounds_is_refused(nodes, tmp_path):
    """A forged HEARTBEAT with term 2**64 - 1 was stored, and the next campaign crashed
    every node serialising term 2**64."""
    cluster = nodes(3)
    before = cluster.status(0).term
    forged = Message(MessageType.HEARTBEAT, src=2, dst=1, term=(1 << 64) - 1)
    with grpc.insecure_channel(cluster.spec.nodes[0].push) as channel:
        batch = peer_pb2.RaftBatch(from_node=1, messages=[encode_raft_message(forged)], session=0)
        with pytest.raises(grpc.RpcError) as refused:
            peer_pb2_grpc.PeerStub(channel).Raft(iter([batch]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "out of bounds" in refused.value.details()
    status = cluster.status(0)
    assert status.term < 1 << 62 and status.term >= before
    write_publisher_log(tmp_path / "pub/a.feed", "a", range(1, 11))
    push_to(cluster, [0, 1, 2], "a.feed", tmp_path / "pub/a.feed")
    cluster.wait_merged(10)  # the cluster still merges
