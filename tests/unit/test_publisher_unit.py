"""rt.Publisher without a cluster: log directory naming, message ids and header fields,
the directory lock, bad input that leaves the log untouched, thread-safe publishing, and
``rt pub``'s handling of its input and of a bad cluster file."""

from __future__ import annotations

import argparse
import asyncio
import filecmp
import io
import os
import random
import threading
import time
from pathlib import Path

import pytest

import rt
from rt._cmd_pub import _message, run
from rt._publisher import Publisher, publisher_directory
from rt_publisher_agent import Replicator, StreamNameError, check_stream_name
from rtcommon import env
from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.log import (
    Chunk,
    Codec,
    CodecError,
    LogLockedError,
    LogMirror,
    LogReader,
    LogWriteError,
    LogWriter,
    Record,
    encode_message,
    list_log_files,
    read_log,
)
from rtcommon.replication._link import PushLink, ReadCache, _Session


def records(directory: Path) -> list[Record]:
    items = read_log(directory)
    assert all(isinstance(item, Record) for item in items), items
    return items


def unreachable_cluster() -> ClusterSpec:
    # Port 9 (discard) on loopback: nothing listens, connections are refused at once.
    node = NodeSpec(id=0, name="node-0", push="127.0.0.1:9", pull="127.0.0.1:9", rest="")
    return ClusterSpec(nodes=(node,))


# -- where the log goes --------------------------------------------------------------------


def test_an_absolute_topic_is_the_directory_and_is_not_replicated(tmp_path: Path) -> None:
    assert publisher_directory(str(tmp_path / "replay")) == (tmp_path / "replay", False)


def test_a_topic_names_id_dot_topic_under_log_dir(tmp_path: Path) -> None:
    directory, replicated = publisher_directory("feed", tmp_path)
    assert replicated and directory.parent == tmp_path
    assert directory.name.startswith(f"{env.hostname()}-") and directory.name.endswith(".feed")
    assert publisher_directory("feed", tmp_path)[0] == directory  # stable across restarts
    other, _ = publisher_directory("feed", tmp_path / "elsewhere")
    assert other.name != directory.name  # two log folders on one host: two streams
    directory, _ = publisher_directory("feed.dedup", tmp_path, publisher_id="pi-7")
    assert directory == tmp_path / "pi-7.feed.dedup"


def test_rt_log_path_is_the_default_parent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RT_LOG_PATH", str(tmp_path / "logs"))
    directory, _ = publisher_directory("feed", publisher_id="p")
    assert directory == tmp_path / "logs" / "p.feed"


@pytest.mark.parametrize("topic", ["", "a/b", "sp ace", "x" * 250])
def test_a_topic_that_cannot_name_a_stream_is_refused(topic: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        publisher_directory(topic, tmp_path, publisher_id="p")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "é", "x" * 201])
def test_stream_names_follow_the_node_rules(name: str) -> None:
    with pytest.raises(StreamNameError):
        check_stream_name(name)
    assert check_stream_name("host-1.feed_2.dedup") == "host-1.feed_2.dedup"


def test_a_replicated_publisher_needs_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a cluster"):
        Publisher(None, "feed", log_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written, not even the directory


def test_an_absolute_topic_publishes_without_any_replication(tmp_path: Path) -> None:
    directory = tmp_path / "replay"
    with Publisher(None, str(directory)) as publisher:
        assert publisher.stream is None and publisher.held == {}
        end = publisher.publish({"a": 1})
        publisher.flush(timeout=5)
        assert end == publisher.position
    [record] = records(directory)
    assert (record.data, record.position) == ({"a": 1}, end)


def test_the_replicator_is_named_after_the_directory(tmp_path: Path) -> None:
    replicator = Replicator(tmp_path / "h.feed", None, unreachable_cluster())
    assert replicator.stream == "h.feed"
    with pytest.raises(StreamNameError):
        Replicator(tmp_path / ".hidden", None, unreachable_cluster())


# -- header fields -------------------------------------------------------------------------


def test_ids_count_per_origin_from_one_and_explicit_ids_are_kept(tmp_path: Path) -> None:
    with Publisher(None, str(tmp_path / "log"), origin="a") as publisher:
        publisher.publish("m1")
        publisher.publish("m2")
        publisher.publish("m-3", id=-3)
        publisher.publish("m4")
        publisher.publish("b10", origin="b", id=10)  # an origin's first id is free
        publisher.publish("b11", origin="b")
        publisher.publish("m5", id=5)
    got = [(r.origin, r.id, r.data) for r in records(tmp_path / "log")]
    assert got == [
        ("a", 1, "m1"),
        ("a", 2, "m2"),
        ("a", -3, "m-3"),
        ("a", 4, "m4"),
        ("b", 10, "b10"),
        ("b", 11, "b11"),
        ("a", 5, "m5"),
    ]


def test_publish_many_appends_as_publish_does_one_by_one(tmp_path: Path) -> None:
    with Publisher(None, str(tmp_path / "log"), origin="a") as publisher:
        publisher.publish("first")
        end = publisher.publish_many([("upd", "t", i) for i in range(3)], ts=7)
        assert end == publisher.position
        publisher.publish_many(["b1", "b2"], origin="b")
        with pytest.raises(CodecError):
            publisher.publish_many(["a5", object(), "never"])
        publisher.publish("last")
    got = [(r.origin, r.id, r.data) for r in records(tmp_path / "log")]
    assert got == [
        ("a", 1, "first"),
        ("a", 2, ("upd", "t", 0)),
        ("a", 3, ("upd", "t", 1)),
        ("a", 4, ("upd", "t", 2)),
        ("b", 1, "b1"),
        ("b", 2, "b2"),
        ("a", 5, "a5"),  # the messages before the one that failed are published
        ("a", 6, "last"),
    ]
    assert [r.ts for r in records(tmp_path / "log")][1:4] == [7, 7, 7]
    assert [r.tags for r in records(tmp_path / "log")][1] == ("upd", "t")


@pytest.mark.parametrize(
    ("ids", "bad"),
    [((1, 2, -2), -2), ((1, 3), 3), ((5, 5), 5), ((0,), 0), ((1, -1), -1), ((1,), True)],
)
def test_an_id_that_breaks_the_sequence_is_refused_and_not_written(
    tmp_path: Path, ids: tuple[int, ...], bad: int
) -> None:
    """RT's rule: per origin, the distance of ids from zero rises by one."""
    with Publisher(None, str(tmp_path / "log"), origin="a") as publisher:
        for message_id in ids[:-1]:
            publisher.publish("ok", id=message_id)
        with pytest.raises(rt.IdSequenceError, match="id"):
            publisher.publish("bad", id=bad)
        publisher.publish("other origin", origin="z", id=7)  # other origins are unaffected
    assert [r.id for r in records(tmp_path / "log")] == [*ids[:-1], 7]


def test_header_defaults_and_explicit_fields(tmp_path: Path) -> None:
    before = time.time_ns()
    with Publisher(None, str(tmp_path / "log"), codec="raw") as publisher:
        publisher.publish(b"now")
        publisher.publish(b"then", ts=123, timeout=5, tags=("upd", "trade"), origin="o")
    first, second = records(tmp_path / "log")
    assert first.origin == env.hostname()
    assert before <= first.ts <= time.time_ns()
    assert (first.timeout, first.tags, first.data) == (None, (), b"now")
    assert (second.ts, second.timeout, second.tags, second.origin) == (
        123,
        5,
        ("upd", "trade"),
        "o",
    )


def test_tuple_messages_are_tagged_by_their_leading_strings(tmp_path: Path) -> None:
    with Publisher(None, str(tmp_path / "log")) as publisher:
        publisher.publish(("upd", "trade", {"sym": "A", "px": 1.5}))
    [record] = records(tmp_path / "log")
    assert record.tags == ("upd", "trade")
    assert record.data == ("upd", "trade", {"sym": "A", "px": 1.5})


# -- the directory lock, bad input, closing ------------------------------------------------


def test_a_second_publisher_on_a_directory_is_refused(tmp_path: Path) -> None:
    directory = str(tmp_path / "log")
    with Publisher(None, directory) as publisher:
        with pytest.raises(LogLockedError, match=f"pid {os.getpid()}"):
            Publisher(None, directory)
        publisher.publish("still fine")
    with Publisher(None, directory) as again:  # free once closed: a new session
        again.publish("next session")
    assert [session for session, _ in list_log_files(directory)] == [0, 1]
    assert [r.data for r in records(Path(directory))] == ["still fine", "next session"]


def test_a_message_the_codec_cannot_encode_writes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    with Publisher(None, str(directory)) as publisher:
        publisher.publish("good")
        publisher.flush(timeout=5)
        size = (directory / "log.0.0").stat().st_size
        with pytest.raises(CodecError):
            publisher.publish({"not msgpack": object()})
        with pytest.raises(CodecError):
            publisher.publish(2**70)
        publisher.flush(timeout=5)
        assert (directory / "log.0.0").stat().st_size == size
        publisher.publish("after")
    assert [(r.id, r.data) for r in records(directory)] == [(1, "good"), (2, "after")]


def test_the_raw_codec_takes_only_bytes(tmp_path: Path) -> None:
    with (
        Publisher(None, str(tmp_path / "log"), codec="raw") as publisher,
        pytest.raises(CodecError),
    ):
        publisher.publish("text")
    assert records(tmp_path / "log") == []


def test_publishing_after_close_is_an_error(tmp_path: Path) -> None:
    publisher = Publisher(None, str(tmp_path / "log"))
    publisher.close()
    publisher.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        publisher.publish("late")


def test_close_times_out_when_no_quorum_holds_the_log_and_still_releases_it(
    tmp_path: Path,
) -> None:
    publisher = Publisher(unreachable_cluster(), "feed", log_dir=tmp_path, publisher_id="p")
    publisher.publish("unsent")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="quorum"):
        publisher.close(timeout=0.5)
    assert time.monotonic() - started < 10
    assert publisher.closed
    with Publisher(None, str(tmp_path / "p.feed")) as again:  # the lock was released
        again.publish("next")
    assert [r.data for r in records(tmp_path / "p.feed")] == ["unsent", "next"]


def test_flush_with_nothing_published_returns_at_once(tmp_path: Path) -> None:
    with Publisher(unreachable_cluster(), "feed", log_dir=tmp_path, publisher_id="p") as publisher:
        started = time.monotonic()
        publisher.flush(timeout=5)
        assert time.monotonic() - started < 1


# -- threads -------------------------------------------------------------------------------


def test_publish_from_several_threads(tmp_path: Path) -> None:
    threads, per_thread = 4, 5000
    positions: dict[str, list[int]] = {}
    with Publisher(None, str(tmp_path / "log"), roll_size=256 << 10) as publisher:

        def work(origin: str) -> None:
            positions[origin] = [
                publisher.publish([origin, n], origin=origin) for n in range(per_thread)
            ]

        workers = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        publisher.flush(timeout=10)
    got = records(tmp_path / "log")
    assert len(got) == threads * per_thread
    by_origin: dict[str, list[Record]] = {}
    for record in got:
        by_origin.setdefault(record.origin, []).append(record)
    for origin, mine in by_origin.items():
        assert [r.id for r in mine] == list(range(1, per_thread + 1))
        assert [r.data for r in mine] == [[origin, n] for n in range(per_thread)]
        assert [r.position for r in mine] == positions[origin]
    assert [r.position for r in got] == sorted({r.position for r in got})


# -- rt pub ---------------------------------------------------------------------------------


def test_rt_pub_lines_are_json_values_or_strings() -> None:
    assert _message(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    assert _message(b"42") == 42
    assert _message(b'"quoted"') == "quoted"
    assert _message(b"plain text") == "plain text"
    assert _message(b"123456789012345678901234567890") == "123456789012345678901234567890"
    assert _message(b"\xff\xfe") == b"\xff\xfe"


def pub_args(cluster: str, **given) -> argparse.Namespace:
    return argparse.Namespace(
        **{"cluster": cluster, "topic": None, "origin": None, "dedup": False, **given}
    )


def test_rt_pub_without_a_cluster_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert run(pub_args(str(tmp_path / "missing.json"))) == 2
    assert "missing.json" in capsys.readouterr().err


def test_rt_pub_with_a_malformed_cluster_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cluster.json"
    path.write_text('{"nodes": "no"}')
    assert run(pub_args(str(path))) == 2
    assert "not a valid cluster description" in capsys.readouterr().err


def test_rt_pub_with_a_bad_topic_is_a_usage_error(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "cluster.json"
    unreachable_cluster().to_file(path)
    monkeypatch.setenv("RT_LOG_PATH", str(tmp_path / "logs"))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"x\n")))
    assert run(pub_args(str(path), topic="a/b")) == 2
    assert "topic 'a/b' must use only" in capsys.readouterr().err  # the topic, not the stream


# -- links sharing reads -------------------------------------------------------------------


@pytest.mark.parametrize("long_records", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_links_sharing_reads_each_make_an_exact_copy(
    tmp_path: Path, seed: int, long_records: bool, monkeypatch
) -> None:
    """Three fan-out links read one growing log through a shared read cache, each into its
    own copy (as a node would), reconnecting at random from what their copy holds: every
    copy ends byte for byte the log, seals included. With ``long_records``, records
    longer than a read go in pieces to the nodes that take them (most sessions) and whole
    to the others (nodes from before pieces)."""
    rng = random.Random(seed)
    read_bytes = 1000
    monkeypatch.setattr("rtcommon.replication._link.READ_BYTES", read_bytes)
    monkeypatch.setattr("rtcommon.replication._link.MAX_MESSAGE_BYTES", read_bytes)
    source = tmp_path / "h.feed"
    node = NodeSpec(id=0, name="node-0", push="127.0.0.1:9", pull="", rest="")
    reads = ReadCache(max_bytes=rng.choice([1, 2_000, 1 << 20]))

    def new_link() -> PushLink:
        return PushLink(
            nodes=(node,),
            log_dir=source,
            stream="h.feed",
            topic="feed",
            publisher="test",
            cluster_id="",
            on_reply=lambda *_: None,
            stopping=asyncio.Event(),
            reply_timeout=1.0,
            reads=reads,
        )

    def connect(mirror: LogMirror) -> _Session:
        held = mirror.end or 0
        pieces = long_records and rng.random() < 0.8
        reader = LogReader(source, held, chunk_size=read_bytes, pieces=pieces)
        return _Session(node, None, reader, held, pieces)

    links = [new_link() for _ in range(3)]
    mirrors = [LogMirror(tmp_path / f"copy{i}") for i in range(3)]
    rolls = [8192, 20_000] if long_records else [200, 400, 4096]
    writer = LogWriter(source, roll_size=rng.choice(rolls))
    sessions = [connect(mirror) for mirror in mirrors]
    count = 0

    def ship(i: int) -> bool:
        requests, _ = links[i]._read(sessions[i])
        for request in requests:
            chunk = request.chunk
            assert not sessions[i].pieces or len(chunk.data) <= 2 * read_bytes
            mirrors[i].write(Chunk(chunk.position, chunk.data, chunk.sealed))
        return bool(requests)

    for _ in range(400):
        action = rng.random()
        if action < 0.3:
            for _ in range(rng.randrange(1, 6)):
                size = rng.choice([0, 0, 0, 3000, 7000]) if long_records else 0
                record = encode_message(
                    b"m%d" % count + bytes(size),
                    origin="o",
                    ts=count,
                    id=count + 1,
                    codec=Codec.RAW,
                )
                writer.append(record)
                count += 1
            writer.commit()
        elif action < 0.33:
            writer.close()  # a new writer session: the last file sealed, a new one begun
            writer = LogWriter(source, roll_size=writer.roll_size)
        elif action < 0.4:
            i = rng.randrange(3)
            sessions[i].reader.close()
            sessions[i] = connect(mirrors[i])  # a fault: resume from what the copy holds
        else:
            ship(rng.randrange(3))
    writer.close()
    for i in range(3):
        rounds = 0
        while ship(i):
            rounds += 1
            assert rounds < 10_000, "a link keeps sending without moving on"
        mirrors[i].close()
        sessions[i].reader.close()
    names = sorted(p.name for p in source.iterdir() if p.name.startswith("log."))
    for i in range(3):
        copy = tmp_path / f"copy{i}"
        assert sorted(p.name for p in copy.iterdir() if p.name.startswith("log.")) == names
        assert filecmp.cmpfiles(source, copy, names, shallow=False)[0] == names


def test_on_a_full_disk_publish_either_takes_a_message_or_says_it_did_not(small_disk):
    (small_disk / "filler").write_bytes(b"\0" * (96 << 10))
    taken, refused = [], 0
    publisher = Publisher(None, str(small_disk / "log"), roll_size=2048, codec="raw")
    for i in range(1, 401):
        try:
            publisher.publish(b"m%d" % i + b"x" * 50, id=len(taken) + 1)
            taken.append(len(taken) + 1)
        except LogWriteError as exc:
            assert "the disk is full" in str(exc)
            refused += 1
        if i % 20 == 0:
            time.sleep(0.01)  # let the committer run into the full disk too
    assert refused
    (small_disk / "filler").unlink()
    publisher.close()
    assert [r.id for r in read_log(small_disk / "log")] == taken


def test_a_log_folder_s_owner_id_is_made_once_and_kept(tmp_path: Path) -> None:
    from rtcommon.streams import OWNER_FILE, log_owner

    first = log_owner(tmp_path)
    assert len(first) == 32 and log_owner(tmp_path) == first
    assert (tmp_path / OWNER_FILE).read_text().strip() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [OWNER_FILE]  # no spare left
