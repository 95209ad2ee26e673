"""Fixtures for integration tests that run real processes on loopback.

- ``free_base_port()``: a base port B for ``rt cluster up --base-port B`` such that
  B..B+30 and B+1000..B+1030 are free on 127.0.0.1 (three nodes' ports).
- ``cluster(nodes=1, ...)``: runs ``rt cluster up`` as a subprocess, waits for its
  ``ready`` line and returns a :class:`RunningCluster` (``.spec``, ``.path``, ``.data``,
  ``.proc``, ``.stop()``); every cluster still running at teardown gets SIGTERM (then
  SIGKILL). The environment is passed through, so ``monkeypatch.setenv("RT_ROLL_SIZE",
  ...)`` reaches the nodes; ``env=`` adds variables for one cluster.
- ``procs``: process helpers (children of a pid, alive or gone, waiting) that read
  /proc directly (no psutil); ``http_get(url)``: (status, JSON or text) without proxies.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from rtcommon import localhost
from rtcommon.cluster import ClusterSpec

#: The venv's bin folder: rt, rt-supervisor, ... (as the commands themselves find them).
BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


# -- ports -------------------------------------------------------------------------------


@pytest.fixture
def free_base_port() -> Callable[[], int]:
    """``free_base_port()`` returns a fresh base port each call."""
    return localhost.find_free_base_port


# -- processes ---------------------------------------------------------------------------


class Procs:
    """Process helpers over /proc (Linux): ``rtcommon.localhost``, and waiting."""

    children = staticmethod(localhost.children)
    descendants = staticmethod(localhost.descendants)
    cmdline = staticmethod(localhost.cmdline)
    is_gone = staticmethod(localhost.is_gone)

    @classmethod
    def child_running(cls, pid: int, script: str) -> int | None:
        """The pid of ``pid``'s live child whose command runs ``script``, if any."""
        for child in cls.children(pid):
            if any(Path(arg).name == script for arg in cls.cmdline(child)[:2]):
                return child
        return None

    @staticmethod
    def wait_until(
        predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
    ) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(interval)

    @classmethod
    def wait_gone(cls, pids: Iterable[int], timeout: float = 15.0) -> None:
        pids = list(pids)
        cls.wait_until(
            lambda: all(cls.is_gone(pid) for pid in pids),
            timeout,
            f"processes to exit: still running {[p for p in pids if not cls.is_gone(p)]}",
        )


@pytest.fixture
def procs() -> type[Procs]:
    return Procs


# -- HTTP --------------------------------------------------------------------------------

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``url``: (status, parsed JSON, or text if not JSON). Raises if nothing answers."""
    try:
        with _opener.open(url, timeout=timeout) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


@pytest.fixture(name="http_get")
def http_get_fixture() -> Callable[..., tuple[int, Any]]:
    return http_get


# -- a running cluster -------------------------------------------------------------------


class RunningCluster:
    """``rt cluster up`` running as a subprocess (see the ``cluster`` fixture)."""

    def __init__(self, proc: subprocess.Popen[str], data: Path, base_port: int, log: Path):
        self.proc = proc
        self.data = data
        self.path = data / "cluster.json"
        self.base_port = base_port
        self.log_path = log  #: the launcher's stderr, with every node's log lines
        self.output: list[str] = []  #: the launcher's stdout lines read so far
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def spec(self) -> ClusterSpec:
        """The cluster description, read afresh (pids change when supervisors restart)."""
        return ClusterSpec.from_file(self.path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Wait for the line containing ``ready``; fail with the launcher's log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail(f"no 'ready' line within {timeout:g} s; log:\n{self.tail()}")
            if line is None:
                self.proc.wait()
                pytest.fail(
                    f"rt cluster up exited ({self.proc.returncode}) before 'ready'; "
                    f"log:\n{self.tail()}"
                )
            self.output.append(line)
            if "ready" in line:
                return line

    def read_more(self, timeout: float = 0.5) -> list[str]:
        """Collect stdout lines arriving within ``timeout`` (e.g. the how-to lines)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Empty):
            while True:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
                if line is None:
                    break
                self.output.append(line)
        return self.output

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the launcher and wait; SIGKILL it after ``timeout``. Its return code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # its supervisors, and theirs, die with it (PDEATHSIG)
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def start_cluster(
    data: Path,
    *,
    nodes: int = 1,
    base_port: int | None = None,
    env: Mapping[str, str] | None = None,
    args: Iterable[str] = (),
) -> RunningCluster:
    """Start ``rt cluster up`` without waiting for it to be ready."""
    from rtcommon.deathsig import dying_with_parent

    base_port = base_port if base_port is not None else localhost.find_free_base_port()
    log = data.parent / f"{data.name}.launcher.log"
    command = [str(BIN / "rt"), "cluster", "up", "--nodes", str(nodes), "--data", str(data)]
    command += ["--base-port", str(base_port), *args]
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            dying_with_parent(command),  # a killed test run leaves no cluster behind
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
            process_group=0,
        )
    return RunningCluster(proc, data, base_port, log)


class ClusterFactory:
    """``factory(nodes=1, data=None, base_port=None, env=None, timeout=60, args=(),
    wait=True)`` starts ``rt cluster up`` and returns it once it printed ``ready`` (at once
    with ``wait=False``); :meth:`stop_all` stops what it started (SIGTERM, then SIGKILL
    after 30 s)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.started: list[RunningCluster] = []

    def __call__(
        self,
        nodes: int = 1,
        *,
        data: Path | None = None,
        base_port: int | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = READY_TIMEOUT,
        args: Iterable[str] = (),
        wait: bool = True,
    ) -> RunningCluster:
        folder = data if data is not None else self.tmp_path_factory.mktemp("cluster") / "data"
        running = start_cluster(folder, nodes=nodes, base_port=base_port, env=env, args=args)
        self.started.append(running)
        if wait:
            running.wait_ready(timeout)
        return running

    def stop_all(self) -> None:
        for running in self.started:
            running.stop()
            if running.proc.returncode != 0:
                print(f"rt cluster up exited {running.proc.returncode}; log:\n{running.tail()}")


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """Clusters for one test (:class:`ClusterFactory`)."""
    factory = ClusterFactory(tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """Clusters that the tests of one module share (:class:`ClusterFactory`)."""
    factory = ClusterFactory(tmp_path_factory)
    yield factory
    factory.stop_all()
