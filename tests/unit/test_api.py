"""The public ``rt`` API's edges: one error base class, and the same cluster arguments
for publishers and subscribers."""

from __future__ import annotations

from pathlib import Path

import pytest

import rt
from rtcommon.cluster import ClusterSpec, NodeSpec


@pytest.mark.parametrize(
    "name",
    [
        "ClusterError",
        "CodecError",
        "IdSequenceError",
        "LogError",
        "LogLockedError",
        "LogWriteError",
        "PositionError",
        "PositionOutOfRangeError",
        "StreamNameError",
        "SubscriberError",
    ],
)
def test_every_error_a_caller_meets_is_an_rt_error(name: str) -> None:
    assert issubclass(getattr(rt, name), rt.RTError)
    assert name in rt.__all__


def test_a_publisher_takes_every_cluster_argument_a_subscriber_takes(tmp_path: Path) -> None:
    spec = ClusterSpec(
        nodes=(NodeSpec(id=0, name="node-0", push="127.0.0.1:9", pull="127.0.0.1:9", rest=""),)
    )
    spec.to_file(tmp_path / "cluster.json")
    for cluster in (
        str(tmp_path / "cluster.json"),
        tmp_path,  # the data folder
        rt.Cluster(spec),
        spec,
        ["127.0.0.1:9"],
    ):
        with rt.Publisher(cluster, "feed", tmp_path / "logs", publisher_id="p") as publisher:
            assert publisher.stream == "p.feed"
        rt.Subscriber(cluster, log_dir=tmp_path / "copy")
    with pytest.raises(TypeError, match="a cluster is"):
        rt.Publisher(42, "feed", tmp_path / "logs", publisher_id="p")
