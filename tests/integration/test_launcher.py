"""``rt cluster up`` and ``rt status`` as real processes: cluster.json, readiness, the
launcher restarting a killed supervisor, clean stops that leave no process behind, and
clear failures (ports in use, not healthy in time, a folder of another cluster size).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rt._launcher import build_spec, prepare_data
from rtcommon.cluster import ClusterSpec
from rtcommon.log import DEFAULT_ROLL_SIZE

BIN = Path(sys.executable).parent
HttpGet = Callable[..., tuple[int, Any]]
ClusterFactory = Callable[..., Any]


def check_spec(spec: ClusterSpec, data: Path, nodes: int, base: int, roll_size: int) -> None:
    assert len(spec.nodes) == nodes
    assert spec.roll_size == roll_size
    assert spec.session_file == str(data / "session")
    assert spec.info_service == f"http://127.0.0.1:{base + 1100}"
    assert spec.tls_dir == str(data / "tls")
    assert spec.internal_tls
    assert (data / "tls" / "ca.pem").is_file()
    assert (data / "tls" / "ca.key").stat().st_mode & 0o077 == 0  # the CA's key: owner only
    for n, node in enumerate(spec.nodes):
        assert (node.id, node.name) == (n, f"node-{n}")
        assert node.pull == f"127.0.0.1:{base + 1 + 10 * n}"
        assert node.push == f"127.0.0.1:{base + 2 + 10 * n}"
        assert node.rest == f"127.0.0.1:{base + 1000 + 10 * n}"
        assert node.external == f"127.0.0.1:{base + 10 * n}"
        assert node.peer == f"127.0.0.1:{base + 4 + 10 * n}"
        assert (Path(spec.tls_dir) / f"{node.name}.pem").is_file()
        assert node.data == str(data / f"node-{n}")
        assert Path(node.data).is_absolute()
        for part in ("in", "out", "state"):
            assert (data / f"node-{n}" / "s" / part).is_dir()


def supervisor_pids(spec: ClusterSpec, procs: Any) -> list[int]:
    pids = [node.pid for node in spec.nodes]
    assert all(pid is not None for pid in pids), pids
    for pid in pids:
        assert not procs.is_gone(pid)
        assert Path(procs.cmdline(pid)[1]).name == "rt-supervisor", procs.cmdline(pid)
    return [pid for pid in pids if pid is not None]


def info_service_pid(procs: Any, running: Any) -> int:
    """The launcher's info-service (its one child that is not a supervisor)."""
    [pid] = [
        pid
        for pid in procs.children(running.proc.pid)
        if Path(procs.cmdline(pid)[1]).name == "rt-info-service"
    ]
    return pid


def run_rt(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rt"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


ONE_LOG_FORMAT = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL)"
    r" (launcher|info-service|node-\d+ (supervisor|sequencer|archiver)): "
)


def test_one_node_cluster_up(
    cluster: ClusterFactory, procs: Any, http_get: HttpGet, monkeypatch: Any
) -> None:
    monkeypatch.setenv("RT_ROLL_SIZE", "65536")
    running = cluster(nodes=1)
    assert running.output[-1] == f"rt cluster ready: 1 node, cluster file {running.path}"
    lines = running.read_more()
    assert any(f"rt pub --cluster {running.path}" in line for line in lines), lines
    assert any(f"rt sub --cluster {running.path} --from start" in line for line in lines), lines
    # The commands shown can be run as shown: rt is on the PATH, or its path is given.
    command = next(line for line in lines if "publish:" in line).split()[1]
    assert (command == "rt" and shutil.which("rt")) or Path(command).exists(), command

    spec = running.spec
    check_spec(spec, running.data, 1, running.base_port, roll_size=65536)
    assert (running.data / "session").read_text() == "0\n"
    [pid] = supervisor_pids(spec, procs)
    assert sorted(procs.children(running.proc.pid)) == sorted(
        [pid, info_service_pid(procs, running)]
    )
    assert http_get(f"http://{spec.nodes[0].rest}/resetStatus") == (
        200,
        {"hostname": "node-0", "status": "UP"},
    )
    assert http_get(f"http://{spec.nodes[0].rest}/health")[0] == 200

    everything = procs.descendants(running.proc.pid)
    assert len(everything) >= 3  # supervisor, sequencer, archiver
    assert running.stop() == 0
    procs.wait_gone(everything)
    assert [node.pid for node in running.spec.nodes] == [None]
    # Every line the cluster logged, the launcher's own included, is in the one format.
    lines = running.log().splitlines()
    assert any(" INFO launcher: stopped 1 node" in line for line in lines), lines
    assert any(" INFO node-0 sequencer: " in line for line in lines), lines
    odd = [line for line in lines if not ONE_LOG_FORMAT.match(line)]
    assert odd == [], odd


def test_three_node_cluster_up_status_and_sigterm_stops_everything(
    cluster: ClusterFactory, procs: Any, http_get: HttpGet, monkeypatch: Any
) -> None:
    monkeypatch.delenv("RT_ROLL_SIZE", raising=False)
    running = cluster(nodes=3)
    spec = running.spec
    check_spec(spec, running.data, 3, running.base_port, roll_size=DEFAULT_ROLL_SIZE)
    pids = supervisor_pids(spec, procs)
    assert len(set(pids)) == 3
    assert sorted(procs.children(running.proc.pid)) == sorted(
        [*pids, info_service_pid(procs, running)]
    )
    for node in spec.nodes:
        status, body = http_get(f"http://{node.rest}/health")
        assert status == 200, body
        assert body["hostname"] == node.name

    status = run_rt("status", "--cluster", str(running.path))
    assert status.returncode == 0, status
    lines = status.stdout.split("\n\n")[0].splitlines()  # the first table: the nodes
    for node in spec.nodes:
        [line] = [line for line in lines if line.startswith(node.name + " ")]
        assert "unreachable" not in line, status.stdout

    everything = procs.descendants(running.proc.pid)
    assert len(everything) >= 9  # three supervisors, sequencers and archivers
    assert running.stop(signal.SIGTERM) == 0
    procs.wait_gone(everything)
    assert [node.pid for node in running.spec.nodes] == [None, None, None]


def test_a_killed_supervisor_is_started_again(
    cluster: ClusterFactory, procs: Any, http_get: HttpGet
) -> None:
    running = cluster(nodes=1)
    [old] = supervisor_pids(running.spec, procs)
    node_processes = [old, *procs.descendants(old)]
    os.kill(old, signal.SIGKILL)

    def new_pid() -> int | None:
        pid = running.spec.nodes[0].pid
        return pid if pid not in (None, old) else None

    new = procs.wait_until(new_pid, 20, "a new supervisor pid in cluster.json")
    assert not procs.is_gone(new)
    procs.wait_until(  # its first instant is the deathsig wrapper, which then execs
        lambda: [Path(arg).name for arg in procs.cmdline(new)[1:2]] == ["rt-supervisor"],
        10,
        "the new supervisor running",
    )
    procs.wait_gone(node_processes)  # the old pod's processes died with it
    assert re.search(rf"node-0: supervisor \(pid {old}\) exited \(exit code -9", running.log())

    rest = running.spec.nodes[0].rest
    procs.wait_until(
        lambda: _answers(http_get, f"http://{rest}/health") == 200, 30, "the node healthy again"
    )
    assert running.spec.nodes[0].data == str(running.data / "node-0")


def test_an_existing_data_folder_is_reused(cluster: ClusterFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data(data, 1)
    (data / "session").write_text("7\n")
    (data / "node-0" / "keep").write_text("kept")
    running = cluster(nodes=1, data=data)
    assert (data / "session").read_text() == "7\n"
    assert (data / "node-0" / "keep").read_text() == "kept"
    assert running.stop() == 0


def test_ports_in_use_fail_clearly_and_start_nothing(
    free_base_port: Callable[[], int], tmp_path: Path, procs: Any
) -> None:
    base = free_base_port()
    data = tmp_path / "data"
    with socket.create_server(("127.0.0.1", base + 1)):  # node-0's pull port
        result = run_rt(
            "cluster", "up", "--nodes", "1", "--data", str(data), "--base-port", str(base)
        )
    assert result.returncode == 1, result
    assert f"{base + 1} (node-0 pull)" in result.stderr
    assert "--base-port" in result.stderr
    assert "ready" not in result.stdout
    assert "supervisor started" not in result.stderr


def test_a_cluster_not_healthy_in_time_fails_and_stops_what_it_started(
    free_base_port: Callable[[], int], tmp_path: Path, procs: Any
) -> None:
    base = free_base_port()
    result = run_rt(
        "cluster",
        "up",
        "--nodes",
        "3",
        "--data",
        str(tmp_path / "data"),
        "--base-port",
        str(base),
        "--timeout",
        "0",
    )
    assert result.returncode == 1, result
    assert "ready" not in result.stdout
    assert "not healthy within 0 s" in result.stderr
    started = [int(pid) for pid in re.findall(r"supervisor started \(pid (\d+)\)", result.stderr)]
    assert len(started) == 3
    procs.wait_gone(started, timeout=5)
    spec = ClusterSpec.from_file(tmp_path / "data" / "cluster.json")
    assert [node.pid for node in spec.nodes] == [None, None, None]


def test_a_folder_holding_another_cluster_size_is_refused(
    free_base_port: Callable[[], int], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    prepare_data(data, 3)
    build_spec(data, 3, free_base_port(), roll_size=1 << 20).to_file(data / "cluster.json")
    result = run_rt("cluster", "up", "--nodes", "1", "--data", str(data), "--base-port", "21000")
    assert result.returncode == 1, result
    assert "holds a 3-node cluster" in result.stderr and "--nodes 3" in result.stderr


def test_a_second_launcher_on_the_same_folder_is_refused(
    cluster: ClusterFactory, tmp_path: Path, procs: Any
) -> None:
    data = tmp_path / "data"
    first = cluster(nodes=1, data=data, wait=False)
    lock = data / ".launcher.lock"
    procs.wait_until(
        lambda: lock.exists() and lock.read_text() == f"{first.proc.pid}\n",
        20,
        "the first launcher's lock",
    )
    second = run_rt("cluster", "up", "--nodes", "1", "--data", str(data), "--base-port", "21000")
    assert second.returncode == 1, second
    assert f"another 'rt cluster up' (pid {first.proc.pid}) is running" in second.stderr
    assert first.proc.poll() is None
    assert first.stop() == 0


def test_status_of_a_cluster_that_does_not_answer(
    free_base_port: Callable[[], int], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    prepare_data(data, 3)
    build_spec(data, 3, free_base_port(), roll_size=1 << 20).to_file(data / "cluster.json")
    result = run_rt("status", "--cluster", str(data / "cluster.json"), "--deadline", "0.5")
    assert result.returncode == 1, result
    lines = [line for line in result.stdout.splitlines() if line.startswith("node-")]
    assert len(lines) == 3
    assert all("unreachable: " in line for line in lines), result.stdout

    missing = run_rt("status", "--cluster", str(tmp_path / "nothing.json"))
    assert missing.returncode == 2  # usage: no readable cluster description
    assert "no cluster description" in missing.stderr


def _answers(http_get: HttpGet, url: str) -> int:
    try:
        return http_get(url, timeout=2)[0]
    except OSError:
        return 0
