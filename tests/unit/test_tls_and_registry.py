"""The cluster's TLS material (``rtcommon.tls``) and the built-in issuer's client registry
(``rtcommon.registry``), on real files."""

from __future__ import annotations

import base64
import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest
from k8s_standin import configuration, running

from rtcommon.registry import ClientNameError, ClientRegistry, RegistryError
from rtcommon.streams import folder_publisher_id, publishes_into
from rtcommon.tls import (
    CertificateAuthority,
    FileCAStore,
    KubernetesCAStore,
    TLSError,
    client_identity,
    read_publisher_pair,
    save_publisher_pair,
)


def test_a_client_certificate_names_the_client_and_its_topics() -> None:
    authority = CertificateAuthority.create("test")
    pair = authority.issue_client("pubA", ["feed", "prices.dedup"], datetime.timedelta(hours=1))
    identity = client_identity(pair.cert)
    assert identity.name == "pubA"
    assert identity.topics == {"feed", "prices.dedup"}
    assert identity.serial == pair.serial
    assert abs(identity.not_after - (time.time() + 3600)) < 5
    # A server certificate of the same CA names no client: it cannot push as one.
    server = authority.issue_server("node-0", ["127.0.0.1", "localhost"])
    with pytest.raises(TLSError, match="names no RT client"):
        client_identity(server.cert)
    with pytest.raises(TLSError):
        client_identity(b"not a certificate")


def test_a_publisher_certificate_names_the_publisher_and_covers_its_streams(
    tmp_path: Path,
) -> None:
    authority = CertificateAuthority.create("test")
    pair = authority.issue_publisher("web-7")
    identity = client_identity(pair.cert)
    assert (identity.name, identity.publisher, identity.topics) == ("web-7", True, frozenset())
    assert abs(identity.not_after - (time.time() + 90 * 86400)) < 5
    client = authority.issue_client("web-7", ["feed"], datetime.timedelta(hours=1))
    assert not client_identity(client.cert).publisher
    save_publisher_pair(tmp_path, authority.cert_pem, pair)
    assert read_publisher_pair(tmp_path) == (authority.cert_pem, pair.cert, pair.key)
    assert (tmp_path / "publisher.key").stat().st_mode & 0o077 == 0
    with pytest.raises(TLSError, match="no publisher pair"):
        read_publisher_pair(tmp_path / "none")

    # Its streams: <id>.<topic>, and <id>-<8 hex>.<topic> for publishers with folders.
    assert publishes_into("web-7", "web-7.feed", "feed")
    assert publishes_into("web-7", "web-7.a.b.dedup", "a.b.dedup")
    own_folder = folder_publisher_id("web-7", tmp_path)
    assert publishes_into("web-7", f"{own_folder}.feed", "feed")
    for stream, topic in [
        ("web-8.feed", "feed"),
        ("web-70.feed", "feed"),
        ("web.feed", "feed"),
        ("web-7-0123abcg.feed", "feed"),
        ("web-7-0123abcd0.feed", "feed"),
        ("web-7.feed", "other"),
        ("web-7feed", "feed"),
        ("_web-7.feed", "feed"),
    ]:
        assert not publishes_into("web-7", stream, topic), stream


def test_the_file_store_keeps_one_ca_and_fresh_server_pairs(tmp_path: Path) -> None:
    store = FileCAStore(tmp_path / "tls")
    first = store.ensure_ca("c")
    assert store.ensure_ca("c").cert_pem == first.cert_pem  # kept, not made again
    assert (tmp_path / "tls" / "ca.key").stat().st_mode & 0o077 == 0
    store.ensure_server_pair("node-0", ["127.0.0.1"])
    cert, key = store.server_pair("node-0")
    assert (tmp_path / "tls" / "node-0.key").stat().st_mode & 0o077 == 0
    store.ensure_server_pair("node-0", ["127.0.0.1"])
    assert store.server_pair("node-0") == (cert, key)  # still good: kept
    store.ensure_server_pair("node-0", ["127.0.0.1", "node-0.example"])
    assert store.server_pair("node-0")[0] != cert  # other hosts: issued again
    with pytest.raises(TLSError, match=r"node-9\.pem"):
        store.server_pair("node-9")


def test_revocation_is_listed_until_the_certificate_ends(tmp_path: Path) -> None:
    store = FileCAStore(tmp_path)
    store.ensure_ca("c")
    assert not store.is_revoked(7)
    store.revoke([(7, time.time() + 60), (8, time.time() - 1)])
    reader = FileCAStore(tmp_path)  # another process's view (a node's)
    assert reader.is_revoked(7)
    assert not reader.is_revoked(8)  # past its end: refused anyway, not listed
    assert json.loads((tmp_path / "revoked.json").read_text()).keys() == {"7"}
    (tmp_path / "revoked.json").write_text("{damaged")
    with pytest.raises(TLSError, match="damaged"):
        FileCAStore(tmp_path).is_revoked(7)


def test_the_registry_keeps_secrets_hashed(tmp_path: Path) -> None:
    registry = ClientRegistry(tmp_path / "clients.json")
    secret = registry.add("pubA", ["feed", "feed", "other"])
    text = (tmp_path / "clients.json").read_text()
    assert secret not in text and "scrypt$" in text
    assert (tmp_path / "clients.json").stat().st_mode & 0o077 == 0
    record = registry.authenticate("pubA", secret)
    assert record is not None and record.topics == ("feed", "other")
    assert registry.authenticate("pubA", secret + "x") is None
    assert registry.authenticate("nobody", secret) is None
    with pytest.raises(RegistryError, match="registered already"):
        registry.add("pubA", ["feed"])
    for name in ("a.b", "", "x" * 65, "a/b"):
        with pytest.raises(ClientNameError):
            registry.add(name, ["feed"])
    with pytest.raises(ValueError):
        registry.add("pubB", ["../etc"])
    with pytest.raises(ClientNameError):
        registry.add("pubB", [])
    (tmp_path / "clients.json").write_text("[{")
    with pytest.raises(RegistryError, match="damaged"):
        registry.authenticate("pubA", secret)


def test_a_ca_from_unreadable_pem_is_refused_clearly() -> None:
    with pytest.raises(TLSError, match="not readable PEM"):
        CertificateAuthority.from_pem(b"x", b"y")


def test_the_kubernetes_store_reads_secrets_and_revokes_in_them(tmp_path: Path) -> None:
    files = FileCAStore(tmp_path)  # made as deploy/README.md says, then put in Secrets
    files.ensure_ca("c")
    files.ensure_server_pair("rt-feed-0", ["rt-feed-0"], node_id=0)

    def secret(name: str, keys: dict[str, bytes]) -> dict[str, Any]:
        data = {key: base64.b64encode(value).decode() for key, value in keys.items()}
        return {"metadata": {"name": name, "resourceVersion": "1"}, "data": data}

    for server in running():
        cert, key = files.server_pair("rt-feed-0")
        server.objects[("secrets", "rt", "rt-feed-tls")] = secret(
            "rt-feed-tls", {"ca.pem": files.ca_cert(), "rt-feed-0.pem": cert, "rt-feed-0.key": key}
        )
        server.objects[("secrets", "rt", "rt-feed-ca")] = secret(
            "rt-feed-ca", {"ca.key": (tmp_path / "ca.key").read_bytes()}
        )
        node = KubernetesCAStore("rt/rt-feed-tls", configuration=configuration(server))
        issuer = KubernetesCAStore("rt/rt-feed-tls", "rt/rt-feed-ca", configuration(server))
        assert node.ca_cert() == files.ca_cert()
        assert node.server_pair("rt-feed-0") == (cert, key)
        assert issuer.ca().cert_pem == files.ca().cert_pem
        with pytest.raises(TLSError, match="no Secret holding the CA's key"):
            node.ca()
        pair = issuer.ca().issue_client("pubA", ["feed"], datetime.timedelta(hours=1))
        assert not node.is_revoked(pair.serial)
        server.conflict_next = True  # a concurrent writer: the revocation is retried
        issuer.revoke([(pair.serial, pair.not_after)])
        assert KubernetesCAStore("rt/rt-feed-tls", configuration=configuration(server)).is_revoked(
            pair.serial
        )
        with pytest.raises(TLSError, match=r"holds no rt-feed-9\.pem"):
            node.server_pair("rt-feed-9")
        server.read_only = True
        with pytest.raises(TLSError, match="403"):
            issuer.revoke([(1, time.time() + 60)])
