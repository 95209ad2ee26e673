"""A stand-in for the part of the Kubernetes API that RT uses: ConfigMaps (the session
number) and Secrets (the cluster's TLS material), read, created and replaced with the
``resourceVersion`` compare-and-swap, dry runs, and the 404/409/403 answers the API
server gives. There is no API server on these machines; this is not one, only the
subset the stores use, for ``test_session_configmap`` and ``test_tls_and_registry``."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client

KINDS = {"configmaps": "ConfigMap", "secrets": "Secret"}


PATH = re.compile(r"/api/v1/namespaces/([^/]+)/(configmaps|secrets)(?:/([^/?]+))?(\?.*)?$")


class KubernetesStandIn(ThreadingHTTPServer):
    """ConfigMaps and Secrets by (kind, namespace, name); ``conflict_next`` answers the
    next replace with 409 after changing the object (another writer came first);
    ``read_only`` refuses writes."""

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
    server: KubernetesStandIn

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
        assert match and match[3], self.path
        with self.server.lock:
            found = self.server.objects.get((match[2], match[1], match[3]))
        self._answer(200, found) if found else self._answer(404, _status(404, "NotFound"))

    def do_POST(self) -> None:
        match = PATH.match(self.path)
        assert match and not match[3], self.path
        body = self._body()
        key = (match[2], match[1], body["metadata"]["name"])
        with self.server.lock:
            if self.server.read_only:
                return self._answer(403, _status(403, "Forbidden"))
            if key in self.server.objects:
                return self._answer(409, _status(409, "AlreadyExists"))
            body["metadata"]["resourceVersion"] = "1"
            body.update(kind=KINDS[match[2]], apiVersion="v1")
            self.server.objects[key] = body
        self._answer(201, body)

    def do_PUT(self) -> None:
        match = PATH.match(self.path)
        assert match and match[3], self.path
        body = self._body()
        key = (match[2], match[1], match[3])
        dry_run = "dryRun=All" in (match[4] or "")
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


def running() -> Iterator[KubernetesStandIn]:
    server = KubernetesStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()


def configuration(server: KubernetesStandIn) -> client.Configuration:
    """A client configuration that talks to ``server``."""
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    config.retries = 0
    return config
