"""Disk stays bounded: publisher archival on a real 3-node cluster with small rolls.

Once every node is done with a rolled publisher file (merged, checkpointed, in its Raft
snapshot) and holds it, the nodes delete their input copies of it and the publisher
empties its own and sets the sticky bit. With a node stopped nothing more is archived;
when it runs again, archival resumes.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import rt
from rtcommon.log import list_log_files

ROLL = 64 << 10
ENV = {"RT_ROLL_SIZE": str(ROLL), "RT_RAFT_KEEP_ENTRIES": "4"}


def publish(publisher: rt.Publisher, batches: int) -> None:
    payload = b"x" * 200
    for _ in range(batches):
        for _ in range(100):
            publisher.publish(payload)
        publisher.flush(timeout=60)  # a Raft entry or more each


def collected(directory: Path) -> list[str]:
    """The log files of ``directory`` emptied with the sticky bit (archived)."""
    names = []
    for session, roll in list_log_files(directory):
        path = directory / f"log.{session}.{roll}"
        info = path.stat()
        if info.st_mode & stat.S_ISVTX:
            assert info.st_size == 0, path
            names.append(path.name)
    return names


def copies(running, stream: str) -> list[list[str]]:
    """Each node's input copy files of ``stream``."""
    return [
        [f"log.{s}.{r}" for s, r in list_log_files(Path(node.data) / "s" / "in" / stream)]
        for node in running.spec.nodes
    ]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_rolled_files_are_archived_on_every_node_and_the_publisher(cluster, tmp_path, procs):
    running = cluster(nodes=3, env=ENV)
    client = rt.Cluster.from_file(running.path)
    with rt.Publisher(client, "feed", log_dir=tmp_path, origin="p", roll_size=ROLL) as publisher:
        log_dir, stream = publisher.directory, publisher.stream
        publish(publisher, 60)  # about 20 files
        files = list_log_files(log_dir)
        assert len(files) > 10
        # Every rolled file but the last few is collected on the publisher and gone
        # from every node's copy, the file being written kept.
        wait_until(lambda: len(collected(log_dir)) >= len(files) - 3, 60, "archival")
        assert f"log.{files[-1][0]}.{files[-1][1]}" not in collected(log_dir)
        wait_until(lambda: all(len(c) <= 3 for c in copies(running, stream)), 30, "copies")
        sub = []
        with rt.Subscriber(client, log_dir=tmp_path / "sub", on_message=lambda m, p: sub.append(p)):
            wait_until(lambda: len(sub) == 6000, 60, "every message still delivered")

        # One node stopped: the files written meanwhile are not archived...
        supervisor = running.spec.nodes[2].pid
        sequencer = procs.child_running(supervisor, "rt-sequencer")
        os.kill(sequencer, signal.SIGSTOP)
        try:
            before = {f"log.{s}.{r}" for s, r in list_log_files(log_dir)}
            publish(publisher, 30)
            time.sleep(3.0)  # checkpoints, snapshots and gossip of the two others
            written_since = {f"log.{s}.{r}" for s, r in list_log_files(log_dir)} - before
            assert len(written_since) > 5
            assert not written_since & set(collected(log_dir))
        finally:
            os.kill(sequencer, signal.SIGCONT)
        # ...until it runs again.
        total = len(list_log_files(log_dir))
        wait_until(lambda: len(collected(log_dir)) >= total - 3, 60, "archival resumed")
