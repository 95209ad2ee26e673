"""Internal publishers authenticated by certificate (issue 14, "authenticated peers and
publishers"): a cluster started with ``rt cluster up --publisher-tls`` takes a push only
over mutual TLS with a certificate of its CA, on a node's external port. A host's
publisher pair (``rt cert publisher``) covers that host's streams alone, any topic, any
origin; the internal push ports refuse every push; ``rt cert revoke`` shuts a pair out.

One 3-node cluster serves the module.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_external import in_copies

import rt
from rtcommon import env
from rtcommon.log import Codec, LogWriter, encode_message
from rtcommon.replication import Replicator
from rtcommon.tls import channel_credentials, client_identity, read_publisher_pair
from rtproto.v1 import admin_pb2, admin_pb2_grpc, common_pb2, push_pb2, push_pb2_grpc

RunningCluster = Any  # conftest's
BIN = Path(sys.executable).parent
PER_PUBLISHER = 4


@pytest.fixture(scope="module")
def running(module_cluster: Any) -> Any:
    return module_cluster(
        nodes=3, args=["--publisher-tls"], env={"RT_MAX_STREAMS_PER_PUBLISHER": str(PER_PUBLISHER)}
    )


def rt_cert(*words: str) -> dict[str, str]:
    result = subprocess.run(
        [str(BIN / "rt"), "cert", *words], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def push(
    address: str,
    credentials: grpc.ChannelCredentials,
    stream: str,
    topic: str,
    *records: bytes,
    owner: str = "0123456789abcdef",
) -> push_pb2.PushReply:
    """A push of ``records`` (at offset 0) opened as ``stream`` of ``topic`` from the log
    ``owner``; the node's last answer."""
    opening = push_pb2.PushOpen(stream=stream, topic=topic, owner=owner)
    requests = [push_pb2.PushRequest(open=opening)]
    if records:
        data = b"".join(records)
        requests.append(push_pb2.PushRequest(chunk=common_pb2.LogChunk(position=0, data=data)))
    with grpc.secure_channel(address, credentials) as channel:
        replies = list(push_pb2_grpc.PushStub(channel).Push(iter(requests), timeout=10))
    return replies[-1]


def wait_held(node: Any, stream: str, size: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with grpc.insecure_channel(node.push) as channel:
            status = admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=10)
        held = {each.stream: each.held for each in status.streams}
        if held.get(stream) == size:
            return
        assert time.monotonic() < deadline, held
        time.sleep(0.1)


def test_this_host_publishes_with_its_pair_and_plain_pushes_are_refused(
    running: RunningCluster, tmp_path: Path
) -> None:
    spec = running.spec
    assert spec.publisher_tls and spec.publisher_pair
    assert client_identity(read_publisher_pair(spec.publisher_pair)[1]).name == env.hostname()
    with rt.Publisher(spec, "feed", log_dir=tmp_path / "pub", codec="raw") as publisher:
        stream = publisher.stream
        for n in range(1000):
            publisher.publish(n.to_bytes(4, "little"))
        publisher.flush(30)
    assert stream.startswith(f"{env.hostname()}-") and len(in_copies(spec, stream)) == 3
    received: list[int] = []
    done = threading.Event()

    def on_message(message: Any, position: Any) -> None:
        received.append(int.from_bytes(message.data, "little"))
        if len(received) == 1000:
            done.set()

    with rt.Subscriber(spec, log_dir=tmp_path / "sub", on_message=on_message):
        assert done.wait(30), len(received)
    assert received == list(range(1000))

    # The internal push port takes no push at all now, and says where to push instead.
    opening = push_pb2.PushRequest(open=push_pb2.PushOpen(stream="intruder.feed", topic="feed"))
    with (
        grpc.insecure_channel(spec.nodes[0].push) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        list(push_pb2_grpc.PushStub(channel).Push(iter([opening]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "external port" in refused.value.details()
    assert in_copies(spec, "intruder.feed") == []


def test_a_publisher_pair_covers_its_own_streams_alone(
    running: RunningCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = running.spec
    printed = rt_cert("publisher", "web-7", "--cluster", str(running.path), "--out", str(tmp_path))
    assert printed["publisher"] == "web-7" and int(printed["serial"]) > 0
    assert (tmp_path / "publisher.key").stat().st_mode & 0o077 == 0
    ca, cert, key = read_publisher_pair(tmp_path)
    mine = channel_credentials(ca, cert, key)
    address = spec.nodes[1].external

    # Its streams, of any topic, with records of any origin (HA pairs share origins).
    record = encode_message(b"x", origin="billing", ts=1, id=1, codec=Codec.RAW)
    push(address, mine, "web-7.feed", "feed", record)
    wait_held(spec.nodes[1], "web-7.feed", len(record))
    assert push(address, mine, "web-7-0123abcd.quotes", "quotes").held == 0
    # Another host's streams, a client's, or a topic the name does not end in: refused.
    for stream, topic in [
        ("web-8.feed", "feed"),
        ("web-70.feed", "feed"),
        ("web-7-xyz.feed", "feed"),
        ("_edge.feed", "feed"),
        ("web-7.other", "feed"),
    ]:
        with pytest.raises(grpc.RpcError) as refused:
            push(address, mine, stream, topic)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, stream
        assert in_copies(spec, stream) == []

    # A push that names no log could reach into a stream another log of the id began.
    with pytest.raises(grpc.RpcError) as refused:
        push(address, mine, "web-7.feed", "feed", owner="")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as refused:
        push(address, mine, "web-7.feed", "feed", owner="another log")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Ids that would read as another's streams are never issued.
    for bad in ("_edge", "web-0123abcd"):
        command = [str(BIN / "rt"), "cert", "publisher", bad, "--cluster", str(running.path)]
        result = subprocess.run(
            [*command, "--out", str(tmp_path / bad)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 2 and "publisher id" in result.stderr, result

    # A publisher asking for another id than its certificate's is stopped before writing.
    monkeypatch.setenv("RT_PUBLISHER_PAIR", str(tmp_path))
    with pytest.raises(ValueError, match="web-7"):
        rt.Publisher(spec, "feed", log_dir=tmp_path / "pub", publisher_id="web-8")


def test_a_publisher_opens_so_many_streams_on_a_node(
    running: RunningCluster, tmp_path: Path
) -> None:
    spec = running.spec
    rt_cert("publisher", "busy", "--cluster", str(running.path), "--out", str(tmp_path))
    mine = channel_credentials(*read_publisher_pair(tmp_path))
    address = spec.nodes[0].external
    for n in range(PER_PUBLISHER):
        push(address, mine, f"busy.t{n}", f"t{n}")
    with pytest.raises(grpc.RpcError) as refused:
        push(address, mine, "busy-0123abcd.more", "more")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "RT_MAX_STREAMS_PER_PUBLISHER" in refused.value.details()
    assert in_copies(spec, "busy-0123abcd.more") == []
    push(address, mine, "busy.t0", "t0")  # its streams go on
    rt_cert("publisher", "other", "--cluster", str(running.path), "--out", str(tmp_path / "o"))
    other = channel_credentials(*read_publisher_pair(tmp_path / "o"))
    push(address, other, "other.more", "more")  # another publisher's count is its own


def test_a_revoked_pair_is_shut_out(running: RunningCluster, tmp_path: Path) -> None:
    spec = running.spec
    issued = rt_cert("publisher", "leaver", "--cluster", str(running.path), "--out", str(tmp_path))
    mine = channel_credentials(*read_publisher_pair(tmp_path))
    address = spec.nodes[2].external
    assert push(address, mine, "leaver.feed", "feed").held == 0
    # Asked again while it is good, the folder keeps its pair.
    kept = rt_cert("publisher", "leaver", "--cluster", str(running.path), "--out", str(tmp_path))
    assert kept["serial"] == issued["serial"]
    printed = rt_cert("revoke", str(tmp_path), "--cluster", str(running.path))
    assert printed["revoked"].endswith("publisher.pem")
    assert printed["serial"] == issued["serial"]
    deadline = time.monotonic() + 10
    while True:  # the nodes read the list again within a second
        try:
            push(address, mine, "leaver.feed", "feed")
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "revoked" in refused.details()
            break
        assert time.monotonic() < deadline, "a revoked pair still pushes"
        time.sleep(0.2)
    # Asked again, the folder gets a new pair, not the revoked one back.
    again = rt_cert("publisher", "leaver", "--cluster", str(running.path), "--out", str(tmp_path))
    assert again["serial"] != issued["serial"]
    push(address, channel_credentials(*read_publisher_pair(tmp_path)), "leaver.feed", "feed")


def test_a_publisher_without_its_pair_is_told_so(
    running: RunningCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RT_PUBLISHER_PAIR", str(tmp_path / "nowhere"))
    with pytest.raises(rt.TLSError, match="no publisher pair"):
        rt.Publisher(running.spec, "feed", log_dir=tmp_path / "pub")
    assert not (tmp_path / "pub").exists()


def test_the_agent_ships_a_directory_with_this_host_s_pair(
    running: RunningCluster, tmp_path: Path
) -> None:
    spec = running.spec
    command = [str(BIN / "rt-publisher-agent"), "--cluster", str(running.path), "--log-dir"]
    # A directory named for another publisher id is refused before anything is sent.
    refused = subprocess.run(
        [*command, str(tmp_path / "elsewhere.feed")], capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 2 and "publisher certificate" in refused.stderr, refused

    stream = f"{env.hostname()}.agentfeed"
    with LogWriter(tmp_path / stream) as writer:
        for i in range(1, 501):
            end = writer.append(encode_message(b"r", origin="w", ts=i, id=i, codec=Codec.RAW))
    agent = subprocess.Popen(
        [*command, str(tmp_path / stream), "--topic", "agentfeed"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for node in spec.nodes:
            wait_held(node, stream, end)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, errors = agent.communicate(timeout=30)
    assert agent.returncode == 0, errors


def test_a_push_whose_channel_cannot_be_opened_is_tried_again(
    running: RunningCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Opening a node's channel can fail (here the pair's folder is missing at first, as
    while a renewal is put in place): the link says why in a line and tries again as for
    any fault of a push (not left to the replicator's restart of a link that failed
    unexpectedly), and the stream gets through once the pair is there."""
    rt_cert("publisher", "web-9", "--cluster", str(running.path), "--out", str(tmp_path / "p"))
    monkeypatch.setenv("RT_PUBLISHER_PAIR", str(tmp_path / "pair"))
    cluster = rt.Cluster(running.spec)
    with LogWriter(tmp_path / "web-9.feed") as writer:
        for i in range(1, 101):
            end = writer.append(encode_message(b"r", origin="w", ts=i, id=i, codec=Codec.RAW))
    replicator = Replicator(
        tmp_path / "web-9.feed", None, running.spec, topic="feed", connect=cluster.connect
    ).start()
    try:
        time.sleep(1.0)  # links fail to open their channels meanwhile
        (tmp_path / "p").rename(tmp_path / "pair")
        assert replicator.wait_replicated(end, 30), replicator.held
    finally:
        replicator.stop()
    said = [record.getMessage() for record in caplog.records]
    assert any("cannot open a channel" in line and "no publisher pair" in line for line in said)
    assert not any("restarting it" in line for line in said), said
