"""Clusters named by the environment, as in a Kubernetes deployment (``env:STREAM``,
``rt.Cluster.from_env``), and servers binding all interfaces (``RT_LISTEN_HOST``)."""

from __future__ import annotations

import pytest

import rt
from rtcommon import env
from rtcommon.cluster import ClusterError, ClusterSpec


def test_nodes_are_named_as_rt_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RT_TOPIC_PREFIX", "internal--")
    monkeypatch.setenv("RT_REPLICAS", "3")
    cluster = rt.Cluster.from_env("feed")
    assert [node.push for node in cluster.nodes] == [f"internal--feed-{n}:5002" for n in range(3)]
    assert [node.pull for node in cluster.nodes] == [f"internal--feed-{n}:5001" for n in range(3)]
    assert cluster.quorum == 2
    assert ClusterSpec.from_file("env:feed") == cluster.spec  # what --cluster env:feed gives
    assert not cluster.spec.internal_tls and cluster.nodes[0].external == ""


def test_a_node_reads_the_rest_of_its_description() -> None:
    spec = ClusterSpec.from_env(
        "feed",
        {
            "RT_TOPIC_PREFIX": "rt-",
            "RT_REPLICAS": "1",
            "RT_TLS_DIR": "/etc/rt/tls",
            "RT_SESSION_CONFIGMAP": "rt-feed-session",
            "RT_CLUSTER_ID": "abc",
        },
    )
    [node] = spec.nodes
    assert (node.name, node.external, node.peer, node.data) == (
        "rt-feed-0",
        "rt-feed-0:5000",
        "rt-feed-0:5004",
        "/",
    )
    assert spec.internal_tls and spec.session_configmap == "rt-feed-session"
    assert spec.id == "abc" and spec.name == "feed"
    assert not spec.publisher_tls


def test_a_publisher_pod_pushes_by_certificate_when_the_nodes_ask_for_it() -> None:
    spec = ClusterSpec.from_env(
        "feed", {"RT_TOPIC_PREFIX": "rt-", "RT_PUBLISHER_TLS": "1", "RT_PUBLISHER_PAIR": "/p"}
    )
    # No CA store of its own: its pair (RT_PUBLISHER_PAIR) and the nodes' external ports.
    assert spec.publisher_tls and not spec.has_tls
    assert [node.external for node in spec.nodes] == [f"rt-feed-{n}:5000" for n in range(3)]


def test_bad_environments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="RT_REPLICAS"):
        ClusterSpec.from_env("feed", {"RT_REPLICAS": "2"})
    with pytest.raises(ClusterError, match=r"env:\.\./x"):
        ClusterSpec.from_env("../x", {})


def test_servers_bind_the_listen_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.listen_address("rt-feed-0:5002") == "rt-feed-0:5002"
    monkeypatch.setenv("RT_LISTEN_HOST", "0.0.0.0")
    assert env.listen_address("rt-feed-0:5002") == "0.0.0.0:5002"


def test_a_supervisor_takes_its_node_from_its_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from rt_supervisor.__main__ import host_ordinal

    monkeypatch.setattr(env, "hostname", lambda: "rt-feed-2.rt-feed.default.svc")
    assert host_ordinal() == 2
    monkeypatch.setattr(env, "hostname", lambda: "laptop")
    with pytest.raises(ValueError, match="give --node"):
        host_ordinal()
