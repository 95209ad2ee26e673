"""A cluster's identity keeps clusters apart: publisher logs, subscriber copies and node
volumes of one cluster never feed another (a cluster wiped and started again is a new one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

import rt
from rt._launcher import build_spec, prepare_data
from rtcommon.cluster import ClusterMismatchError, ClusterSpec
from rtcommon.env import hostname
from rtproto.v1 import push_pb2, push_pb2_grpc

BIN = Path(sys.executable).parent


def received_by_default_subscriber(cluster: rt.Cluster, count: int) -> list:
    """What a subscriber with the default copy folder receives, until ``count`` arrived."""
    got: list = []
    done = threading.Event()

    def on_message(message, position) -> None:
        got.append(message.data)
        if len(got) >= count:
            done.set()

    with rt.Subscriber(cluster, on_message=on_message):
        assert done.wait(30), got
        done.wait(1.0)  # anything more that would come
    return got


def test_a_new_cluster_never_gets_an_old_clusters_messages(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RT_LOG_PATH", str(tmp_path / "logs"))
    first = cluster(nodes=1, data=tmp_path / "data")
    old = rt.Cluster.from_file(first.path)
    with rt.Publisher(old, "cli5k") as publisher:  # the default folder
        for n in range(50):
            publisher.publish(("old", n))
    assert len(received_by_default_subscriber(old, 50)) == 50
    first.stop()
    subprocess.run(["rm", "-rf", str(tmp_path / "data")], check=True)  # wiped

    second = cluster(nodes=1, data=tmp_path / "data")
    new = rt.Cluster.from_file(second.path)
    assert new.spec.id and new.spec.id != old.spec.id
    with rt.Publisher(new, "cli5k") as publisher:
        publisher.publish(("new", 0))
    assert received_by_default_subscriber(new, 1) == [("new", 0)]

    # A folder of the old cluster, given by hand, is refused, saying what to do.
    old_publisher_folder = tmp_path / "logs" / f"rt-{old.spec.id}"
    with pytest.raises(ClusterMismatchError, match="use another folder"):
        rt.Publisher(new, "cli5k", log_dir=old_publisher_folder, publisher_id=hostname())
    with pytest.raises(ClusterMismatchError, match="the subscriber's copy"):
        rt.Subscriber(new, log_dir=old_publisher_folder / "rt")

    # A node refuses a push of a log written for another cluster.
    with grpc.insecure_channel(new.nodes[0].push) as channel:
        call = push_pb2_grpc.PushStub(channel).Push(
            iter(
                [
                    push_pb2.PushRequest(
                        open=push_pb2.PushOpen(stream="h.cli5k", cluster=old.spec.id)
                    )
                ]
            ),
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(call)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"was written for cluster {old.spec.id}" in refused.value.details()


def test_a_sequencer_refuses_a_volume_of_another_cluster(tmp_path, free_base_port):
    data = tmp_path / "data"
    prepare_data(data, 1)
    spec = build_spec(data, 1, free_base_port(), roll_size=1 << 20)
    spec.to_file(data / "cluster.json")
    (data / "node-0" / "s" / ".cluster").write_text("0123456789abcdef\n")
    result = subprocess.run(
        [str(BIN / "rt-sequencer"), "--cluster", str(data / "cluster.json"), "--node", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "holds data of cluster 0123456789abcdef" in result.stderr
    assert ClusterSpec.from_file(data).id in result.stderr


def test_rt_cluster_up_keeps_the_identity_of_a_folder_it_restarts(cluster, tmp_path):
    first = cluster(nodes=1, data=tmp_path / "data")
    identity = first.spec.id
    first.stop()
    again = cluster(nodes=1, data=tmp_path / "data")
    assert again.spec.id == identity
    assert json.loads((tmp_path / "data" / "cluster.json").read_text())["id"] == identity


def test_a_cluster_from_before_identities_keeps_none(cluster, tmp_path):
    """Its clients' default folders stay where they were: a new id would move them and
    strand their logs."""
    first = cluster(nodes=1, data=tmp_path / "data")
    first.stop()
    legacy = json.loads((tmp_path / "data" / "cluster.json").read_text())
    legacy.pop("id")
    (tmp_path / "data" / "cluster.json").write_text(json.dumps(legacy))
    (tmp_path / "data" / "node-0" / "s" / ".cluster").unlink()  # written before ids
    again = cluster(nodes=1, data=tmp_path / "data")
    assert again.spec.id == ""
    assert again.spec.client_folder(tmp_path / "logs") == tmp_path / "logs"
