"""The session number in a Kubernetes ConfigMap (``KubernetesSessionStore``), through the
official ``kubernetes`` client, against the stand-in for the API (``k8s_standin``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from k8s_standin import KubernetesStandIn, configuration, running
from kubernetes.config import ConfigException

from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.session import KubernetesSessionStore, SessionStoreError, session_store


@pytest.fixture
def api() -> Iterator[KubernetesStandIn]:
    yield from running()


def store(server: KubernetesStandIn, name: str = "rt-session") -> KubernetesSessionStore:
    return KubernetesSessionStore(f"rt/{name}", configuration(server))


def test_a_missing_configmap_is_session_0_and_raising_creates_it(api: KubernetesStandIn) -> None:
    sessions = store(api)
    assert sessions.read() == 0
    sessions.check()  # nothing to write yet: fine
    assert sessions.raise_to(3) == 3
    assert api.objects[("configmaps", "rt", "rt-session")]["data"] == {"session": "3"}
    assert sessions.read() == 3
    assert sessions.raise_to(2) == 3  # never lowered
    assert sessions.raise_to(4) == 4
    sessions.check()


def test_raising_is_a_compare_and_swap_that_retries(api: KubernetesStandIn) -> None:
    sessions = store(api)
    sessions.raise_to(1)
    api.conflict_next = True  # another writer changes it between our read and write
    assert sessions.raise_to(2) == 2
    assert api.conflicts == 1
    # Three nodes of one reset raising at once: every one ends on the same number.
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(store(api).raise_to(5))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [5, 5, 5]
    assert sessions.read() == 5


def test_errors_are_clear(api: KubernetesStandIn) -> None:
    sessions = store(api)
    sessions.raise_to(1)
    api.read_only = True  # a Role that does not let the node update it
    with pytest.raises(SessionStoreError, match="403"):
        sessions.check()
    with pytest.raises(SessionStoreError, match="403"):
        sessions.raise_to(2)
    api.read_only = False
    api.objects[("configmaps", "rt", "rt-session")]["data"] = {"session": "not a number"}
    with pytest.raises(SessionStoreError, match="holds no session number"):
        sessions.read()
    api.shutdown()
    api.server_close()
    with pytest.raises(SessionStoreError, match="cannot reach the Kubernetes API"):
        KubernetesSessionStore("rt/rt-session", configuration(api)).read()


def test_a_cluster_description_names_its_configmap() -> None:
    node = NodeSpec(id=0, name="rt-feed-0", push="rt-feed-0:5002", pull="rt-feed-0:5001", rest="")
    spec = ClusterSpec(nodes=(node,), session_configmap="ns/rt-feed-session")
    with pytest.raises(ConfigException, match=r"[Ss]ervice"):  # not in a pod: no service account
        session_store(spec)
