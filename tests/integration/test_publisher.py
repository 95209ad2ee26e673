"""rt.Publisher and its replicator against a real cluster (``rt cluster up``).

Every node's input copy (``<node data>/s/in/<stream>/``) must hold exactly the records
published, byte for byte: after a plain run on 1 and 3 nodes, after a node's sequencer
or the whole node is killed mid-stream and comes back, and with a single ingress, where
the publisher talks to one node only and fails over when it dies. ``rt pub`` is run on
real input too.
"""

from __future__ import annotations

import argparse
import filecmp
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

import rt
from rt._cmd_pub import run as rt_pub
from rt._publisher import Publisher
from rtcommon import env
from rtcommon.cluster import ClusterSpec
from rtcommon.log import Codec, LogWriter, Record, encode_message, list_log_files, read_log
from rtproto.v1 import admin_pb2, admin_pb2_grpc

ClusterFactory = Callable[..., Any]
BIN = Path(sys.executable).parent
ROLL = 64 << 10  # publisher files roll every 64 KiB: every test crosses many files
CATCH_UP = 60.0


def input_copy(spec: ClusterSpec, node_id: int, stream: str) -> Path:
    return Path(spec.node(node_id).data) / "s" / "in" / stream


def record_bytes(directory: Path) -> list[bytes]:
    items = read_log(directory)
    assert all(isinstance(item, Record) for item in items), items
    return [item.raw for item in items]


def copies_match(spec: ClusterSpec, directory: Path, stream: str) -> bool:
    """True when every node's copy holds exactly the local log's records, in its files."""
    local = record_bytes(directory)
    for node in spec.nodes:
        copy = input_copy(spec, node.id, stream)
        if record_bytes(copy) != local:
            return False
        if list_log_files(copy) != list_log_files(directory):
            return False
    return True


def assert_copies_identical(
    spec: ClusterSpec, directory: Path, stream: str, procs, *, pushed_to: set[int] | None = None
) -> None:
    """Every node's copy holds the local log's records; the copies of the nodes pushed to
    (all by default) are also byte for byte the local files, seal trailers included."""
    procs.wait_until(
        lambda: copies_match(spec, directory, stream), CATCH_UP, "every node's copy to match"
    )
    names = [f"log.{s}.{r}" for s, r in list_log_files(directory)]
    for node in spec.nodes:
        if pushed_to is not None and node.id not in pushed_to:
            continue
        copy = input_copy(spec, node.id, stream)
        procs.wait_until(
            lambda copy=copy: filecmp.cmpfiles(directory, copy, names, shallow=False)[0] == names,
            CATCH_UP,
            f"{node.name}'s files to equal the publisher's",
        )


def quorum_holds(spec, stream: str, position: int, quorum: int) -> bool:
    """Whether a quorum of nodes say (Admin.Status) they hold ``stream`` up to ``position``:
    the ground truth, where a publisher's own view may lag its nodes' replies."""
    holding = 0
    for node in spec.nodes:
        with grpc.insecure_channel(node.push) as channel:
            status = admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=5)
        holding += any(s.stream == stream and s.held >= position for s in status.streams)
    return holding >= quorum


def publish_batch(publisher: Publisher, start: int, count: int) -> int:
    end = 0
    for i in range(start, start + count):
        end = publisher.publish(("upd", "trade", {"i": i, "pad": "x" * 40}))
    return end


def check_published(directory: Path, count: int) -> None:
    items = read_log(directory)
    assert [r.id for r in items] == list(range(1, count + 1))
    assert [r.data[2]["i"] for r in items] == list(range(count))


@pytest.mark.parametrize("nodes", [1, 3])
def test_published_messages_reach_every_node_byte_for_byte(
    cluster: ClusterFactory, tmp_path: Path, procs, nodes: int
) -> None:
    running = cluster(nodes=nodes)
    spec = running.spec
    count = 20_000
    with Publisher(
        rt.Cluster.from_file(running.path), "feed", tmp_path, publisher_id="it", roll_size=ROLL
    ) as publisher:
        assert publisher.stream == "it.feed"
        end = publish_batch(publisher, 0, count)
        assert end == publisher.position
        publisher.flush(timeout=30)
        quorum = len(spec.nodes) // 2 + 1
        assert quorum_holds(spec, publisher.stream, end, quorum), publisher.held
    check_published(publisher.directory, count)
    assert len(list_log_files(publisher.directory)) > 10
    assert_copies_identical(spec, publisher.directory, "it.feed", procs)


@pytest.mark.parametrize("victim", ["sequencer", "node"])
def test_the_replicator_resumes_when_a_node_comes_back(
    cluster: ClusterFactory, tmp_path: Path, procs, victim: str
) -> None:
    running = cluster(nodes=3)
    spec = running.spec
    batch = 5_000
    with Publisher(spec, "feed", tmp_path, publisher_id="it", roll_size=ROLL) as publisher:
        publish_batch(publisher, 0, batch)
        publisher.flush(timeout=30)

        supervisor = spec.node(1).pid
        assert supervisor is not None
        if victim == "sequencer":
            pid = procs.child_running(supervisor, "rt-sequencer")
            assert pid is not None
        else:
            pid = supervisor
        os.kill(pid, signal.SIGKILL)
        # The cluster goes on with two nodes; the push to node 1 backs off meanwhile.
        publish_batch(publisher, batch, batch)
        publisher.flush(timeout=30)
        end = publish_batch(publisher, 2 * batch, batch)
        publisher.flush(timeout=30)

        # The replicator's own stream to node 1 resumes from what it holds.
        procs.wait_until(
            lambda: publisher.held[1] >= end, CATCH_UP, "node 1 to hold everything again"
        )
        publish_batch(publisher, 3 * batch, batch)
        publisher.flush(timeout=30)
    check_published(publisher.directory, 4 * batch)
    assert_copies_identical(spec, publisher.directory, "it.feed", procs)


def test_a_single_ingress_pushes_to_one_node_and_fails_over(
    cluster: ClusterFactory, tmp_path: Path, procs, monkeypatch
) -> None:
    running = cluster(nodes=3)
    spec = running.spec
    monkeypatch.setenv("RT_SINGLE_INGRESS", "1")
    batch = 5_000
    with Publisher(spec, "feed", tmp_path, publisher_id="si", roll_size=ROLL) as publisher:
        publish_batch(publisher, 0, batch)
        publisher.flush(timeout=30)  # on the node's word that a quorum holds it
        answered = [node for node, held in publisher.held.items() if held]
        assert len(answered) == 1, publisher.held

        # Kill the sequencer the publisher talks to: it must carry on through another node.
        [first] = answered
        pid = procs.child_running(spec.node(first).pid, "rt-sequencer")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        end = publish_batch(publisher, batch, batch)
        publisher.flush(timeout=30)
        [second] = [node for node, held in publisher.held.items() if held >= end]
        assert second != first, publisher.held
    check_published(publisher.directory, 2 * batch)
    # The nodes not pushed to get the records from their peers (the backup path); the
    # seal that close() sends goes to the node pushed to last.
    assert_copies_identical(spec, publisher.directory, "si.feed", procs, pushed_to={second})


@pytest.mark.parametrize("dedup", [False, True])
def test_rt_pub_publishes_stdin_lines(
    cluster: ClusterFactory, tmp_path: Path, procs, monkeypatch, capsys, dedup: bool
) -> None:
    running = cluster(nodes=1)
    monkeypatch.setenv("RT_LOG_PATH", str(tmp_path / "logs"))
    lines = b'{"sym": "A", "px": 1.5}\nplain text\n\n[1, 2]\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines)))
    args = argparse.Namespace(cluster=str(running.path), topic="cli", origin="me", dedup=dedup)
    assert rt_pub(args) == 0
    out, err = capsys.readouterr()
    assert out == "" and "rt pub: 3 message(s) on topic cli" in err and "held by a quorum" in err
    stream = f"{env.hostname()}.cli" + (".dedup" if dedup else "")
    directory = tmp_path / "logs" / f"rt-{running.spec.id}" / stream  # the cluster's folder
    published = read_log(directory)
    assert [(r.origin, r.id, r.data) for r in published] == [
        ("me", 1, {"sym": "A", "px": 1.5}),
        ("me", 2, "plain text"),
        ("me", 3, [1, 2]),
    ]
    assert_copies_identical(running.spec, directory, stream, procs)


def test_the_agent_ships_a_directory_another_process_writes(
    cluster: ClusterFactory, tmp_path: Path, procs
) -> None:
    running = cluster(nodes=3)
    directory = tmp_path / "h.agent"

    def write(writer: LogWriter, start: int, count: int) -> None:
        for i in range(start, start + count):
            writer.append(encode_message(b"r%d" % i, origin="w", ts=i, id=i + 1, codec=Codec.RAW))
        writer.commit()

    writer = LogWriter(directory, roll_size=ROLL)
    write(writer, 0, 3_000)
    command = [str(BIN / "rt-publisher-agent"), "--cluster", str(running.path)]
    agent = subprocess.Popen(
        [*command, "--log-dir", str(directory)],
        stdin=subprocess.DEVNULL,
        text=True,
        stderr=subprocess.PIPE,
    )
    try:
        write(writer, 3_000, 3_000)  # the agent sees the directory change and sends it
        writer.close()
        assert_copies_identical(running.spec, directory, "h.agent", procs)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, errors = agent.communicate(timeout=30)
    assert agent.returncode == 0, errors


def test_a_publisher_log_that_lost_its_unsynced_tail_still_replicates(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    from rt_publisher_agent import Replicator

    running = cluster(nodes=1)
    directory = tmp_path / "host.feed"
    with LogWriter(directory, sync="none", seal_on_close=False) as writer:
        for i in range(1, 41):
            writer.append(encode_message(("m", i), origin="o", ts=i, id=i))
    replicator = Replicator(directory, "host.feed", running.spec).start()
    assert replicator.wait_replicated(
        list_log_files(directory) and read_log(directory)[-1].position, 30
    )
    replicator.stop()
    # The host crashed before its page cache reached the disk: the log lost its tail...
    first = directory / "log.0.0"
    os.truncate(first, len(b"".join(r.raw for r in read_log(directory)[:25])))
    # ...and the restarted publisher starts a new session.
    with LogWriter(directory) as writer:
        end = writer.append(encode_message(("m", 41), origin="o", ts=41, id=41))
    replicator = Replicator(directory, "host.feed", running.spec).start()
    try:
        assert replicator.wait_replicated(end, 30), replicator.held
    finally:
        replicator.stop()
    copy = read_log(input_copy(running.spec, 0, "host.feed"))
    assert [r.id for r in copy] == list(range(1, 42))  # the node kept what it held


def test_a_publisher_left_open_at_exit_is_flushed_and_the_process_exits_promptly(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    """A script that publishes and ends without close(): the exit hook flushes what it
    published to a quorum (the background loop stops only after it), within seconds."""
    running = cluster(nodes=3)
    script = (
        "import sys, rt\n"
        "pub = rt.Publisher(rt.Cluster.from_file(sys.argv[1]), 'feed', sys.argv[2],"
        " publisher_id='left-open')\n"
        "for i in range(500):\n"
        "    pub.publish(('upd', 'x', {'i': i}))\n"
    )
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", script, str(running.path), str(tmp_path)],
        check=True,
        timeout=60,
    )
    assert time.monotonic() - started < 20
    directory = tmp_path / "left-open.feed"
    held = [
        len(read_log(input_copy(running.spec, node.id, "left-open.feed")))
        for node in running.spec.nodes
    ]
    assert sorted(held, reverse=True)[1] == 500, held  # a quorum holds all of it
    assert len(read_log(directory)) == 500
