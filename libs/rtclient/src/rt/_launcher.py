"""The local cluster launcher, ``rt cluster up`` (DESIGN section 10).

It plays Kubernetes on one machine: for each node n it keeps one ``rt-supervisor``
running (the node's "pod"), with the node's volume in ``DATA/node-<n>/s/{in,out,state}``
and its addresses on 127.0.0.1, derived from a base port B (default 5000):

=============  ================  ====================
address        port              node 0 with B = 5000
=============  ================  ====================
external push  B + 10n           5000 (mutual TLS, Push alone)
pull           B + 1 + 10n       5001
push           B + 2 + 10n       5002
control        B + 3 + 10n       5003 (supervisors' gRPC)
peer           B + 4 + 10n       5004 (the other nodes: mutual TLS)
REST           B + 1000 + 10n    6000
info-service   B + 1100          6100 (one per cluster)
=============  ================  ====================

The nodes talk to each other on their peer ports with mutual TLS (``internal_tls``).
With ``--publisher-tls`` they take pushes only with a certificate of the cluster's CA, on
their external ports (``publisher_tls``): the launcher issues this host's publisher pair
into ``DATA/tls/publisher`` (the cluster's ``publisher_pair``), so publishers here push
over mutual TLS as this host's publisher id. It
also plays the parts Kubernetes and an identity provider play: it keeps the cluster's
CA and each node's pair in ``DATA/tls`` (``rtcommon.tls.FileCAStore``, outside
the nodes' volumes) and runs one ``rt-info-service`` (its folder ``DATA/info-service``,
its built-in issuer's client registry there, ``rt client add`` writes it).

It writes ``DATA/cluster.json`` (rewritten atomically whenever a supervisor's pid
changes), waits until every node's ``GET /health`` answers 200, prints a line containing
``ready`` and how to publish and subscribe, then restarts any supervisor that dies
(with a capped backoff), as a StatefulSet would. SIGINT, SIGTERM or SIGHUP stop every
node (SIGTERM to the supervisors, SIGKILL to stragglers) and it exits 0. Ports in use,
or a node not healthy within the timeout, fail with a message, after stopping what was
started (exit 1).

Supervisors die with the launcher even if it is SIGKILLed (``PR_SET_PDEATHSIG``), and
take their own children with them, so no process outlives the launcher. An existing
DATA folder is reused: the nodes' data and the session file are kept. A lock file
refuses a second launcher on the same folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rtcommon import env, localhost
from rtcommon.cluster import (
    CLUSTER_FILE,
    CLUSTER_ID_FILE,
    ClusterError,
    ClusterSpec,
    NodeSpec,
    new_cluster_id,
)
from rtcommon.deathsig import dying_with_parent
from rtcommon.log import DirectoryLock, LogLockedError, write_file_atomically
from rtcommon.logs import log_formatter
from rtcommon.processes import Backoff, describe_exit
from rtcommon.rest import RestError, rest_get
from rtcommon.tls import FileCAStore, TLSError

from ._cmd_cert import PUBLISHER_FOLDER, ensure_publisher_pair

__all__ = [
    "DEFAULT_BASE_PORT",
    "HOST",
    "LaunchError",
    "Launcher",
    "build_spec",
    "cluster_down",
    "node_ports",
    "prepare_data",
]

HOST = "127.0.0.1"
#: In the data folder: the cluster's TLS material, and the info-service's own folder.
TLS_FOLDER = "tls"
INFO_FOLDER = "info-service"
CLIENTS_FILE = "clients.json"
DEFAULT_BASE_PORT = 5000
DEFAULT_TIMEOUT = 60.0
#: How long supervisors get to stop after SIGTERM (each gives its children 5 s).
STOP_GRACE = 10.0
HEALTH_TIMEOUT = 1.0
POLL_INTERVAL = 0.1


class LaunchError(Exception):
    """The cluster cannot be started; the message says why."""


def node_ports(base_port: int, node_id: int) -> dict[str, int]:
    """The ports of node ``node_id`` for base port ``base_port`` (table in the docstring)."""
    base = base_port + 10 * node_id
    return {
        "external": base,
        "pull": base + 1,
        "push": base + 2,
        "control": base + 3,
        "peer": base + 4,
        "rest": base + 1000,
    }


def info_service_port(base_port: int) -> int:
    return base_port + 1100


def build_spec(
    data: Path,
    nodes: int,
    base_port: int,
    roll_size: int,
    pids: Sequence[int | None] | None = None,
    *,
    cluster_id: str | None = None,
    publisher_tls: bool = False,
) -> ClusterSpec:
    """The cluster description for ``nodes`` nodes kept under ``data`` (an absolute path),
    with identity ``cluster_id`` (a new one if None; "" for none); ``publisher_tls``:
    pushes only with a certificate, this host's publisher pair in ``data/tls/publisher``."""
    pids = list(pids) if pids is not None else [None] * nodes
    specs = []
    for n in range(nodes):
        ports = node_ports(base_port, n)
        specs.append(
            NodeSpec(
                id=n,
                name=f"node-{n}",
                push=f"{HOST}:{ports['push']}",
                pull=f"{HOST}:{ports['pull']}",
                external=f"{HOST}:{ports['external']}",
                peer=f"{HOST}:{ports['peer']}",
                rest=f"{HOST}:{ports['rest']}",
                control=f"{HOST}:{ports['control']}",
                data=str(data / f"node-{n}"),
                pid=pids[n],
            )
        )
    return ClusterSpec(
        id=new_cluster_id() if cluster_id is None else cluster_id,
        nodes=tuple(specs),
        roll_size=roll_size,
        session_file=str(data / "session"),
        info_service=f"http://{HOST}:{info_service_port(base_port)}",
        tls_dir=str(data / TLS_FOLDER),
        clients_file=str(data / INFO_FOLDER / CLIENTS_FILE),
        internal_tls=True,
        publisher_tls=publisher_tls,
        publisher_pair=str(data / TLS_FOLDER / PUBLISHER_FOLDER) if publisher_tls else "",
    )


def prepare_data(data: Path, nodes: int, publisher_tls: bool = False) -> None:
    """Create ``data/node-<n>/s/{in,out,state}``, ``data/session`` ("0"), the cluster's CA
    and the nodes' server pairs in ``data/tls``, if missing; with ``publisher_tls``, this
    host's publisher pair too (renewed when past half its life)."""
    for n in range(nodes):
        for part in ("in", "out", "state"):
            (data / f"node-{n}" / "s" / part).mkdir(parents=True, exist_ok=True)
    session = data / "session"
    if not session.exists():
        write_file_atomically(session, b"0\n")
    store = FileCAStore(data / TLS_FOLDER)
    store.ensure_ca(data.name)
    for n in range(nodes):
        store.ensure_server_pair(f"node-{n}", [HOST, "localhost"], node_id=n)
    if publisher_tls:
        ensure_publisher_pair(store, data / TLS_FOLDER / PUBLISHER_FOLDER, env.hostname())


_FORMAT = log_formatter("launcher")


def rt_command() -> str:
    """How a user runs this ``rt``: ``rt`` when the PATH finds this one, else its path
    (``.venv/bin/rt`` from the project's folder)."""
    mine = Path(sys.executable).parent / "rt"
    found = shutil.which("rt")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "rt"
    with contextlib.suppress(ValueError):
        return str(mine.relative_to(Path.cwd()))
    return str(mine)


def check_health(rest: str, timeout: float = HEALTH_TIMEOUT) -> tuple[bool, str]:
    """``GET http://<rest>/health``: (True, "") on 200, else (False, why)."""
    try:
        status, body = rest_get(rest, "/health", timeout=timeout)
    except RestError as exc:
        return False, str(exc)
    if status == 200:
        return True, ""
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    return False, f"/health answered {status}" + (f": {reason}" if reason else "")


@dataclass
class _Child:
    """A process the launcher keeps running (a node's supervisor, the info-service)."""

    id: int
    name: str
    rest: str  #: where its /health answers
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  #: added to the launcher's environment
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float = 0.0
    healthy: bool = False
    last_problem: str = "not started"
    exits: int = 0

    @property
    def label(self) -> str:
        return f"{self.name}: supervisor" if self.id >= 0 else self.name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Launcher:
    """Runs ``rt cluster up`` in the foreground; :meth:`run` returns the exit status."""

    def __init__(
        self,
        data: Path,
        nodes: int,
        *,
        base_port: int = DEFAULT_BASE_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        shown_path: str | None = None,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        log_level: str | None = None,
        publisher_tls: bool = False,
    ) -> None:
        self.data = data.absolute()
        self.publisher_tls = publisher_tls
        self.path = self.data / CLUSTER_FILE
        self.shown_path = shown_path or str(self.path)
        self.base_port = base_port
        #: the folder's own if it has one (cluster.json, or the nodes' volumes)
        self.cluster_id = new_cluster_id()
        self.timeout = timeout
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        programs = Path(sys.executable).parent
        self.nodes = [
            _Child(
                id=n,
                name=f"node-{n}",
                rest=f"{HOST}:{node_ports(base_port, n)['rest']}",
                argv=[
                    str(programs / "rt-supervisor"),
                    "--cluster",
                    str(self.path),
                    "--node",
                    f"{n}",
                ],
                env=self._log_env(f"node-{n}", log_level),
            )
            for n in range(nodes)
        ]
        info = f"{HOST}:{info_service_port(base_port)}"
        #: what the launcher keeps running: the nodes' supervisors and the info-service
        self.children = [
            *self.nodes,
            _Child(
                id=-1,
                name="info-service",
                rest=info,
                argv=[
                    str(programs / "rt-info-service"),
                    "--cluster",
                    str(self.path),
                    "--data",
                    str(self.data / INFO_FOLDER),
                    "--listen",
                    info,
                ],
                env=self._log_env(INFO_FOLDER, log_level),
            ),
        ]
        self.roll_size = 0
        self._stop_signal: int | None = None
        self._lock: DirectoryLock | None = None

    def _log_env(self, folder: str, level: str | None) -> dict[str, str]:
        """Each node's processes (and the info-service) keep log files in their folder."""
        env = {"RT_LOG_DIR": str(self.data / folder / "logs")}
        if level:
            env["RT_LOG_LEVEL"] = level.upper()
        return env

    # -- the run -------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self._prepare()
            self._start_all()
            if not self._wait_healthy():
                return 0  # stopped by a signal before the cluster was ready
            self._announce()
            while self._stop_signal is None:
                self._tend()
                time.sleep(POLL_INTERVAL)
            self._say(f"{signal.Signals(self._stop_signal).name}: stopping the cluster")
            return 0
        except LaunchError as exc:
            self._say(f"{exc}", logging.ERROR)
            return 1
        finally:
            self._stop_all()

    def _on_signal(self, sig: int, frame: object) -> None:
        if self._stop_signal is None:
            self._stop_signal = sig

    def _say(self, message: str, level: int = logging.INFO) -> None:
        """A line of the launcher's own, in the nodes' log format (``rtcommon.logs``)."""
        record = logging.LogRecord("rt.launcher", level, "", 0, message, None, None)
        print(_FORMAT.format(record), file=self.err, flush=True)

    # -- before starting -----------------------------------------------------------------

    def _prepare(self) -> None:
        try:
            self.roll_size = env.settings().roll_size
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        try:
            self.data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LaunchError(f"cannot create the data folder {self.data}: {exc}") from None
        self._take_lock()
        self._check_previous()
        try:
            prepare_data(self.data, len(self.nodes), self.publisher_tls)
        except (OSError, TLSError) as exc:
            raise LaunchError(f"cannot prepare the nodes' folders in {self.data}: {exc}") from None
        self._check_ports()
        self._write_spec()

    def _take_lock(self) -> None:
        try:
            self._lock = DirectoryLock(self.data, name=LAUNCHER_LOCK)  # held until exit
        except LogLockedError as exc:
            raise LaunchError(
                f"another 'rt cluster up' (pid {exc.holder}) is running on {self.data}"
            ) from None
        except OSError as exc:
            raise LaunchError(f"cannot lock {self.data}: {exc}") from None

    def _check_previous(self) -> None:
        """Keep the identity of the cluster a folder holds; refuse one of another size."""
        claimed = {
            path.read_text().strip() for path in self.data.glob(f"node-*/s/{CLUSTER_ID_FILE}")
        }
        if len(claimed) == 1:
            self.cluster_id = claimed.pop()  # the nodes' volumes say whose they are
        if not self.path.exists():
            return
        try:
            previous = ClusterSpec.from_file(self.path)
        except ClusterError as exc:
            self._say(f"replacing an unreadable {self.path} ({exc})")
            return
        # A cluster from before identities keeps none: its clients' folders stay where
        # they are (a new id would move them, and strand their logs).
        self.cluster_id = previous.id
        if len(previous.nodes) != len(self.nodes):
            raise LaunchError(
                f"{self.data} holds a {len(previous.nodes)}-node cluster; run with "
                f"--nodes {len(previous.nodes)}, or choose another --data folder"
            )

    def _check_ports(self) -> None:
        taken = []
        for node in self.nodes:
            for role, port in node_ports(self.base_port, node.id).items():
                if not localhost.port_free(port, HOST):
                    taken.append(f"{port} ({node.name} {role})")
        if not localhost.port_free(info_service_port(self.base_port), HOST):
            taken.append(f"{info_service_port(self.base_port)} (info-service)")
        if taken:
            raise LaunchError(
                f"port(s) in use on {HOST}: {', '.join(taken)}; is another cluster "
                "running? Stop it, or choose another --base-port"
            )

    def _write_spec(self) -> None:
        spec = build_spec(
            self.data,
            len(self.nodes),
            self.base_port,
            self.roll_size,
            [node.pid for node in self.nodes],
            cluster_id=self.cluster_id,
            publisher_tls=self.publisher_tls,
        )
        try:
            spec.to_file(self.path)
        except OSError as exc:
            raise LaunchError(f"cannot write {self.path}: {exc}") from None

    # -- starting and tending supervisors ------------------------------------------------

    def _start_all(self) -> None:
        for child in self.children:
            self._start(child)
        self._write_spec()

    def _start(self, node: _Child) -> None:
        argv = node.argv
        command = dying_with_parent(argv)
        try:
            stdout = self.err.fileno()  # the launcher's stdout carries only its own lines
        except (AttributeError, OSError, ValueError):
            stdout = None
        try:
            node.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                env={**os.environ, **node.env},
                process_group=0,  # a Ctrl-C reaches the launcher only; it stops the nodes
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise LaunchError(f"cannot start {argv[0]}: {exc}") from None
        node.started = time.monotonic()
        node.healthy = False
        self._say(f"{node.label} started (pid {node.process.pid})")

    def _tend(self) -> None:
        """Restart every child that died, after its backoff delay."""
        now = time.monotonic()
        changed = False
        for node in self.children:
            process = node.process
            if process is not None:
                returncode = process.poll()
                if returncode is None:
                    continue
                ran_for = now - node.started
                delay = node.backoff.delay(ran_for)
                node.restart_at = now + delay
                node.process = None
                node.healthy = False
                node.exits += 1
                node.last_problem = (
                    f"{node.label} exited ({describe_exit(returncode)}), {node.exits} time(s)"
                )
                self._say(
                    f"{node.label} (pid {process.pid}) exited "
                    f"({describe_exit(returncode)}) after {ran_for:.1f} s; "
                    f"restarting in {delay:.1f} s",
                    logging.WARNING,
                )
                changed = True
            if node.process is None and now >= node.restart_at:
                self._start(node)
                changed = True
        if changed:
            self._write_spec()

    def _wait_healthy(self) -> bool:
        """Until every child answers ``/health`` 200; False if a signal came first."""
        deadline = time.monotonic() + self.timeout
        while self._stop_signal is None:
            self._tend()
            for node in self.children:
                if node.process is not None and not node.healthy:
                    node.healthy, why = check_health(node.rest)
                    if not node.healthy:
                        node.last_problem = why
            if all(node.healthy and node.process is not None for node in self.children):
                return True
            if time.monotonic() >= deadline:
                late = [node for node in self.children if not node.healthy]
                raise LaunchError(
                    f"{', '.join(node.name for node in late)} not healthy within "
                    f"{self.timeout:g} s: "
                    + "; ".join(f"{node.name}: {node.last_problem}" for node in late)
                    + "; stopping the cluster (the nodes' logs are above)"
                )
            time.sleep(POLL_INTERVAL)
        return False

    def _announce(self) -> None:
        count = len(self.nodes)
        path = self.shown_path
        first = self.nodes[0].rest
        rt = rt_command()
        lines = [
            f"rt cluster ready: {count} node{'s' if count > 1 else ''}, cluster file {path}",
            f"  publish:   {rt} pub --cluster {path} --topic feed    (a message per stdin line)",
            f"  subscribe: {rt} sub --cluster {path} --from start",
            f"  status:    {rt} status --cluster {path}",
            f"  reset:     {rt} reset --cluster {path}    (wipes the stream; asks first)",
            f"  REST:      curl http://{first}/resetStatus    (nodes' REST: "
            + ", ".join(node.rest for node in self.nodes)
            + "; OpenAPI at /docs; metrics at /metrics)",
            f"  external:  {rt} client add NAME --topic feed --cluster {path}, then"
            f" {rt} pub --info-service http://{self.children[-1].rest} --client-id NAME"
            " --client-secret S    (mutual TLS)",
            f"  stop:      Ctrl-C, or {rt} cluster down --data {self.data}",
        ]
        print("\n".join(lines), file=self.out, flush=True)

    # -- stopping ------------------------------------------------------------------------

    def _stop_all(self) -> None:
        live = [node for node in self.children if node.process is not None]
        for node in live:
            assert node.process is not None
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for node in live:
            assert node.process is not None
            try:
                node.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(
                    f"{node.label} still running after {STOP_GRACE:g} s: SIGKILL",
                    logging.WARNING,
                )
                node.process.kill()  # its children get SIGKILL too (PR_SET_PDEATHSIG)
                node.process.wait()
        for node in self.children:
            node.process = None
        if live and self.path.exists():
            with contextlib.suppress(LaunchError):
                self._write_spec()  # no pids: nothing runs
        nodes = len([node for node in live if node.id >= 0])
        if nodes:
            self._say(f"stopped {nodes} node{'s' if nodes > 1 else ''}")
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def cluster_up(
    data: str,
    nodes: int,
    base_port: int = DEFAULT_BASE_PORT,
    timeout: float = DEFAULT_TIMEOUT,
    log_level: str | None = None,
    publisher_tls: bool = False,
) -> int:
    """``rt cluster up``: run a local cluster in the foreground until a signal."""
    shown = str(Path(data) / CLUSTER_FILE)
    launcher = Launcher(
        Path(data),
        nodes,
        base_port=base_port,
        timeout=timeout,
        shown_path=shown,
        log_level=log_level,
        publisher_tls=publisher_tls,
    )
    return launcher.run()


LAUNCHER_LOCK = ".launcher.lock"


def cluster_down(data: str, timeout: float = DEFAULT_TIMEOUT) -> int:
    """``rt cluster down``: stop the launcher that runs on ``data`` (its lock names its
    pid) with SIGTERM, as Ctrl-C would, and wait until it has let go of its lock. Exit
    status 0 once stopped, 1 if none runs there or it did not stop in time."""
    folder = Path(data)
    if not folder.is_dir():
        print(f"rt cluster down: no data folder {folder}", file=sys.stderr)
        return 1
    try:
        DirectoryLock(folder, name=LAUNCHER_LOCK).release()  # free: nobody runs there
    except LogLockedError as exc:
        holder = exc.holder
    else:
        print(f"rt cluster down: no cluster is running on {folder}", file=sys.stderr)
        return 1
    try:
        os.kill(int(holder), signal.SIGTERM)
    except (ValueError, ProcessLookupError) as exc:
        print(f"rt cluster down: cannot signal the launcher (pid {holder}): {exc}", file=sys.stderr)
        return 1
    print(f"rt cluster down: stopping the cluster on {folder} (launcher pid {holder})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            DirectoryLock(folder, name=LAUNCHER_LOCK).release()
        except LogLockedError:
            time.sleep(POLL_INTERVAL)
            continue
        print("rt cluster down: stopped")
        return 0
    print(f"rt cluster down: still running after {timeout:g} s", file=sys.stderr)
    return 1
