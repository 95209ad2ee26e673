"""``rt.Cluster.from_info_service`` against servers that are not what it expects: a clear
``rt.EnrolmentError``, never a KeyError or a hang."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import rt
from rtcommon import localhost


class _NotAnInfoService(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps(["not", "an", "info-service"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def stranger() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotAnInfoService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_is_not_an_info_service(stranger: str) -> None:
    with pytest.raises(rt.EnrolmentError, match="names no token endpoint"):
        rt.Cluster.from_info_service(stranger, client_id="a", client_secret="b")


def test_nothing_listening() -> None:
    address = f"http://127.0.0.1:{localhost.find_free_base_port()}"
    with pytest.raises(rt.EnrolmentError, match="not answering"):
        rt.Cluster.from_info_service(address, client_id="a", client_secret="b")
