"""The hard reset end to end (DESIGN section 8): a real 3-node cluster, publishers sending
through it, a running ``rt.Subscriber`` and ``rt sub``, the REST API over real HTTP.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

import rt
from rt_supervisor.reset import NOT_AVAILABLE, STEPS
from rtcommon.log import file_start, list_log_files, read_log
from rtproto.v1 import control_pb2, control_pb2_grpc

BIN = Path(sys.executable).parent
ROLL = 64 << 10
SESSION_1 = file_start(1, 0)


def rest(node, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://{node.rest}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Publishers:
    """Two publishers sending steadily from their own threads until stopped."""

    def __init__(self, cluster: rt.Cluster, root: Path) -> None:
        self.sent = {"alpha": 0, "beta": 0}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(cluster, root, name)) for name in self.sent
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, cluster: rt.Cluster, root: Path, name: str) -> None:
        try:
            with rt.Publisher(cluster, "feed", log_dir=root / name, origin=name) as publisher:
                while not self._stop.is_set():
                    for _ in range(50):
                        self.sent[name] += 1
                        publisher.publish(("upd", "trade", {"n": self.sent[name]}))
                    time.sleep(0.01)
                publisher.flush(timeout=120)
        except BaseException as exc:  # reported by the test thread
            self.errors.append(exc)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(180)
        assert not self.errors, self.errors


class Received:
    """A subscriber's messages and events, in delivery order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, Any]] = []
        self.lock = threading.Lock()

    def message(self, message, position) -> None:
        with self.lock:
            self.items.append(("message", (message.origin, message.id), position))

    def event(self, kind, positions) -> None:
        with self.lock:
            self.items.append(("event", kind, positions))

    def count(self) -> int:
        with self.lock:
            return len(self.items)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def statuses(spec) -> list[str]:
    """Each node's reset status ("unreachable" while its supervisor is down)."""

    def status(node) -> str:
        try:
            return rest(node, "/resetStatus")[1]["status"]
        except OSError:
            return "unreachable"

    return [status(node) for node in spec.nodes]


def assert_merged_logs_identical(spec, records: int) -> None:
    """Every node's merged log holds ``records`` records in session 1, the same bytes."""
    outs = [Path(node.data) / "s" / "out" for node in spec.nodes]
    wait_until(
        lambda: {len(read_log(out, SESSION_1)) for out in outs} == {records},
        60,
        f"every node's merged log to hold {records} records",
    )
    names = [f"log.{s}.{r}" for s, r in list_log_files(outs[0]) if s == 1]
    assert names
    for out in outs[1:]:
        _, mismatch, errors = filecmp.cmpfiles(outs[0], out, names, shallow=False)
        assert (mismatch, errors) == ([], [])


def assert_new_session_holds_every_publisher_log_once(received: Received, sent: dict) -> None:
    """After a reset, publishers send their whole local logs again (RT's documented
    duplicates): the new session holds each origin's ids 1..N once, in order."""
    after = [
        item
        for kind, item, position in received.items
        if kind == "message" and position > SESSION_1
    ]
    for origin, total in sent.items():
        assert [i for o, i in after if o == origin] == list(range(1, total + 1)), origin


def test_a_hard_reset_while_publishers_send_reaches_subscribers_once(cluster, tmp_path):
    running = cluster(nodes=3, env={"RT_ROLL_SIZE": str(ROLL)})
    spec = running.spec
    client = rt.Cluster.from_file(running.path)
    received = Received()
    subscriber = rt.Subscriber(
        client, log_dir=tmp_path / "sub", on_message=received.message, on_event=received.event
    ).start()
    rt_sub = subprocess.Popen(
        [str(BIN / "rt"), "sub", "--cluster", str(running.path)],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "rt-sub.err").open("w"),
        text=True,
    )
    cli_lines: list[dict] = []
    reader = threading.Thread(
        target=lambda: cli_lines.extend(json.loads(line) for line in rt_sub.stdout), daemon=True
    )
    reader.start()
    publishers = Publishers(client, tmp_path / "pub")
    try:
        wait_until(lambda: received.count() > 2000 and cli_lines, 60, "messages before the reset")

        assert rest(spec.nodes[0], "/hardReset") == (
            200,
            {"hostname": "node-0", "status": "Resetting"},
        )
        status, body = rest(spec.nodes[1], "/hardReset")
        assert (status, body["hostname"], body["status"]) == (503, "node-1", NOT_AVAILABLE)

        seen: list[set[str]] = [set() for _ in spec.nodes]

        def all_up() -> bool:
            now = statuses(spec)
            for node_seen, status in zip(seen, now, strict=True):
                node_seen.add(status)
            return now == ["UP"] * 3

        wait_until(all_up, 120, "every node UP after the reset")
        for node_seen in seen:
            assert node_seen & set(STEPS), seen  # each node showed steps
        assert Path(spec.session_file).read_text().strip() == "1"

        before = received.count()
        wait_until(lambda: received.count() > before + 2000, 60, "messages after the reset")
    finally:
        publishers.stop()
    wait_until(
        lambda: (
            sum(1 for k, i, p in received.items if k == "message" and p > SESSION_1)
            >= sum(publishers.sent.values())
        ),
        120,
        "every message of the publishers' logs in the new session",
    )
    subscriber.unsubscribe()
    wait_until(
        lambda: any("event" in line for line in cli_lines) and cli_lines[-1]["pos"] > SESSION_1,
        60,
        "rt sub to print the reset and go on",
    )
    rt_sub.send_signal(signal.SIGINT)
    rt_sub.wait(30)

    events = [(item, position) for kind, item, position in received.items if kind == "event"]
    assert len(events) == 1 and events[0][0] == "reset", events
    reached, resumed = events[0][1]
    assert resumed == SESSION_1
    event_at = next(i for i, item in enumerate(received.items) if item[0] == "event")
    assert all(p < SESSION_1 for k, _, p in received.items[:event_at])
    assert all(p > SESSION_1 for k, _, p in received.items[event_at + 1 :])
    assert reached == received.items[event_at - 1][2]  # the end of the last message before
    assert_new_session_holds_every_publisher_log_once(received, publishers.sent)
    assert_merged_logs_identical(spec, sum(publishers.sent.values()))

    cli_events = [line for line in cli_lines if "event" in line]
    assert cli_events == [{"event": "reset", "pos": [cli_events[0]["pos"][0], SESSION_1]}]

    for node in spec.nodes:  # stopped for the reset, never crashed
        health = rest(node, "/health")[1]
        assert health["children"]["sequencer"]["restarts"] == 0, health
        assert rest(node, "/logHistory")[1]["sessions"][0]["bytes"] == 0  # session 0 emptied


def test_a_node_killed_during_a_reset_completes_it_when_it_returns(cluster, tmp_path):
    """With a reset token, which the supervisors pass to each other on Control calls."""
    running = cluster(nodes=3, env={"RT_ROLL_SIZE": str(ROLL), "RT_RESET_TOKEN": "s3cret"})
    spec = running.spec
    client = rt.Cluster.from_file(running.path)
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub", origin="alpha") as publisher:
        for n in range(3000):
            publisher.publish(("upd", "trade", {"n": n}))
        publisher.flush(timeout=60)

    with grpc.insecure_channel(spec.nodes[1].control) as channel:  # no token: refused
        with pytest.raises(grpc.RpcError) as refused:
            control_pb2_grpc.ControlStub(channel).Reserve(control_pb2.ResetOrder(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    victim = spec.nodes[2]
    marker = Path(victim.data) / "s" / ".reset"
    request = urllib.request.Request(f"http://{spec.nodes[0].rest}/hardReset")
    request.add_header("Authorization", "Bearer s3cret")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert json.loads(reply.read())["status"] == "Resetting"
    wait_until(marker.exists, 30, "the victim to begin its wipe")
    os.kill(victim.pid, signal.SIGKILL)  # its supervisor mid-reset, and with it its children

    wait_until(lambda: statuses(running.spec) == ["UP"] * 3, 120, "every node UP again")
    assert running.spec.nodes[2].pid != victim.pid  # the launcher started it again
    assert "node-2 supervisor: completing a hard reset to session 1 interrupted here" in (
        running.log()
    )
    assert not marker.exists()
    victim_out = Path(victim.data) / "s" / "out"
    assert all(
        (victim_out / f"log.0.{r}").stat().st_size == 0
        for s, r in list_log_files(victim_out)
        if s == 0
    )

    # The cluster goes on in session 1 with all three nodes: a new publisher's messages
    # reach every node's merged log identically.
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub-2", origin="beta") as publisher:
        for n in range(500):
            publisher.publish(("upd", "trade", {"n": n}))
        publisher.flush(timeout=60)
    assert_merged_logs_identical(running.spec, 500)
    merged = read_log(Path(victim.data) / "s" / "out", SESSION_1)
    assert {r.origin for r in merged} == {"beta"}


def rt_cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rt"), *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_rt_reset_asks_first_needs_the_token_and_follows_the_steps(cluster, tmp_path):
    running = cluster(nodes=1, env={"RT_RESET_TOKEN": "s3cret"})
    data = str(running.data)
    refused = rt_cli("reset", "--cluster", data, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "pass --yes" in refused.stderr

    no_token = rt_cli("reset", "--cluster", data, "--yes", env={**os.environ, "RT_RESET_TOKEN": ""})
    assert no_token.returncode == 1 and "answered 401" in no_token.stderr

    done = rt_cli("reset", "--cluster", data, "--yes", "--token", "s3cret")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "node-0: Resetting" and lines[-1] == "reset done: every node is UP"
    assert {line.removeprefix("node-0: ") for line in lines[1:-1]} & set(STEPS), lines
    assert Path(running.spec.session_file).read_text().strip() == "1"

    status = rt_cli("status", "--cluster", data, "--json")
    node = json.loads(status.stdout)["nodes"][0]
    assert (node["reset"], node["session"], node["out_position"]) == ("UP", 1, SESSION_1)
    table = rt_cli("status", "--cluster", data).stdout.splitlines()
    assert table[0].split()[-1] == "RESET" and table[1].split()[-1] == "UP"


@pytest.mark.parametrize("keep_entries", [None, 50], ids=["replayed", "from-snapshot"])
def test_a_soft_reset_rebuilds_a_node_whose_state_was_deleted(cluster, tmp_path, keep_entries):
    env = {"RT_ROLL_SIZE": str(ROLL)}
    if keep_entries is not None:  # the leader compacts: the node installs a snapshot
        env["RT_RAFT_KEEP_ENTRIES"] = str(keep_entries)
    running = cluster(nodes=3, env=env)
    spec = running.spec
    client = rt.Cluster.from_file(running.path)

    def publish(origin: str, count: int) -> None:
        with rt.Publisher(client, "feed", log_dir=tmp_path / origin, origin=origin) as publisher:
            for n in range(count):
                publisher.publish(("upd", "trade", {"n": n}))
                if n % 10 == 9:
                    publisher.flush(timeout=60)  # many Raft entries, not one
            publisher.flush(timeout=60)

    publish("alpha", 3000)
    victim = spec.nodes[1]
    state = Path(victim.data) / "s" / "state"
    term_before = json.loads(rt_cli("status", "--cluster", str(running.data), "--json").stdout)
    term_before = max(node.get("term", 0) for node in term_before["nodes"])
    # The state is lost under the running node (which may write a file meanwhile).
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(exist_ok=True)
    assert rest(victim, "/softReset") == (200, {"hostname": "node-1", "status": "Resetting"})
    assert rest(victim, "/softReset")[0] == 503  # one at a time
    wait_until(lambda: statuses(spec) == ["UP"] * 3, 60, "every node UP after the soft reset")
    assert (state / "raft" / "hardstate").exists()

    publish("beta", 500)
    outs = [Path(node.data) / "s" / "out" for node in spec.nodes]
    wait_until(
        lambda: {len(read_log(out)) for out in outs} == {3500},
        60,
        "the rebuilt node to hold the merged log again",
    )
    merged = read_log(outs[1])
    assert [r.origin for r in merged].count("alpha") == 3000
    assert [r.origin for r in merged].count("beta") == 500
    names = [f"log.{s}.{r}" for s, r in list_log_files(outs[0])]
    _, mismatch, errors = filecmp.cmpfiles(outs[0], outs[1], names, shallow=False)
    assert (mismatch, errors) == ([], [])
    rejoined = re.search(
        r"node-1 holds data but no Raft state: rejoining at term (\d+)", running.log()
    )
    assert rejoined and int(rejoined[1]) > term_before  # above every term before
    installed = "INFO node-1 sequencer: installing a snapshot" in running.log()
    assert installed == (keep_entries is not None)


def test_a_one_node_cluster_refuses_a_soft_reset(cluster):
    running = cluster(nodes=1)
    status, body = rest(running.spec.nodes[0], "/softReset")
    assert (status, body["status"]) == (409, NOT_AVAILABLE)
    assert "no peers" in body["reason"]


def test_rt_clients_lists_the_publishers_and_subscribers_connected(cluster, tmp_path):
    running = cluster(nodes=1)
    node = running.spec.nodes[0]
    client = rt.Cluster.from_file(running.path)
    received = Received()
    with (
        rt.Publisher(client, "feed", log_dir=tmp_path / "pub", origin="alpha") as publisher,
        rt.Subscriber(client, log_dir=tmp_path / "sub", on_message=received.message),
    ):
        for n in range(1000):
            publisher.publish(("upd", "trade", {"n": n}))
        publisher.flush(timeout=30)
        wait_until(lambda: received.count() == 1000, 30, "the messages delivered")
        clients = rest(node, "/rtClients")[1]["clients"]
        kinds = {c["kind"]: c for c in clients}
        assert set(kinds) == {"publisher", "subscriber"}, clients
        assert kinds["publisher"]["stream"].endswith(".feed")
        assert kinds["publisher"]["bytes"] > 0 and kinds["publisher"]["bytes_per_second"] > 0
        assert kinds["subscriber"]["position"] == received.items[-1][2]
        dedup = rest(node, "/dedupRtClients")
        assert dedup == (200, {"hostname": "node-0", "status": "UP", "clients": []})
    wait_until(lambda: rest(node, "/rtClients")[1]["clients"] == [], 10, "the clients gone")


def test_rt_sub_from_a_session_that_does_not_exist_fails_clearly(cluster):
    running = cluster(nodes=1)
    started = time.monotonic()
    result = rt_cli("sub", "--cluster", str(running.data), "--from", "0x10000000000000")
    assert result.returncode == 2, result.stderr
    assert "past the end" in result.stderr and "log.256.0 does not exist" in result.stderr
    assert time.monotonic() - started < 30  # it hung before
