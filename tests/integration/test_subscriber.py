"""rt.Subscriber and ``rt sub`` against a real cluster (``rt cluster up``), fed by
rt.Publisher and ``rt pub``.

A subscriber's local copy must be the merged log byte for byte (same files, same bytes,
same positions as every node's ``s/out``), whichever node served it and however often it
switched; it delivers every message once, in order; a position handed to a callback
resumes with exactly the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rt._cluster import Cluster
from rt._publisher import Publisher
from rt._subscriber import Subscriber
from rtcommon.cluster import ClusterSpec
from rtcommon.log import Record, list_log_files, read_log

ClusterFactory = Callable[..., Any]
ROLL = 64 << 10  # the merged log rolls every 64 KiB: every test crosses many files
WAIT = 60.0


@pytest.fixture(autouse=True)
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RT_ROLL_SIZE", str(ROLL))


def publish(cluster: Cluster, log_dir: Path, numbers: range) -> None:
    """Publish ``("upd", "trade"|"quote", {"i": i, ...})`` for each i, held by a quorum."""
    with Publisher(cluster, "feed", log_dir=log_dir, origin="feeder", sync="none") as pub:
        for i in numbers:
            pub.publish(("upd", "trade" if i % 2 else "quote", {"i": i, "pad": "x" * 60}))
        pub.flush()


def out_dir(spec: ClusterSpec, node_id: int) -> Path:
    return Path(spec.node(node_id).data) / "s" / "out"


class Received:
    """What a subscriber's callbacks got; ``stop_after`` unsubscribes from the callback."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.messages: list[tuple[int, int]] = []  # (i, position)
        self.events: list[tuple[str, tuple[int, int]]] = []
        self.stop_after = stop_after
        self.subscriber: Subscriber | None = None
        self.changed = threading.Condition()

    def on_message(self, message: Record, position: int) -> None:
        with self.changed:
            self.messages.append((message.data[2]["i"], position))
            self.changed.notify_all()
        if self.stop_after is not None and len(self.messages) == self.stop_after:
            assert self.subscriber is not None
            self.subscriber.unsubscribe()

    def on_event(self, kind: str, positions: tuple[int, int]) -> None:
        self.events.append((kind, positions))

    def subscribe(self, cluster: Cluster, log_dir: Path, **kwargs: Any) -> Subscriber:
        self.subscriber = Subscriber(
            cluster, log_dir=log_dir, on_message=self.on_message, on_event=self.on_event, **kwargs
        )
        return self.subscriber.start()

    def wait_count(self, count: int, timeout: float = WAIT) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.messages) >= count, timeout):
                error = self.subscriber.error if self.subscriber else None
                pytest.fail(f"got {len(self.messages)} of {count} messages (error: {error!r})")

    @property
    def numbers(self) -> list[int]:
        return [i for i, _ in self.messages]


def merged_positions(spec: ClusterSpec, count: int, timeout: float = WAIT) -> list[int]:
    """The positions of node 0's merged log, once it holds ``count`` records."""
    deadline = time.monotonic() + timeout
    while len(positions := [r.position for r in read_log(out_dir(spec, 0))]) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"node-0 merged {len(positions)} of {count} records")
        time.sleep(0.05)
    return positions


def copy_mismatch(copy: Path, spec: ClusterSpec) -> str | None:
    """None if every file of the copy holds the bytes every node holds at the same
    positions, else which file differs."""
    files = list_log_files(copy)
    if not files:
        return f"no files in {copy}"
    for node in spec.nodes:
        out = out_dir(spec, node.id)
        for index, file in enumerate(files):
            name = f"log.{file[0]}.{file[1]}"
            local = (copy / name).read_bytes()
            try:
                remote = (out / name).read_bytes()
            except FileNotFoundError:
                return f"node-{node.id} has no {name}"
            if index == len(files) - 1:
                remote = remote[: len(local)]  # the node's open file may have grown since
            if local != remote:
                return f"{name} of {copy} differs from node-{node.id}'s"
    return None


def assert_copy_is_the_merged_log(copy: Path, spec: ClusterSpec, timeout: float = WAIT) -> None:
    """Wait for every node to hold what the copy holds (a restarted node catches up), and
    check the copy holds the same bytes at the same positions."""
    deadline = time.monotonic() + timeout
    while (mismatch := copy_mismatch(copy, spec)) is not None:
        if time.monotonic() > deadline:
            pytest.fail(mismatch)
        time.sleep(0.1)


def test_a_subscriber_from_the_start_gets_every_message_once_in_order(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    running = cluster(nodes=3)
    nodes = Cluster.from_file(running.path)
    publish(nodes, tmp_path / "pub", range(0, 3000))
    received = Received()
    with received.subscribe(nodes, tmp_path / "sub", node=1):
        publish(nodes, tmp_path / "pub", range(3000, 6000))  # and some while it runs
        received.wait_count(6000)
        time.sleep(0.3)  # nothing more may come
    assert received.numbers == list(range(6000))
    assert [p for _, p in received.messages] == merged_positions(running.spec, 6000)
    assert received.events == []
    assert len(list_log_files(tmp_path / "sub")) > 5  # the copy crossed many files
    assert_copy_is_the_merged_log(tmp_path / "sub", running.spec)


def test_a_position_from_a_callback_resumes_with_exactly_the_rest(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    running = cluster(nodes=3)
    nodes = Cluster.from_file(running.path)
    publish(nodes, tmp_path / "pub", range(4000))

    first = Received(stop_after=1234)
    assert first.subscribe(nodes, tmp_path / "copy", node=0).join(WAIT)
    assert first.subscriber is not None and first.subscriber.error is None
    assert first.numbers == list(range(1234))
    resume_at = first.messages[-1][1]
    assert first.subscriber.position == resume_at

    # From the same local copy (it goes on replicating), and from a fresh one.
    same_copy, fresh = Received(), Received()
    with (
        same_copy.subscribe(nodes, tmp_path / "copy", position=resume_at, node=2),
        fresh.subscribe(nodes, tmp_path / "fresh", position=resume_at, node=1),
    ):
        publish(nodes, tmp_path / "pub", range(4000, 4500))
        same_copy.wait_count(4500 - 1234)
        fresh.wait_count(4500 - 1234)
        time.sleep(0.3)
    assert same_copy.numbers == fresh.numbers == list(range(1234, 4500))
    assert same_copy.messages == fresh.messages
    assert_copy_is_the_merged_log(tmp_path / "copy", running.spec)


def test_switching_from_node_0_to_node_2_gives_the_same_bytes_at_the_same_positions(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    running = cluster(nodes=3)
    nodes = Cluster.from_file(running.path)
    publish(nodes, tmp_path / "pub", range(3000))

    from_node_0 = Received(stop_after=1500)
    subscriber = from_node_0.subscribe(nodes, tmp_path / "copy", node=0)
    assert subscriber.node == 0
    assert subscriber.join(WAIT)
    from_node_2 = Received()
    with from_node_2.subscribe(
        nodes, tmp_path / "copy", position=from_node_0.messages[-1][1], node=2
    ) as subscriber:
        assert subscriber.node == 2
        from_node_2.wait_count(1500)
    only_node_2 = Received()
    with only_node_2.subscribe(nodes, tmp_path / "node2", node=2):
        only_node_2.wait_count(3000)
    assert from_node_0.messages + from_node_2.messages == only_node_2.messages
    assert only_node_2.numbers == list(range(3000))
    for copy in (tmp_path / "copy", tmp_path / "node2"):
        assert_copy_is_the_merged_log(copy, running.spec)


def test_a_subscriber_goes_on_from_another_node_when_its_node_dies(
    cluster: ClusterFactory, tmp_path: Path
) -> None:
    running = cluster(nodes=3)
    nodes = Cluster.from_file(running.path)
    publish(nodes, tmp_path / "pub", range(2000))
    received = Received()
    with received.subscribe(nodes, tmp_path / "sub", node=0) as subscriber:
        received.wait_count(2000)
        supervisor = running.spec.nodes[0].pid
        assert supervisor is not None
        os.kill(supervisor, signal.SIGKILL)  # the whole node goes down, as a pod would
        publish(nodes, tmp_path / "pub", range(2000, 4000))
        received.wait_count(4000)
        assert subscriber.node != 0
        time.sleep(0.3)
        assert subscriber.error is None
    assert received.numbers == list(range(4000))
    assert_copy_is_the_merged_log(tmp_path / "sub", running.spec)


# -- rt sub ---------------------------------------------------------------------------------

# Runs `rt <command>` through the real argument parser and the command's run(), whether
# or not cli.py dispatches to it yet.
_RT = """
import sys
from importlib import import_module
from rt.cli import build_parser
args = build_parser().parse_args(sys.argv[1:])
sys.exit(import_module("rt._cmd_" + args.command).run(args))
"""


def rt(*args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = WAIT):
    return subprocess.run(
        [sys.executable, "-c", _RT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_rt_sub_prints_what_rt_pub_sent(cluster: ClusterFactory, tmp_path: Path) -> None:
    running = cluster(nodes=3)
    path = str(running.path)
    env = {"RT_LOG_PATH": str(tmp_path / "logs")}
    lines = ['{"sym": "A", "px": 1.5}', '["upd", "trade", {"x": 1}]', "hello world", "42"]
    sent = rt("pub", "--cluster", path, "--origin", "cli", stdin="\n".join(lines) + "\n", env=env)
    assert sent.returncode == 0, sent.stderr

    printed = rt("sub", "--cluster", path, "--count", "4", env=env)
    assert printed.returncode == 0, printed.stderr
    got = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [line["data"] for line in got] == [
        {"sym": "A", "px": 1.5},
        ["upd", "trade", {"x": 1}],
        "hello world",
        42,
    ]
    assert [line["on"] for line in got] == ["cli"] * 4
    assert [line["id"] for line in got] == [1, 2, 3, 4]
    assert [line["pos"] for line in got] == merged_positions(running.spec, 4)
    assert all(isinstance(line["ts"], int) and line["ts"] > 0 for line in got)
    assert not list((tmp_path / "logs").glob("rt-sub-*"))  # the temporary copy is gone

    rest = rt("sub", "--cluster", path, "--from", str(got[1]["pos"]), "--count", "2", env=env)
    assert rest.returncode == 0, rest.stderr
    assert [json.loads(line) for line in rest.stdout.splitlines()] == got[2:]

    trades = rt("sub", "--cluster", path, "--filter", "upd,trade", "--count", "1", env=env)
    assert trades.returncode == 0, trades.stderr
    assert [json.loads(line) for line in trades.stdout.splitlines()] == [got[1]]

    # --from end prints only what is published after it started: publish "after" until it
    # prints one (it may take a moment to reach the end).
    follower = subprocess.Popen(
        [sys.executable, "-c", _RT, "sub", "--cluster", path, "--from", "end", "--count", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        deadline = time.monotonic() + WAIT
        while follower.poll() is None and time.monotonic() < deadline:
            assert rt("pub", "--cluster", path, stdin="after\n", env=env).returncode == 0
            time.sleep(0.5)
        out, err = follower.communicate(timeout=10)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert [json.loads(line)["data"] for line in out.splitlines()] == ["after"]


def test_rt_sub_fails_clearly(cluster: ClusterFactory, tmp_path: Path) -> None:
    missing = rt("sub", "--cluster", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 2
    assert "rt sub: no cluster description" in missing.stderr

    running = cluster(nodes=1)
    path = str(running.path)
    malformed = rt("sub", "--cluster", path, "--from", "soon")
    assert malformed.returncode == 2
    assert "--from takes start, end or a position" in malformed.stderr

    publish(Cluster.from_file(running.path), tmp_path / "pub", range(10))
    end = merged_positions(running.spec, 10)[-1]
    past = rt("sub", "--cluster", path, "--from", str(end + 4096), timeout=30)
    assert past.returncode == 2, (past.returncode, past.stdout, past.stderr)
    assert "past the end of the merged log" in past.stderr
    assert past.stdout == ""

    # Stopped by SIGTERM, it removes its temporary copy.
    logs = tmp_path / "logs"
    follower = subprocess.Popen(
        [sys.executable, "-c", _RT, "sub", "--cluster", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RT_LOG_PATH": str(logs)},
    )
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["data"][2]["i"] == 0
        assert len(list(logs.glob("rt-sub-*"))) == 1
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=WAIT)
    finally:
        follower.kill()
    assert follower.returncode == 143
    assert not list(logs.glob("rt-sub-*"))
