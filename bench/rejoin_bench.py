"""How soon a node that was down a while merges again once it is back.

Three bare ``rt-sequencer`` processes (no supervisor restarts them; the local launcher's
layout, peers over mutual TLS); a follower is
killed (SIGKILL), stays down ``RT_BENCH_DOWN_SECONDS`` (45) while the others go on, and
is started again; a publisher then sends 100 messages, and the bench prints how long
after the restart the node's merged log ends where the others' do. Its peers reach it
again through their gRPC channels to it, whose reconnect backoff (gRPC's own grows to two
minutes) bounds this.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

import rt
from rt._launcher import build_spec, prepare_data
from rtcommon import localhost
from rtcommon.cluster import NodeSpec
from rtproto.v1 import admin_pb2, admin_pb2_grpc

BIN = Path(sys.executable).parent
DOWN_SECONDS = float(os.environ.get("RT_BENCH_DOWN_SECONDS", "45"))


def status(node: NodeSpec) -> admin_pb2.NodeStatus | None:
    try:
        with grpc.insecure_channel(node.push) as channel:
            return admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=2)
    except grpc.RpcError:
        return None


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("RT_BENCH_DIR")) as tmp:
        root = Path(tmp)
        # The local launcher's layout and TLS material, without its supervisors.
        prepare_data(root, 3)
        spec = build_spec(root, 3, localhost.find_free_base_port(), 64 << 20)
        spec.to_file(root / "cluster.json")

        def start(i: int) -> subprocess.Popen:
            command = [BIN / "rt-sequencer", "--cluster", root / "cluster.json", "--node", str(i)]
            return subprocess.Popen(command, stderr=subprocess.DEVNULL)

        procs = [start(i) for i in range(3)]
        try:
            while any((s := status(n)) is None or not s.leader for n in spec.nodes):
                time.sleep(0.1)
            victim = next(n.id for n in spec.nodes if status(n).role != "leader")
            procs[victim].kill()
            procs[victim].wait()
            time.sleep(DOWN_SECONDS)
            procs[victim] = start(victim)
            restarted = time.monotonic()
            with rt.Publisher(spec, "feed", log_dir=root / "pub", codec="raw") as publisher:
                for _ in range(100):
                    publisher.publish(b"x" * 100)
                publisher.flush(60)
            while True:
                ends = [s.out_position if (s := status(n)) else -1 for n in spec.nodes]
                if len(set(ends)) == 1 and ends[0] > 0:
                    break
                time.sleep(0.05)
            print(
                f"rejoin: a follower down {DOWN_SECONDS:.0f} s merged alike"
                f" {time.monotonic() - restarted:.1f} s after its restart"
            )
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
