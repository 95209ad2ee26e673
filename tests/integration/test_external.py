"""External publishers end to end (issue 10): a client registered with ``rt client add``
gets a token from the built-in issuer, enrols with the info-service, reads its details
and pushes to the nodes' external ports over mutual TLS; and everything an outsider
could get wrong is refused clearly, with nothing written.

One 3-node cluster serves the module (client certificates live 30 s, so renewal shows).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import rt
from rt_sequencer._peers import encode_message as encode_raft_message
from rt_sequencer.core import raft_id
from rt_sequencer.raft import Message, MessageType
from rtcommon import localhost
from rtcommon.cluster import ClusterSpec
from rtcommon.deathsig import dying_with_parent
from rtcommon.log import Codec, encode_message
from rtcommon.rest import rest_call
from rtcommon.tls import CertificateAuthority, FileCAStore, channel_credentials, client_identity
from rtproto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    peer_pb2,
    peer_pb2_grpc,
    push_pb2,
    push_pb2_grpc,
)

RunningCluster = Any  # conftest's
BIN = Path(sys.executable).parent
CERT_SECONDS = 30


@pytest.fixture(scope="module")
def running(module_cluster: Any) -> Any:
    return module_cluster(nodes=3, env={"RT_CLIENT_CERT_SECONDS": str(CERT_SECONDS)})


def add_client(running: RunningCluster, name: str, *topics: str) -> str:
    """``rt client add``; the secret it prints."""
    command = [str(BIN / "rt"), "client", "add", name, "--cluster", str(running.path)]
    for topic in topics:
        command += ["--topic", topic]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result
    printed = json.loads(result.stdout)
    assert printed["client_id"] == name
    return printed["client_secret"]


def rt_pub(spec: ClusterSpec, client_id: str) -> list[str]:
    return [str(BIN / "rt"), "pub", "--info-service", spec.info_service, "--client-id", client_id]


def token(spec: ClusterSpec, client_id: str, secret: str) -> str:
    url = f"{spec.info_service}/realms/rt/protocol/openid-connect/token"
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    status, answer = rest_call(url, method="POST", form=form, timeout=10)
    assert status == 200, answer
    return answer["access_token"]


def call(spec: ClusterSpec, method: str, path: str, token: str = "", body: Any = None):
    return rest_call(
        f"{spec.info_service}{path}", method=method, token=token, json_body=body, timeout=10
    )


def enrol(spec: ClusterSpec, bearer: str, name: str, *topics: str) -> str:
    status, answer = call(
        spec, "POST", "/clientcontroller/enrol", bearer, {"name": name, "topics": list(topics)}
    )
    assert status == 200, answer
    return answer["id"]


def details(spec: ClusterSpec, bearer: str, enrolment: str) -> dict[str, Any]:
    status, answer = call(spec, "GET", f"/informationservice/details/{enrolment}", bearer)
    assert status == 200, answer
    return answer


def push_opening(
    address: str, credentials: grpc.ChannelCredentials, stream: str, topic: str
) -> push_pb2.PushReply:
    """Open a push on the external port and return the node's first answer."""
    opening = push_pb2.PushRequest(open=push_pb2.PushOpen(stream=stream, topic=topic))
    with grpc.secure_channel(address, credentials) as channel:
        replies = push_pb2_grpc.PushStub(channel).Push(iter([opening]), timeout=10)
        return next(iter(replies))


def in_copies(spec: ClusterSpec, stream: str) -> list[Path]:
    return [
        Path(node.data, "s", "in", stream)
        for node in spec.nodes
        if Path(node.data, "s", "in", stream).exists()
    ]


def test_an_external_publisher_enrols_and_publishes_with_mutual_tls(
    running: RunningCluster, tmp_path: Path
) -> None:
    spec = running.spec
    secret = add_client(running, "pubA", "feed", "prices.dedup")
    registry = Path(spec.clients_file).read_text()
    assert secret not in registry and "pubA" in registry  # kept hashed
    assert Path(spec.clients_file).stat().st_mode & 0o077 == 0

    cluster = rt.Cluster.from_info_service(
        spec.info_service, client_id="pubA", client_secret=secret
    )
    try:
        assert [node.push for node in cluster.nodes] == [node.external for node in spec.nodes]
        assert cluster.spec.id == spec.id
        with rt.Publisher(cluster, "feed", log_dir=tmp_path / "pub") as publisher:
            for n in range(500):
                publisher.publish({"n": n})
            publisher.flush(30)
    finally:
        cluster.close()
    # The nodes hold it as the client's own stream, and subscribers inside see it all.
    assert len(in_copies(spec, "_pubA.feed")) == 3
    received: list[int] = []
    done = threading.Event()

    def on_message(message: Any, position: Any) -> None:
        received.append(message.data["n"])
        if len(received) == 500:
            done.set()

    with rt.Subscriber(spec, log_dir=tmp_path / "sub", on_message=on_message):
        assert done.wait(30), len(received)
    assert received == list(range(500))


def test_rt_pub_through_the_info_service(running: RunningCluster, tmp_path: Path) -> None:
    spec = running.spec
    secret = add_client(running, "pubcli", "clifeed")
    result = subprocess.run(
        [*rt_pub(spec, "pubcli"), "--topic", "clifeed", "--log-dir", str(tmp_path)],
        input="1\n2\n3\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={"RT_CLIENT_SECRET": secret, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result
    assert "3 message(s) on topic clifeed, held by a quorum" in result.stderr
    assert len(in_copies(spec, "_pubcli.clifeed")) >= 2
    # Not enrolled for that topic: a clear error, nothing published.
    command = [*rt_pub(spec, "pubcli"), "--client-secret", secret, "--topic", "other"]
    other = subprocess.run(
        [*command, "--log-dir", str(tmp_path)],
        input="1\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode == 1, other
    assert "not enrolled to insert topic 'other'" in other.stderr


def test_bad_tokens_are_refused_with_401(running: RunningCluster) -> None:
    spec = running.spec
    secret = add_client(running, "tokens", "feed")
    good = token(spec, "tokens", secret)
    body = {"name": "tokens", "topics": {"insert": "feed"}}
    key_pem = Path(running.data, "info-service", "issuer.key").read_bytes()
    issuer_key = serialization.load_pem_private_key(key_pem, password=None)
    kid = jwt.get_unverified_header(good)["kid"]
    claims = jwt.decode(good, options={"verify_signature": False})
    now = int(time.time())
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def signed(key: Any, **changes: Any) -> str:
        return jwt.encode({**claims, **changes}, key, algorithm="RS256", headers={"kid": kid})

    bad = {
        "missing": "",
        "garbage": "not-a-token",
        "forged": signed(forger),
        "expired": signed(issuer_key, iat=now - 600, exp=now - 300),
        "wrong audience": signed(issuer_key, aud="someone-else"),
        "wrong issuer": signed(issuer_key, iss="http://elsewhere/realms/rt"),
    }
    for what, bearer in bad.items():
        status, answer = call(spec, "POST", "/clientcontroller/enrol", bearer, body)
        assert status == 401, (what, answer)
        assert answer["detail"], what
    # The same claims signed by the issuer are good: the refusals were for the reason named.
    status, enrolled = call(spec, "POST", "/clientcontroller/enrol", signed(issuer_key), body)
    assert status == 200
    # A topic the identity provider took away since: no new certificate for it.
    fewer = signed(issuer_key, rt_topics=["other"])
    status, answer = call(spec, "GET", f"/informationservice/details/{enrolled['id']}", fewer)
    assert status == 403 and "may no longer insert" in answer["detail"]
    # A wrong secret gets no token at all.
    url = f"{spec.info_service}/realms/rt/protocol/openid-connect/token"
    form = {"grant_type": "client_credentials", "client_id": "tokens", "client_secret": "x"}
    status, answer = rest_call(url, method="POST", form=form, timeout=10)
    assert (status, answer["error"]) == (401, "invalid_client")


def test_enrolment_ids_topics_and_names_are_checked(running: RunningCluster) -> None:
    spec = running.spec
    first = token(spec, "owner", add_client(running, "owner", "feed"))
    second = token(spec, "intruder", add_client(running, "intruder", "feed"))
    enrolment = enrol(spec, first, "owner", "feed")
    assert enrol(spec, first, "owner", "feed") == enrolment  # the same again: the same id
    # An unknown id, or another client's, is not found.
    path = "/informationservice/details/"
    assert call(spec, "GET", path + uuid.uuid4().hex, first)[0] == 404
    assert call(spec, "GET", path + enrolment, second)[0] == 404
    assert call(spec, "DELETE", f"/clientcontroller/enrol/{enrolment}", second)[0] == 404
    # A name another client holds, a topic the client may not insert, a malformed body.
    body = {"name": "owner", "topics": ["feed"]}
    assert call(spec, "POST", "/clientcontroller/enrol", second, body)[0] == 409
    body = {"name": "intruder", "topics": ["secret-topic"]}
    assert call(spec, "POST", "/clientcontroller/enrol", second, body)[0] == 403
    for body in ({"name": "a.b", "topics": ["feed"]}, {"name": "x", "topics": ["../x"]}, {}):
        status, answer = call(spec, "POST", "/clientcontroller/enrol", second, body)
        assert status == 422, (body, answer)
    status, openapi = call(spec, "GET", "/openapi.json")
    assert status == 200 and "/clientcontroller/enrol" in openapi["paths"]
    head = urllib.request.Request(f"{spec.info_service}/health", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as reply:
        assert reply.status == 200


def test_the_external_port_admits_only_what_the_certificate_allows(
    running: RunningCluster,
) -> None:
    spec = running.spec
    bearer = token(spec, "edge", add_client(running, "edge", "feed"))
    answer = details(spec, bearer, enrol(spec, bearer, "edge", "feed"))
    ca, cert, key = (answer[part].encode() for part in ("ca", "cert", "key"))
    assert answer["insert"]["insert"] == [f":{node.external}" for node in spec.nodes]
    assert client_identity(cert).topics == {"feed"}
    address = spec.nodes[0].external
    mine = channel_credentials(ca, cert, key)
    assert push_opening(address, mine, "_edge.feed", "feed").held == 0

    # A topic it did not enrol for, or another client's stream name: refused, no folder.
    for stream, topic in [
        ("_edge.other", "other"),
        ("_victim.feed", "feed"),
        ("edge.feed", "feed"),
    ]:
        with pytest.raises(grpc.RpcError) as refused:
            push_opening(address, mine, stream, topic)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
        assert in_copies(spec, stream) == []

    # Its records must name it as their origin: no speaking for another origin of a topic.
    def push_record(origin: str) -> push_pb2.PushReply:
        record = encode_message(b"x", origin=origin, ts=1, id=1, codec=Codec.RAW)
        requests = [
            push_pb2.PushRequest(open=push_pb2.PushOpen(stream="_edge.feed", topic="feed")),
            push_pb2.PushRequest(chunk=common_pb2.LogChunk(position=0, data=record)),
        ]
        with grpc.secure_channel(address, mine) as channel:
            replies = list(push_pb2_grpc.PushStub(channel).Push(iter(requests), timeout=10))
        return replies[-1]

    with pytest.raises(grpc.RpcError) as refused:
        push_record("billing")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "origin 'billing'" in refused.value.details()
    push_record("edge")  # its own origin: taken
    deadline = time.monotonic() + 10
    while True:
        with grpc.insecure_channel(spec.nodes[0].push) as channel:
            status = admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=10)
        held = {stream.stream: stream.held for stream in status.streams}
        if held.get("_edge.feed", 0) > 0:
            break
        assert time.monotonic() < deadline, held
        time.sleep(0.1)

    # Certificates from another CA, expired ones, and none at all fail the handshake.
    stranger = CertificateAuthority.create("stranger")
    foreign = stranger.issue_client("edge", ["feed"], datetime.timedelta(hours=1))
    ours = FileCAStore(spec.tls_dir).ca()
    expired = ours.issue_client("edge", ["feed"], datetime.timedelta(seconds=-60))
    for what, credentials in {
        "another CA": channel_credentials(ca, foreign.cert, foreign.key),
        "expired": channel_credentials(ca, expired.cert, expired.key),
        "no certificate": grpc.ssl_channel_credentials(root_certificates=ca),
    }.items():
        with pytest.raises(grpc.RpcError) as refused:
            push_opening(address, credentials, "_edge.feed", "feed")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, what
    # Plain text on the external port gets nowhere either.
    with pytest.raises(grpc.RpcError):
        push_opening(address, grpc.local_channel_credentials(), "_edge.feed", "feed")

    # Only Push is served there: no admin, peer or pull service.
    with grpc.secure_channel(address, mine) as channel, pytest.raises(grpc.RpcError) as refused:
        admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_certificates_are_renewed_and_unenrolling_revokes_them(
    running: RunningCluster, tmp_path: Path
) -> None:
    spec = running.spec
    secret = add_client(running, "leaver", "feed")
    bearer = token(spec, "leaver", secret)
    enrolment = enrol(spec, bearer, "leaver", "feed")
    first = details(spec, bearer, enrolment)
    assert details(spec, bearer, enrolment)["cert"] == first["cert"]  # fresh: kept
    time.sleep(CERT_SECONDS / 2 + 1)
    renewed = details(spec, bearer, enrolment)
    assert renewed["cert"] != first["cert"]  # past half its life: a new pair
    assert renewed["expires"] > first["expires"]

    cluster = rt.Cluster.from_info_service(
        spec.info_service, client_id="leaver", client_secret=secret
    )
    publisher = rt.Publisher(cluster, "feed", log_dir=tmp_path / "pub")
    try:
        publisher.publish("before")
        publisher.flush(30)
        assert cluster.enrolment is not None
        cluster.enrolment.unenrol()
        time.sleep(1.5)  # nodes read the revocation list at most every second
        publisher.publish("after")
        with pytest.raises(TimeoutError):
            publisher.flush(3)
        # The revoked pair opens no push either.
        ca, cert, key = (renewed[part].encode() for part in ("ca", "cert", "key"))
        with pytest.raises(grpc.RpcError) as refused:
            push_opening(
                spec.nodes[1].external, channel_credentials(ca, cert, key), "_leaver.feed", "feed"
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in refused.value.details()
    finally:
        with pytest.raises(TimeoutError):
            publisher.close(timeout=1)  # what it published after unenrolling never arrives
        cluster.close()
    assert call(spec, "GET", f"/informationservice/details/{enrolment}", bearer)[0] == 404


def test_only_the_cluster_s_nodes_speak_on_the_peer_listener(running: RunningCluster) -> None:
    """Forged peer traffic (issue 14: a PROPOSE or gossip from a non-member, heartbeats
    that depose the leader) gets nowhere: Peer is served only on the peer listeners, with
    mutual TLS, to the other nodes, each speaking only for itself."""
    spec = running.spec
    assert spec.internal_tls
    target = spec.nodes[0]
    store = FileCAStore(spec.tls_dir)
    ca = store.ca_cert()
    heartbeat = Message(MessageType.HEARTBEAT, src=raft_id(2), dst=raft_id(0), term=10**6)
    batch = peer_pb2.RaftBatch(from_node=2, messages=[encode_raft_message(heartbeat)])

    def raft(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.RpcError:
        channel = (
            grpc.secure_channel(address, credentials)
            if credentials is not None
            else grpc.insecure_channel(address)
        )
        with channel, pytest.raises(grpc.RpcError) as refused:
            peer_pb2_grpc.PeerStub(channel).Raft(iter([batch]), timeout=10)
        return refused.value

    # Not on the ports publishers and subscribers reach; no plain text on the peer port.
    assert raft(target.push, None).code() == grpc.StatusCode.UNIMPLEMENTED
    assert raft(target.pull, None).code() == grpc.StatusCode.UNIMPLEMENTED
    assert raft(target.peer, None).code() == grpc.StatusCode.UNAVAILABLE
    no_certificate = grpc.ssl_channel_credentials(root_certificates=ca)
    assert raft(target.peer, no_certificate).code() == grpc.StatusCode.UNAVAILABLE
    # A certificate of the same CA that names no node (an external client's).
    client = store.ca().issue_client("edge", ["feed"], datetime.timedelta(hours=1))
    outsider = channel_credentials(ca, client.cert, client.key)
    assert raft(target.peer, outsider).code() == grpc.StatusCode.PERMISSION_DENIED
    prune = admin_pb2.PruneRequest(before=1)
    with (
        grpc.secure_channel(target.peer, outsider) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        admin_pb2_grpc.AdminStub(channel).Prune(prune, timeout=10)  # nor Admin or Pull there
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A node speaking in another's name: node-1 sending node-2's heartbeat, or gossip.
    node_1 = channel_credentials(ca, *store.server_pair("node-1"))
    assert raft(target.peer, node_1).code() == grpc.StatusCode.PERMISSION_DENIED
    with grpc.secure_channel(target.peer, node_1) as channel:
        state = peer_pb2.NodeState(node=2, held={"x.feed": 10**12})
        with pytest.raises(grpc.RpcError) as refused:
            peer_pb2_grpc.PeerStub(channel).Gossip(iter([state]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Nothing reached Raft: the term did not move to the forged one.
    with grpc.insecure_channel(target.push) as channel:
        status = admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=10)
    assert status.term < 10**6


def test_an_external_identity_provider_is_trusted_through_its_jwks(
    running: RunningCluster, tmp_path: Path
) -> None:
    """RT_OIDC_ISSUER (Keycloak in production): a second info-service trusts the first's
    built-in issuer as it would a Keycloak realm, fetching its JWKS over HTTP, and has no
    issuer of its own."""
    spec = running.spec
    issuer = f"{spec.info_service}/realms/rt"
    port = localhost.find_free_base_port()
    command = [str(BIN / "rt-info-service"), "--cluster", str(running.path), "--data"]
    command += [str(tmp_path / "info"), "--listen", f"127.0.0.1:{port}"]
    log = tmp_path / "info-service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            dying_with_parent(command),
            stdout=out,
            stderr=out,
            env={**os.environ, "RT_OIDC_ISSUER": issuer},
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while localhost.port_free(port):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        status, config = rest_call(f"{url}/informationservice/config", timeout=10)
        assert status == 200 and config["token_endpoint"].startswith(issuer)
        status, _ = rest_call(f"{url}/realms/rt/protocol/openid-connect/certs", timeout=10)
        assert status == 404  # no issuer of its own
        secret = add_client(running, "kc", "feed")
        bearer = token(spec, "kc", secret)
        body = {"name": "kc", "topics": ["feed"]}
        status, answer = rest_call(
            f"{url}/clientcontroller/enrol", method="POST", token=bearer, json_body=body, timeout=10
        )
        assert status == 200, answer
        forged = jwt.encode(
            jwt.decode(bearer, options={"verify_signature": False}),
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": jwt.get_unverified_header(bearer)["kid"]},
        )
        status, _ = rest_call(
            f"{url}/clientcontroller/enrol", method="POST", token=forged, json_body=body, timeout=10
        )
        assert status == 401
        # The whole client flow through it: the token from the provider its config names.
        cluster = rt.Cluster.from_info_service(url, client_id="kc", client_secret=secret)
        try:
            with rt.Publisher(cluster, "feed", log_dir=tmp_path / "pub") as publisher:
                publisher.publish("through an external provider")
                publisher.flush(30)
        finally:
            cluster.close()
    finally:
        process.terminate()
        process.wait(30)
