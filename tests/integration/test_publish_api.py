"""The language-neutral API (issue 10): ``rtproto.v1.Publisher/Publish`` served by a
``rt-publisher-agent --listen`` sidecar, and ``rtproto.v1.Subscriber/Subscribe`` served by
the nodes, driven from Python's generated stubs here and from Node.js in
``test_node_client.py``. One 3-node cluster and one sidecar serve the module."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import msgspec
import pytest

import rt
from rtcommon import localhost
from rtcommon.deathsig import dying_with_parent
from rtproto.v1 import publisher_pb2, publisher_pb2_grpc

BIN = Path(sys.executable).parent


class Sidecar:
    def __init__(self, cluster_path: Path, log_root: Path) -> None:
        self.port = localhost.find_free_base_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_root = log_root
        command = [str(BIN / "rt-publisher-agent"), "--cluster", str(cluster_path)]
        command += ["--listen", self.address, "--log-root", str(log_root)]
        self.log = log_root.parent / "sidecar.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(dying_with_parent(command), stderr=out, stdout=out)
        deadline = time.monotonic() + 30
        while localhost.port_free(self.port):
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture(scope="module")
def running(module_cluster: Any) -> Any:
    return module_cluster(nodes=3)


@pytest.fixture(scope="module")
def sidecar(running: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    agent = Sidecar(running.path, tmp_path_factory.mktemp("sidecar") / "logs")
    yield agent
    assert agent.stop() == 0, agent.log.read_text()


def packed(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


def publish(
    address: str, topic: str, batches: list[list[publisher_pb2.PublishMessage]]
) -> list[publisher_pb2.PublishReply]:
    """One Publish call: open, the batches, half-close; every reply until the agent ends."""
    requests = [publisher_pb2.PublishRequest(open=publisher_pb2.PublishOpen(topic=topic))]
    requests += [
        publisher_pb2.PublishRequest(batch=publisher_pb2.PublishBatch(messages=batch))
        for batch in batches
    ]
    with grpc.insecure_channel(address) as channel:
        stub = publisher_pb2_grpc.PublisherStub(channel)
        return list(stub.Publish(iter(requests), timeout=60))


def test_messages_published_through_the_sidecar_reach_subscribers_in_order(
    running: Any, sidecar: Sidecar, tmp_path: Path
) -> None:
    batches = [
        [
            publisher_pb2.PublishMessage(
                payload=packed(["upd", "trade", {"n": n}]), codec=publisher_pb2.MSGPACK
            )
            for n in range(start, start + 500)
        ]
        for start in range(0, 3000, 500)
    ]
    batches.append([publisher_pb2.PublishMessage(payload=b"\x00raw bytes", tags=["raw"])])
    replies = publish(sidecar.address, "api", batches)
    assert replies[0].stream.endswith(".api") and replies[0].window > 0
    positions = [position for reply in replies for position in reply.positions]
    assert len(positions) == 3001 and positions == sorted(set(positions))
    assert replies[-1].durable == 3001
    assert replies[-1].replicated >= positions[-1]  # the call ends once a quorum holds all

    received: list[Any] = []
    done = threading.Event()

    def on_message(message: Any, position: Any) -> None:
        received.append(message.data)
        if len(received) == 3001:
            done.set()

    with rt.Subscriber(running.spec, log_dir=tmp_path / "sub", on_message=on_message):
        assert done.wait(30), len(received)
    assert [item[2]["n"] for item in received[:3000]] == list(range(3000))
    assert received[3000] == b"\x00raw bytes"

    # The same messages, decoded by a node, through Subscribe; a tag filter on the way.
    request = publisher_pb2.SubscribeRequest(
        **{"from": publisher_pb2.SubscribeRequest.START}, tags=["upd", "trade"]
    )
    seen: list[publisher_pb2.DeliveredMessage] = []
    with grpc.insecure_channel(running.spec.nodes[1].pull) as channel:
        call = publisher_pb2_grpc.SubscriberStub(channel).Subscribe(request, timeout=30)
        for reply in call:
            seen += reply.messages
            if len(seen) >= 3000:
                call.cancel()
                break
    assert [msgspec.msgpack.decode(m.payload)[2]["n"] for m in seen] == list(range(3000))
    assert all(tuple(m.tags) == ("upd", "trade") for m in seen)
    assert seen[0].codec == publisher_pb2.MSGPACK and seen[0].id == 1 and seen[0].origin


def test_malformed_messages_end_the_call_and_write_nothing(sidecar: Sidecar) -> None:
    good = publisher_pb2.PublishMessage(payload=packed(1), codec=publisher_pb2.MSGPACK)
    cases = {
        "not msgpack": publisher_pb2.PublishMessage(payload=b"\xc1", codec=publisher_pb2.MSGPACK),
        "unknown codec": publisher_pb2.PublishMessage(payload=b"x", codec=7),
        "three tags": publisher_pb2.PublishMessage(payload=b"x", tags=["a", "b", "c"]),
        "id out of sequence": publisher_pb2.PublishMessage(payload=b"x", id=5),
        "origin too long": publisher_pb2.PublishMessage(payload=b"x", origin="o" * 300),
    }
    for what, bad in cases.items():
        topic = "bad" + str(abs(hash(what)) % 10_000)
        with pytest.raises(grpc.RpcError) as refused:
            publish(sidecar.address, topic, [[good, bad, good]])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert "message 1" in refused.value.details(), (what, refused.value.details())
    for topic in ("", "../escape", "/an/absolute/path"):
        with pytest.raises(grpc.RpcError) as refused:
            publish(sidecar.address, topic, [[good]])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, topic
    assert not Path("/an/absolute/path").exists()


def test_a_client_that_does_not_read_replies_cannot_run_past_its_window(
    sidecar: Sidecar,
) -> None:
    from rt_publisher_agent._publish import WINDOW

    message = publisher_pb2.PublishMessage(payload=b"y" * 10)
    opening = publisher_pb2.PublishRequest(open=publisher_pb2.PublishOpen(topic="flood"))
    flood = publisher_pb2.PublishRequest(
        batch=publisher_pb2.PublishBatch(messages=[message] * (WINDOW + 1))
    )
    with grpc.insecure_channel(sidecar.address) as channel:
        stub = publisher_pb2_grpc.PublisherStub(channel)
        call = stub.Publish(iter([opening, flood]), timeout=60)
        with pytest.raises(grpc.RpcError) as refused:
            for _ in call:
                pass
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "past the window" in refused.value.details()
    # Within the window, it is all published; the agent still serves others.
    replies = publish(sidecar.address, "flood2", [[message] * WINDOW])
    assert replies[-1].durable == WINDOW


def test_subscribe_refuses_bad_positions(running: Any, sidecar: Sidecar) -> None:
    publish(sidecar.address, "positions", [[publisher_pb2.PublishMessage(payload=b"z")]])
    node = running.spec.nodes[0]
    with grpc.insecure_channel(node.pull) as channel:
        stub = publisher_pb2_grpc.SubscriberStub(channel)
        start = publisher_pb2.SubscribeRequest(**{"from": publisher_pb2.SubscribeRequest.START})
        for reply in stub.Subscribe(start, timeout=30):
            if reply.messages:  # the merged log holds a record: position 1 is inside it
                break
        bad = [(1, grpc.StatusCode.INVALID_ARGUMENT), (1 << 60, grpc.StatusCode.OUT_OF_RANGE)]
        for position, code in bad:
            request = publisher_pb2.SubscribeRequest(position=position)
            with pytest.raises(grpc.RpcError) as refused:
                next(iter(stub.Subscribe(request, timeout=10)))
            assert refused.value.code() == code
        request = publisher_pb2.SubscribeRequest(tags=["a", "b", "c"])
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stub.Subscribe(request, timeout=10)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


NODE_CLIENT = Path(__file__).parent / "node"


def node_modules() -> None:
    """Install the Node.js client's packages from the npm registry (its package-lock.json)
    into its ignored node_modules folder, once."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the any-language test (Debian: nodejs, npm)")
    if (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=NODE_CLIENT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result


def node(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        ["node", str(NODE_CLIENT / "client.js"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result
    return json.loads(result.stdout.splitlines()[-1])


def test_a_node_js_client_publishes_and_subscribes(
    running: Any, sidecar: Sidecar, tmp_path: Path
) -> None:
    node_modules()
    count = 10_000
    published = node("publish", sidecar.address, "from-node", str(count))
    assert published["durable"] == count and published["positions"] == count
    assert published["ordered"] and int(published["replicated"]) >= int(published["last"])

    received: list[int] = []
    done = threading.Event()

    def on_message(message: Any, position: Any) -> None:
        if message.origin == "node-client":
            received.append(json.loads(message.data)["n"])
            if len(received) == count:
                done.set()

    with rt.Subscriber(running.spec, log_dir=tmp_path / "sub", on_message=on_message):
        assert done.wait(60), len(received)
        time.sleep(0.5)  # nothing more arrives: exactly once
    assert received == list(range(count))

    subscribed = node("subscribe", running.spec.nodes[2].pull, str(count))
    assert subscribed == {"received": count, "inOrder": True, "ordered": True}
