"""rt-supervisor and rt-archiver as real processes: children started, restarted and taken
down, REST over real HTTP, the sequencer's health over real gRPC.

Where a test needs the sequencer to be in a given state whatever the sequencer does, a
stand-in owns the node's push port first (a gRPC health server, or a socket that never
answers): the real sequencer then cannot bind it, and the supervisor's probe meets the
stand-in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rt._launcher import build_spec, prepare_data
from rt_supervisor.reset import STEPS
from rtcommon.cluster import ClusterSpec, NodeSpec

BIN = Path(sys.executable).parent
START_TIMEOUT = 20.0
HttpGet = Callable[..., tuple[int, Any]]


@dataclass
class Supervisor:
    proc: subprocess.Popen[bytes]
    node: NodeSpec
    cluster: Path
    log_path: Path
    procs: Any  # the conftest's Procs
    http_get: HttpGet

    @property
    def url(self) -> str:
        return f"http://{self.node.rest}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_rest(self) -> None:
        def answers() -> bool:
            assert self.proc.poll() is None, f"supervisor exited; log:\n{self.log()}"
            try:
                return self.http_get(f"{self.url}/openapi.json", timeout=1)[0] == 200
            except OSError:
                return False

        self.procs.wait_until(answers, START_TIMEOUT, "the supervisor's REST API")

    def wait_child(self, script: str) -> int:
        return self.procs.wait_until(
            lambda: self.procs.child_running(self.proc.pid, script),
            START_TIMEOUT,
            f"a {script} child of the supervisor",
        )


@pytest.fixture
def node_files(tmp_path: Path, free_base_port: Callable[[], int]) -> tuple[Path, NodeSpec]:
    """A one-node cluster.json and data folder, as the launcher writes them."""
    data = tmp_path / "data"
    prepare_data(data, 1)
    spec = build_spec(data, 1, free_base_port(), roll_size=1 << 20)
    spec.to_file(data / "cluster.json")
    return data / "cluster.json", spec.node(0)


@pytest.fixture
def supervisor(
    node_files: tuple[Path, NodeSpec], tmp_path: Path, procs: Any, http_get: HttpGet
) -> Iterator[Callable[..., Supervisor]]:
    """A factory starting ``rt-supervisor`` for node 0 (keyword arguments add to its
    environment); each is SIGKILLed at teardown."""
    started: list[Supervisor] = []
    cluster, node = node_files

    def start(**environ: str) -> Supervisor:
        log = tmp_path / f"supervisor-{len(started)}.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [str(BIN / "rt-supervisor"), "--cluster", str(cluster), "--node", "0"],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env={**os.environ, **environ},
            )
        running = Supervisor(proc, node, cluster, log, procs, http_get)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


@contextlib.contextmanager
def health_stand_in(address: str) -> Iterator[health.HealthServicer]:
    """A gRPC health server on ``address``, without SO_REUSEPORT so nobody shares it."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)]
    )
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    assert server.add_insecure_port(address) != 0, f"cannot bind {address}"
    server.start()
    try:
        yield servicer
    finally:
        server.stop(0)


def test_reset_status_tells_down_from_up_as_design_section_8(
    supervisor: Callable[..., Supervisor], node_files: tuple[Path, NodeSpec], http_get: HttpGet
) -> None:
    with health_stand_in(node_files[1].push) as servicer:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        sup = supervisor()
        sup.wait_rest()
        status, body = http_get(f"{sup.url}/resetStatus")
        assert (status, body["hostname"], body["status"]) == (200, "node-0", "DOWN")
        assert "NOT_SERVING" in body["reason"]
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        for path in ("/resetStatus", "/resetStatus/"):  # RT's documentation writes the second
            assert http_get(f"{sup.url}{path}") == (200, {"hostname": "node-0", "status": "UP"})


def http_call(url: str, method: str = "GET", token: str | None = None) -> tuple[int, Any, Any]:
    """(status, JSON body, headers) of one request."""
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"null"), reply.headers
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if body else None, error.headers


def test_a_hard_reset_of_one_node_wipes_it_and_starts_the_next_session(
    supervisor: Callable[..., Supervisor], node_files: tuple[Path, NodeSpec], procs: Any
) -> None:
    cluster, node = node_files
    sup = supervisor()
    sup.wait_rest()
    procs.wait_until(
        lambda: http_call(f"{sup.url}/resetStatus")[1]["status"] == "UP", 30, "the node UP"
    )
    volume = Path(node.data) / "s"
    (volume / "in" / "some.stream").mkdir()
    (volume / "in" / "some.stream" / "log.0.0").write_bytes(b"x" * 100)
    first_out = volume / "out" / "log.0.0"
    assert first_out.exists() and any((volume / "state").iterdir())

    assert http_call(f"{sup.url}/hardReset")[:2] == (
        200,
        {"hostname": "node-0", "status": "Resetting"},
    )
    seen: list[str] = []

    def back_up() -> bool:
        status = http_call(f"{sup.url}/resetStatus")[1]["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == "UP"

    procs.wait_until(back_up, 60, "the node UP after the reset")
    assert set(seen) <= {"Not available for Reset", *STEPS, "UP"}, seen
    assert set(seen) & set(STEPS), seen  # it showed its steps
    assert Path(ClusterSpec.from_file(cluster).session_file).read_text().strip() == "1"
    assert not (volume / "in" / "some.stream").exists()
    assert first_out.exists() and first_out.stat().st_size == 0  # emptied, not deleted
    assert (volume / "out" / "log.1.0").exists()
    assert not (volume / ".reset").exists()
    status, body, _ = http_call(f"{sup.url}/latestOutPosition")
    assert (status, body["session"], body["position"]) == (200, 1, 1 << 44)
    sessions = http_call(f"{sup.url}/logHistory")[1]["sessions"]
    assert [(s["session"], s["bytes"]) for s in sessions] == [(0, 0), (1, 0)]


def test_the_reset_api_can_require_a_token_or_be_disabled(
    supervisor: Callable[..., Supervisor], node_files: tuple[Path, NodeSpec], http_get: HttpGet
) -> None:
    with health_stand_in(node_files[1].push) as servicer:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        sup = supervisor(RT_RESET_TOKEN="s3cret")
        sup.wait_rest()
        status, body, headers = http_call(f"{sup.url}/hardReset")
        assert (status, body["status"], headers["WWW-Authenticate"]) == (
            401,
            "Not available for Reset",
            "Bearer",
        )
        assert http_call(f"{sup.url}/hardReset", token="wrong")[0] == 403
        assert http_call(f"{sup.url}/hardReset", method="PUT", token="s3cret")[0] == 405
        assert http_call(f"{sup.url}/hardReset", method="HEAD", token="s3cret")[0] == 405
        for path in ("/health", "/resetStatus", "/resetStatus/"):  # monitors probe with HEAD
            assert http_call(f"{sup.url}{path}", method="HEAD")[0] == 200, path
        assert http_call(f"{sup.url}/noSuchThing")[0] == 404
        assert http_call(f"{sup.url}/resetStatus")[1]["status"] == "UP"  # reading is open
        sup.proc.kill()
        sup.proc.wait()

        sup = supervisor(RT_RESET_API="0")
        sup.wait_rest()
        status, body, _ = http_call(f"{sup.url}/hardReset")
        assert (status, body["status"]) == (403, "Not available for Reset")
        assert "disabled" in body["reason"]
        assert http_get(f"{sup.url}/resetStatus")[1]["status"] == "Not available for Reset"
        assert http_get(f"{sup.url}/docs")[0] == 200
        paths = http_get(f"{sup.url}/openapi.json")[1]["paths"]
        assert {"/hardReset", "/resetStatus", "/health", "/logHistory"} <= set(paths)


def test_health_follows_the_sequencer_grpc_health(
    supervisor: Callable[[], Supervisor], node_files: tuple[Path, NodeSpec], http_get: HttpGet
) -> None:
    with health_stand_in(node_files[1].push) as servicer:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        sup = supervisor()
        sup.wait_rest()
        status, body = http_get(f"{sup.url}/health")
        assert status == 503, body
        assert (body["hostname"], body["status"], body["sequencer"]) == (
            "node-0",
            "DOWN",
            "NOT_SERVING",
        )
        assert "NOT_SERVING" in body["reason"]

        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        status, body = http_get(f"{sup.url}/health")
        assert status == 200, body
        assert (body["hostname"], body["status"], body["sequencer"]) == ("node-0", "UP", "SERVING")
        assert set(body["children"]) == {"sequencer", "archiver"}


def test_health_is_503_while_nothing_answers_grpc_on_the_push_port(
    supervisor: Callable[[], Supervisor], node_files: tuple[Path, NodeSpec], http_get: HttpGet
) -> None:
    host, port = node_files[1].push.rsplit(":", 1)
    with socket.create_server((host, int(port))):  # listens, never answers
        sup = supervisor()
        sup.wait_rest()
        status, body = http_get(f"{sup.url}/health")
    assert status == 503, body
    assert (body["hostname"], body["status"], body["sequencer"]) == (
        "node-0",
        "DOWN",
        "UNREACHABLE",
    )
    assert node_files[1].push in body["reason"]


def test_health_is_200_once_the_sequencer_serves(
    supervisor: Callable[[], Supervisor], procs: Any, http_get: HttpGet
) -> None:
    """Needs the real sequencer (rt-sequencer serving gRPC health on the push port)."""
    sup = supervisor()
    sup.wait_rest()
    procs.wait_until(
        lambda: http_get(f"{sup.url}/health", timeout=3)[0] == 200,
        30,
        "/health to answer 200 (the sequencer serving)",
    )
    status, body = http_get(f"{sup.url}/health")
    assert status == 200, body
    assert body["sequencer"] == "SERVING"
    assert body["children"]["sequencer"]["running"] is True


def test_a_killed_child_is_restarted(supervisor: Callable[[], Supervisor], procs: Any) -> None:
    sup = supervisor()
    archiver = sup.wait_child("rt-archiver")
    procs.wait_until(
        lambda: "node-0 archiver: retention policy: " in sup.log(),
        START_TIMEOUT,
        "the archiver's line",
    )
    os.kill(archiver, signal.SIGKILL)
    replacement = procs.wait_until(
        lambda: (pid := procs.child_running(sup.proc.pid, "rt-archiver")) != archiver and pid,
        START_TIMEOUT,
        "a new archiver",
    )
    assert replacement != archiver
    assert procs.is_gone(archiver)
    procs.wait_until(
        lambda: "archiver exited (exit code -9 (SIGKILL))" in sup.log(),
        5,
        "the restart logged with the exit code",
    )
    for line in sup.log().splitlines():
        if " supervisor: " in line:
            assert " node-0 " in line, line


def test_sigkill_of_the_supervisor_takes_its_children_down(
    supervisor: Callable[[], Supervisor], procs: Any
) -> None:
    sup = supervisor()
    sup.wait_child("rt-archiver")
    children = procs.descendants(sup.proc.pid)
    assert children
    sup.proc.kill()
    sup.proc.wait()
    procs.wait_gone(children)


def test_sigterm_stops_the_children_and_exits_0(
    supervisor: Callable[[], Supervisor], procs: Any
) -> None:
    sup = supervisor()
    sup.wait_rest()
    sup.wait_child("rt-archiver")
    procs.wait_until(  # the archiver is past its start-up, checking its policy
        lambda: "archiver: retention policy: " in sup.log(),
        START_TIMEOUT,
        "the archiver's line",
    )
    children = procs.descendants(sup.proc.pid)
    started = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(timeout=20) == 0, sup.log()
    assert time.monotonic() - started < 10
    procs.wait_gone(children, timeout=5)
    assert "archiver stopped (exit code 0)" in sup.log()


def test_a_rest_port_in_use_fails_at_once(
    supervisor: Callable[[], Supervisor], node_files: tuple[Path, NodeSpec]
) -> None:
    rest = node_files[1].rest
    host, port = rest.rsplit(":", 1)
    with socket.create_server((host, int(port))):
        sup = supervisor()
        assert sup.proc.wait(timeout=20) == 1
    assert f"node-0 supervisor: cannot serve REST on {rest}" in sup.log()


def test_the_archiver_states_its_policy_and_stops_on_sigterm(
    node_files: tuple[Path, NodeSpec],
) -> None:
    """The policy comes from the environment, each setting overridden by its flag."""
    cluster, _ = node_files
    command = [str(BIN / "rt-archiver"), "--cluster", str(cluster), "--node", "0"]
    proc = subprocess.Popen(
        [*command, "--retention-duration", "60", "--interval", "0.2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RT_MAX_LOG_SIZE": "1Mi", "RT_RETENTION_DURATION": "5"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.strip().endswith(
            " INFO node-0 archiver: retention policy: retentionDuration 60 min, maxLogSize"
            " 1048576 bytes, maxDiskUsagePercent 90; checked every 0.2 s"
        ), line
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None and proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for bad, said in [
        (["--max-log-size", "5GB"], "RT_MAX_LOG_SIZE='5GB' is not a size"),
        (["--max-disk-usage-percent", "150"], "RT_MAX_DISK_USAGE_PERCENT=150 is above 100"),
        (["--interval", "0"], "RT_ARCHIVER_INTERVAL=0.0 must be above 0"),
    ]:
        refused = subprocess.run([*command, *bad], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1 and said in refused.stderr, refused.stderr
