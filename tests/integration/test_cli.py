"""The ``rt`` command line as a user meets it: version, exit codes, a data folder where a
cluster.json is asked for, ``status --json``, refusals of topics that would publish
nothing, ``cluster down`` (issue 13, first points)."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rt._launcher import build_spec, prepare_data
from rtcommon.localhost import find_free_base_port
from rtcommon.log import read_log

BIN = Path(sys.executable).parent


def rt(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "rt"), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_version_and_the_exit_codes_in_help() -> None:
    version = rt("--version")
    assert version.returncode == 0 and version.stdout.startswith("rt ")
    assert "130 interrupted" in rt("--help").stdout


@pytest.mark.parametrize("command", [["pub"], ["sub", "--count", "1"], ["status"]])
def test_a_missing_cluster_description_is_a_usage_error_everywhere(tmp_path: Path, command):
    result = rt(*command, "--cluster", str(tmp_path / "nowhere.json"), stdin="x\n")
    assert result.returncode == 2, result
    assert "no cluster description" in result.stderr and "Traceback" not in result.stderr


def test_status_takes_the_data_folder_and_prints_json(cluster: Any) -> None:
    running = cluster(nodes=3)
    table = rt("status", "--cluster", str(running.data))
    assert table.returncode == 0, table
    answer = rt("status", "--cluster", str(running.data), "--json")
    assert answer.returncode == 0, answer
    nodes = json.loads(answer.stdout)["nodes"]
    assert [n["node"] for n in nodes] == [n.name for n in running.spec.nodes]
    # 'ready' means every node knows a leader: a sequencer is healthy only then
    names = {n.name for n in running.spec.nodes}
    assert all(n["leader"] in names for n in nodes), nodes
    assert all(isinstance(n["out_position"], int) for n in nodes)
    assert all(0 < n["disk_free"] <= n["disk_total"] for n in nodes), nodes
    # the disk table: each node's copies, merged log, free space and oldest position
    lines = table.stdout.splitlines()
    disk = lines.index(
        next(line for line in lines if line.startswith("NODE  ") and "DISK_FREE" in line)
    )
    assert lines[disk].split() == ["NODE", "INPUT_COPIES", "MERGED_LOG", "DISK_FREE", "OLDEST_HELD"]
    assert [line.split()[0] for line in lines[disk + 1 : disk + 4]] == sorted(names)


def test_topics_that_would_publish_nothing_to_the_cluster_are_refused(
    cluster: Any, tmp_path: Path
) -> None:
    running = cluster(nodes=1)
    empty = rt("pub", "--cluster", str(running.path), "--topic", "", stdin="1\n")
    assert empty.returncode == 2 and "must not be empty" in empty.stderr
    local = tmp_path / "local-log"
    refused = rt("pub", "--cluster", str(running.path), "--topic", str(local), stdin="1\n")
    assert refused.returncode == 2 and "--local" in refused.stderr
    assert not local.exists()
    allowed = rt(
        "pub", "--cluster", str(running.path), "--topic", str(local), "--local", stdin="1\n2\n"
    )
    assert allowed.returncode == 0, allowed
    assert [r.data for r in read_log(local)] == [1, 2]


def test_ctrl_c_ends_rt_pub_with_130(cluster: Any) -> None:
    running = cluster(nodes=1)
    proc = subprocess.Popen(
        [str(BIN / "rt"), "pub", "--cluster", str(running.path), "--topic", "ctrlc"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write("1\n")
    proc.stdin.flush()
    time.sleep(1.0)  # the publisher is up and waiting for more input
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130


def test_cluster_down_stops_what_cluster_up_runs_on_a_folder(cluster: Any, procs: Any) -> None:
    running = cluster(nodes=1)
    everything = [running.proc.pid, *procs.descendants(running.proc.pid)]
    down = rt("cluster", "down", "--data", str(running.data))
    assert down.returncode == 0, down
    assert "stopped" in down.stdout
    procs.wait_gone(everything)
    again = rt("cluster", "down", "--data", str(running.data))
    assert again.returncode == 1 and "no cluster is running" in again.stderr


def test_rt_pub_says_what_it_did_and_takes_its_options(cluster: Any, tmp_path: Path) -> None:
    running = cluster(nodes=1)
    base = ["pub", "--cluster", str(running.path), "--log-dir", str(tmp_path)]
    done = rt(*base, "--topic", "opts", "--publisher-id", "me", stdin='{"a": 1}\n2\n')
    assert done.returncode == 0, done
    assert done.stdout == "" and "2 message(s) on topic opts, held by a quorum" in done.stderr
    assert [r.data for r in read_log(tmp_path / "me.opts")] == [{"a": 1}, 2]
    quiet = rt(*base, "--topic", "opts", "--publisher-id", "me", "--quiet", stdin="3\n")
    assert quiet.returncode == 0 and quiet.stderr == ""
    strict = rt(
        *base, "--topic", "opts", "--publisher-id", "me", "--strict", stdin="4\nnot json\n5\n"
    )
    assert strict.returncode == 2 and "line 2 is not JSON" in strict.stderr
    assert [r.data for r in read_log(tmp_path / "me.opts")] == [{"a": 1}, 2, 3, 4]
    bad = rt(*base, "--topic", "a/b", stdin="1\n")
    assert bad.returncode == 2 and "topic 'a/b'" in bad.stderr, bad.stderr

    # rt sub prints them, with ts in ISO 8601 on request
    sub = rt("sub", "--cluster", str(running.path), "--count", "3", "--time", "iso")
    assert sub.returncode == 0, sub.stderr
    lines = [json.loads(line) for line in sub.stdout.splitlines()]
    assert [line["data"] for line in lines] == [{"a": 1}, 2, 3]
    assert {line["topic"] for line in lines} == {running.spec.name}  # the cluster's topic
    stamp = lines[0]["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", stamp), stamp
    assert abs(datetime.fromisoformat(stamp[:26] + "+00:00").timestamp() - time.time()) < 600


def test_rt_sub_gives_up_on_a_cluster_that_does_not_answer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data(data, 3)
    build_spec(data, 3, find_free_base_port(), roll_size=1 << 20).to_file(data / "cluster.json")
    started = time.monotonic()
    sub = rt("sub", "--cluster", str(data), "--timeout", "2")
    assert sub.returncode == 1, sub.stderr
    assert "rt sub: no node answered for 2 s" in sub.stderr
    assert time.monotonic() - started < 20


def test_rt_streams_and_rt_export(cluster: Any, tmp_path: Path) -> None:
    running = cluster(nodes=1)
    path = str(running.path)
    env_logs = ["--log-dir", str(tmp_path / "logs")]
    assert (
        rt("pub", "--cluster", path, "--topic", "ticks", *env_logs, stdin="1\n2\n3\n").returncode
        == 0
    )
    dedup = rt(
        "pub",
        "--cluster",
        path,
        "--topic",
        "orders.dedup",
        "--origin",
        "om",
        *env_logs,
        stdin="4\n5\n",
    )
    assert dedup.returncode == 0, dedup.stderr

    streams = json.loads(rt("streams", "--cluster", path, "--json").stdout)["topics"]
    by_topic = {topic["topic"]: topic for topic in streams}
    assert set(by_topic) == {"ticks", "orders.dedup"}
    [ticks] = by_topic["ticks"]["streams"]
    assert ticks["held"] == ticks["merged"] > 0 and ticks["connected"] == 0
    assert by_topic["orders.dedup"]["origins"] == [{"origin": "om", "last_id": 2, "dropped": 0}]
    table = rt("streams", "--cluster", path).stdout.splitlines()
    assert table[0].split() == ["TOPIC", "STREAM", "HELD", "MERGED", "LAG", "BYTES/S", "CONNECTED"]

    printed = rt("sub", "--cluster", path, "--count", "5").stdout.splitlines()
    jsonl = tmp_path / "all.jsonl"
    done = rt("export", "--cluster", path, str(jsonl))
    assert done.returncode == 0, done.stderr
    assert jsonl.read_text().splitlines() == printed
    assert "5 message(s)" in done.stderr

    positions = [json.loads(line)["pos"] for line in printed]
    part = tmp_path / "part.csv"
    args = ["--from", str(positions[0]), "--to", str(positions[3]), "--format", "csv"]
    assert rt("export", "--cluster", path, *args, str(part)).returncode == 0
    rows = list(csv.DictReader(part.open()))
    assert [int(row["pos"]) for row in rows] == positions[1:4]
    assert [json.loads(row["data"]) for row in rows] == [2, 3, 4]

    parquet = rt("export", "--cluster", path, "--format", "parquet", str(tmp_path / "x.parquet"))
    assert parquet.returncode == 2 and "needs pyarrow" in parquet.stderr


def test_rt_completion_bash_completes_commands_and_options() -> None:
    script = rt("completion", "bash").stdout

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        shell = (
            f"source /dev/stdin; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _rt;"
            ' echo "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", shell], input=script, capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return done.stdout.split()

    assert complete("rt", "s") == ["sub", "status", "streams"]
    assert complete("rt", "cluster", "u") == ["up"]
    assert complete("rt", "cluster", "up", "--d") == ["--data"]
    assert complete("rt", "sub", "--cluster", "x", "--ti") == ["--timeout", "--time"]
    assert complete("rt", "export", "--f") == ["--from", "--format", "--filter"]
