"""The session number in a Kubernetes ConfigMap (``KubernetesSessionStore``), through the
official ``kubernetes`` client, against a stand-in: a local HTTP server that speaks the
ConfigMap subset of the Kubernetes API (read, create, replace with ``resourceVersion``
compare-and-swap, dry runs, 404/409/403 as the API server answers them). There is no
API server on these machines; this is not one, only the part of one the store uses."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from kubernetes.config import ConfigException

from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.session import KubernetesSessionStore, SessionStoreError, session_store

PATH = re.compile(r"/api/v1/namespaces/([^/]+)/configmaps(?:/([^/?]+))?(\?.*)?$")


class ConfigMapStandIn(ThreadingHTTPServer):
    """ConfigMaps by (namespace, name); ``conflict_next`` answers the next replace with 409
    after changing the object (another writer came first); ``read_only`` refuses writes."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.conflict_next = False
        self.read_only = False
        self.conflicts = 0


def _status(code: int, reason: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": reason,
    }


class _Handler(BaseHTTPRequestHandler):
    server: ConfigMapStandIn

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_GET(self) -> None:
        match = PATH.match(self.path)
        assert match and match[2], self.path
        with self.server.lock:
            found = self.server.objects.get((match[1], match[2]))
        self._answer(200, found) if found else self._answer(404, _status(404, "NotFound"))

    def do_POST(self) -> None:
        match = PATH.match(self.path)
        assert match and not match[2], self.path
        body = self._body()
        key = (match[1], body["metadata"]["name"])
        with self.server.lock:
            if self.server.read_only:
                return self._answer(403, _status(403, "Forbidden"))
            if key in self.server.objects:
                return self._answer(409, _status(409, "AlreadyExists"))
            body["metadata"]["resourceVersion"] = "1"
            body.update(kind="ConfigMap", apiVersion="v1")
            self.server.objects[key] = body
        self._answer(201, body)

    def do_PUT(self) -> None:
        match = PATH.match(self.path)
        assert match and match[2], self.path
        body = self._body()
        key = (match[1], match[2])
        dry_run = "dryRun=All" in (match[3] or "")
        with self.server.lock:
            held = self.server.objects.get(key)
            if self.server.read_only:
                return self._answer(403, _status(403, "Forbidden"))
            if held is None:
                return self._answer(404, _status(404, "NotFound"))
            if self.server.conflict_next and not dry_run:
                self.server.conflict_next = False
                held["metadata"]["resourceVersion"] = str(
                    int(held["metadata"]["resourceVersion"]) + 1
                )
            if body["metadata"].get("resourceVersion") != held["metadata"]["resourceVersion"]:
                self.server.conflicts += 1
                return self._answer(409, _status(409, "Conflict"))
            if not dry_run:
                body["metadata"]["resourceVersion"] = str(
                    int(held["metadata"]["resourceVersion"]) + 1
                )
                self.server.objects[key] = body
        self._answer(200, body)


@pytest.fixture
def api() -> Iterator[ConfigMapStandIn]:
    server = ConfigMapStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def store(server: ConfigMapStandIn, name: str = "rt-session") -> KubernetesSessionStore:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    return KubernetesSessionStore(name, "rt", configuration)


def test_a_missing_configmap_is_session_0_and_raising_creates_it(api: ConfigMapStandIn) -> None:
    sessions = store(api)
    assert sessions.read() == 0
    sessions.check()  # nothing to write yet: fine
    assert sessions.raise_to(3) == 3
    assert api.objects[("rt", "rt-session")]["data"] == {"session": "3"}
    assert sessions.read() == 3
    assert sessions.raise_to(2) == 3  # never lowered
    assert sessions.raise_to(4) == 4
    sessions.check()


def test_raising_is_a_compare_and_swap_that_retries(api: ConfigMapStandIn) -> None:
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


def test_errors_are_clear(api: ConfigMapStandIn) -> None:
    sessions = store(api)
    sessions.raise_to(1)
    api.read_only = True  # a Role that does not let the node update it
    with pytest.raises(SessionStoreError, match="403"):
        sessions.check()
    with pytest.raises(SessionStoreError, match="403"):
        sessions.raise_to(2)
    api.read_only = False
    api.objects[("rt", "rt-session")]["data"] = {"session": "not a number"}
    with pytest.raises(SessionStoreError, match="holds no session number"):
        sessions.read()
    api.shutdown()
    api.server_close()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{api.server_address[1]}"
    configuration.retries = 0
    with pytest.raises(SessionStoreError, match="cannot reach the Kubernetes API"):
        KubernetesSessionStore("rt-session", "rt", configuration).read()


def test_a_cluster_description_names_its_configmap() -> None:
    node = NodeSpec(id=0, name="rt-feed-0", push="rt-feed-0:5002", pull="rt-feed-0:5001", rest="")
    spec = ClusterSpec(nodes=(node,), session_configmap="ns/rt-feed-session")
    with pytest.raises(ConfigException, match=r"[Ss]ervice"):  # not in a pod: no service account
        session_store(spec)
