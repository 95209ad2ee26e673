"""The delivery side of ``rt.Subscriber``, ``rt.prune`` and the ``rt sub`` output, on real
local logs (written by LogWriter and LogMirror): positions and exact resume, pause and
resume, filters, unsubscribing inside a callback, events, callback errors, pruning.

Most tests subscribe with ``cluster=None`` (deliver a local log, no replication), so a
LogWriter can go on writing the directory while the subscriber reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from rt._cluster import Cluster
from rt._cmd_sub import event_line, jsonable, message_line, parse_filter, parse_from, run
from rt._prune import prune
from rt._sub_replication import Replication, reset_copy
from rt._sub_start import Start
from rt._subscriber import Subscriber, SubscriberError
from rtcommon.cluster import NodeSpec
from rtcommon.log import (
    BADTAIL,
    RESET,
    Chunk,
    Codec,
    CodecError,
    LogLockedError,
    LogMirror,
    LogReader,
    LogWriter,
    PositionError,
    Record,
    encode_message,
    encode_record,
    file_name,
    file_start,
    list_log_files,
    make_position,
    read_log,
    split_position,
)
from rtproto.v1.common_pb2 import LogChunk

WAIT = 10.0
ROLL = 1024


def write_log(directory: Path, count: int, *, start: int = 0, roll_size: int = ROLL) -> None:
    """``count`` messages ``("upd", "trade"|"quote", i)`` in a new session of ``directory``."""
    with LogWriter(directory, roll_size=roll_size, sync="none") as writer:
        append(writer, range(start, start + count))


def append(writer: LogWriter, numbers) -> None:
    for i in numbers:
        tag = "trade" if i % 2 else "quote"
        writer.append(encode_message(("upd", tag, i), origin="test", ts=i, id=i + 1))
    writer.commit()


def numbers(received) -> list[int]:
    return [message.data[2] for message, _ in received]


def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class Collector:
    """Callbacks that record what they get; optionally unsubscribe after ``stop_after``."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.messages: list[tuple[Record, int]] = []
        self.events: list[tuple[str, tuple[int, int]]] = []
        self.stop_after = stop_after
        self.subscriber: Subscriber | None = None
        self.after_unsubscribe = 0
        self._unsubscribed = False

    def on_message(self, message: Record, position: int) -> None:
        if self._unsubscribed:
            self.after_unsubscribe += 1
        self.messages.append((message, position))
        if self.stop_after is not None and len(self.messages) == self.stop_after:
            assert self.subscriber is not None
            self.subscriber.unsubscribe()
            self._unsubscribed = True

    def on_event(self, kind: str, positions: tuple[int, int]) -> None:
        self.events.append((kind, positions))

    def subscribe(self, directory: Path, position=None, **kwargs) -> Subscriber:
        self.subscriber = Subscriber(
            None,
            log_dir=directory,
            position=position,
            on_message=self.on_message,
            on_event=self.on_event,
            **kwargs,
        )
        return self.subscriber.start()


# -- positions ----------------------------------------------------------------------------


def test_every_record_is_delivered_once_in_order_with_the_position_after_it(tmp_path):
    write_log(tmp_path, 150)
    write_log(tmp_path, 50, start=150)  # a second session
    expected = read_log(tmp_path)
    collector = Collector()
    with collector.subscribe(tmp_path) as subscriber:
        wait_for(lambda: len(collector.messages) == 200, "200 messages")
        time.sleep(0.05)
        assert subscriber.position == expected[-1].position
    assert numbers(collector.messages) == list(range(200))
    assert [position for _, position in collector.messages] == [r.position for r in expected]
    assert all(message.position == position for message, position in collector.messages)
    first = collector.messages[0][0]
    assert (first.origin, first.id, first.ts, first.tags) == ("test", 1, 0, ("upd", "quote"))
    assert len(list_log_files(tmp_path)) > 4  # the messages crossed rolls and sessions
    assert collector.events == []


@pytest.mark.parametrize("stop_after", [1, 7, 13, 99, 150, 199])
def test_a_position_handed_to_a_callback_resumes_with_exactly_the_rest(tmp_path, stop_after):
    write_log(tmp_path, 150)
    write_log(tmp_path, 50, start=150)
    first = Collector(stop_after=stop_after)
    first.subscribe(tmp_path)
    assert first.subscriber is not None and first.subscriber.join(WAIT)
    assert first.after_unsubscribe == 0
    last_position = first.messages[-1][1]
    assert first.subscriber.position == last_position

    rest = Collector()
    with rest.subscribe(tmp_path, position=last_position):
        wait_for(lambda: len(rest.messages) == 200 - stop_after, "the rest")
        time.sleep(0.05)
    assert numbers(first.messages) + numbers(rest.messages) == list(range(200))


def test_a_resumed_filtered_subscriber_gets_exactly_the_rest_of_the_matches(tmp_path):
    write_log(tmp_path, 100)
    first = Collector(stop_after=10)
    first.subscribe(tmp_path, filter=("upd", "trade"))
    assert first.subscriber is not None and first.subscriber.join(WAIT)
    rest = Collector()
    with rest.subscribe(tmp_path, position=first.messages[-1][1], filter=("upd", "trade")):
        wait_for(lambda: len(rest.messages) == 40, "the other 40 trades")
    assert numbers(first.messages) + numbers(rest.messages) == list(range(1, 100, 2))


def test_start_and_end_positions(tmp_path):
    write_log(tmp_path, 20)
    from_start = Collector()
    with from_start.subscribe(tmp_path, position="start"):
        wait_for(lambda: len(from_start.messages) == 20, "20 messages")
    from_end = Collector()
    with (
        LogWriter(tmp_path, roll_size=ROLL, sync="none") as writer,
        from_end.subscribe(tmp_path, position="end") as subscriber,
    ):
        time.sleep(0.1)
        assert from_end.messages == []
        assert subscriber.position == file_start(writer.session, 0)  # the writer's new file
        append(writer, range(20, 25))
        wait_for(lambda: len(from_end.messages) == 5, "5 new messages")
    assert numbers(from_end.messages) == [20, 21, 22, 23, 24]


def test_a_position_inside_a_record_is_refused(tmp_path):
    write_log(tmp_path, 5)
    inside = read_log(tmp_path)[1].position + 5
    with pytest.raises(SubscriberError, match="not the start of a record"):
        Subscriber(None, log_dir=tmp_path, position=inside).start()


def test_a_position_past_the_end_of_a_local_log_is_refused(tmp_path):
    write_log(tmp_path, 5)
    end = read_log(tmp_path)[-1].position
    with pytest.raises(PositionError, match="past the end"):
        Subscriber(None, log_dir=tmp_path, position=end + 1000).start()
    with pytest.raises(PositionError):
        Subscriber(None, log_dir=tmp_path, position=-1)
    with pytest.raises(ValueError, match="not 'middle'"):
        Subscriber(None, log_dir=tmp_path, position="middle")


# -- live delivery, pause and resume ---------------------------------------------------------


def test_records_written_while_subscribed_are_delivered_live(tmp_path):
    collector = Collector()
    with LogWriter(tmp_path, roll_size=ROLL, sync="none") as writer, collector.subscribe(tmp_path):
        for batch in range(10):
            append(writer, range(batch * 20, batch * 20 + 20))
            wait_for(lambda b=batch: len(collector.messages) == b * 20 + 20, "a batch")
    assert numbers(collector.messages) == list(range(200))


def test_pause_stops_delivery_and_resume_loses_nothing(tmp_path):
    collector = Collector()
    with (
        LogWriter(tmp_path, roll_size=ROLL, sync="none") as writer,
        collector.subscribe(tmp_path) as subscriber,
    ):
        append(writer, range(50))
        wait_for(lambda: len(collector.messages) == 50, "50 messages")
        subscriber.pause()
        assert subscriber.paused
        append(writer, range(50, 120))
        time.sleep(0.3)
        assert len(collector.messages) == 50  # nothing while paused
        subscriber.resume()
        wait_for(lambda: len(collector.messages) == 120, "the rest after resume")
        subscriber.pause()
        subscriber.resume()
        append(writer, range(120, 130))
        wait_for(lambda: len(collector.messages) == 130, "messages after a second resume")
    assert numbers(collector.messages) == list(range(130))


def test_pause_from_inside_a_callback_stops_before_the_next_record(tmp_path):
    write_log(tmp_path, 30)
    received: list[int] = []

    def on_message(message: Record, position: int) -> None:
        received.append(message.data[2])
        if len(received) == 10:
            subscriber.pause()

    subscriber = Subscriber(None, log_dir=tmp_path, on_message=on_message)
    subscriber.start()
    try:
        wait_for(lambda: len(received) == 10, "10 messages")
        time.sleep(0.2)
        assert received == list(range(10))
        subscriber.resume()
        wait_for(lambda: len(received) == 30, "the rest")
    finally:
        subscriber.unsubscribe()
    assert received == list(range(30))


def test_pause_from_another_thread_waits_for_the_callback_in_progress(tmp_path):
    write_log(tmp_path, 20)
    in_callback = threading.Event()
    finished: list[float] = []
    started: list[int] = []

    def on_message(message: Record, position: int) -> None:
        started.append(message.data[2])
        if len(started) == 1:
            in_callback.set()
            time.sleep(0.3)
        finished.append(time.monotonic())

    with Subscriber(None, log_dir=tmp_path, on_message=on_message) as subscriber:
        assert in_callback.wait(WAIT)
        subscriber.pause()
        paused_at = time.monotonic()
        assert finished and finished[-1] <= paused_at
        count = len(started)
        time.sleep(0.2)
        assert len(started) == count  # no callback started after pause() returned


# -- unsubscribe ---------------------------------------------------------------------------


def test_unsubscribe_inside_a_callback_delivers_nothing_more_and_does_not_deadlock(tmp_path):
    write_log(tmp_path, 100)
    collector = Collector(stop_after=5)
    subscriber = collector.subscribe(tmp_path)
    assert subscriber.join(WAIT), "the subscriber did not stop"
    time.sleep(0.1)
    assert numbers(collector.messages) == [0, 1, 2, 3, 4]
    assert collector.after_unsubscribe == 0
    assert not subscriber.running
    assert subscriber.error is None
    subscriber.unsubscribe()  # idempotent
    with pytest.raises(RuntimeError):
        subscriber.start()


def test_unsubscribe_from_another_thread_waits_for_the_callback(tmp_path):
    write_log(tmp_path, 100)
    calls: list[float] = []

    def slow(message: Record, position: int) -> None:
        time.sleep(0.01)
        calls.append(time.monotonic())

    subscriber = Subscriber(None, log_dir=tmp_path, on_message=slow).start()
    wait_for(lambda: len(calls) >= 3, "a few calls")
    subscriber.unsubscribe()
    returned = time.monotonic()
    count = len(calls)
    time.sleep(0.1)
    assert len(calls) == count and calls[-1] <= returned
    assert not subscriber.running


# -- filters -------------------------------------------------------------------------------


def test_a_filter_delivers_only_matching_records_and_never_decodes_the_others(tmp_path):
    with LogWriter(tmp_path, roll_size=ROLL, sync="none") as writer:
        append(writer, range(20))
        # Tagged "zzz" with a payload msgpack cannot decode: decoding it would raise.
        writer.append(
            encode_record(b"\xc1", origin="test", ts=0, id=100, tags=("zzz",), codec=Codec.MSGPACK)
        )
        writer.append(encode_message(b"raw", origin="test", ts=0, id=101, codec=Codec.RAW))
        append(writer, range(20, 30))
    trades, upd, zzz = Collector(), Collector(), Collector()
    with (
        trades.subscribe(tmp_path, filter=("upd", "trade")),
        upd.subscribe(tmp_path, filter="upd"),
        zzz.subscribe(tmp_path, filter=["zzz"]),
    ):
        wait_for(lambda: len(trades.messages) == 15 and len(upd.messages) == 30, "matches")
        wait_for(lambda: len(zzz.messages) == 1, "the zzz record")
        time.sleep(0.05)
    assert numbers(trades.messages) == list(range(1, 30, 2))
    assert numbers(upd.messages) == list(range(30))
    assert zzz.messages[0][0].tags == ("zzz",)
    with pytest.raises(CodecError):  # what the other filters never had to decode
        _ = zzz.messages[0][0].data
    assert trades.subscriber is not None and trades.subscriber.error is None


# -- events --------------------------------------------------------------------------------


def test_a_badtail_is_delivered_as_an_event_and_delivery_moves_past_it(tmp_path, caplog):
    write_log(tmp_path, 5, roll_size=1 << 20)
    (first,) = list_log_files(tmp_path)
    path = tmp_path / file_name(*first)
    data = bytearray(path.read_bytes())
    bad_at = read_log(tmp_path)[2].position  # the fourth record is damaged
    offset = split_position(bad_at)[2]
    data[offset + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    write_log(tmp_path, 3, start=100)
    next_start = file_start(*list_log_files(tmp_path)[1])

    collector = Collector()
    with collector.subscribe(tmp_path):
        wait_for(lambda: len(collector.messages) == 6, "records around the badtail")
    assert numbers(collector.messages) == [0, 1, 2, 100, 101, 102]
    assert collector.events == [(BADTAIL, (bad_at, next_start))]

    # Replayable, and the default handler logs it.
    caplog.set_level(logging.WARNING, logger="rt.subscriber")
    received: list[int] = []
    with Subscriber(
        None, log_dir=tmp_path, position=collector.messages[1][1],
        on_message=lambda message, position: received.append(message.data[2]),
    ) as subscriber:  # fmt: skip
        wait_for(lambda: len(received) == 4, "records after the replayed badtail")
        assert subscriber.position == collector.messages[-1][1]
    assert received == [2, 100, 101, 102]
    assert f"Badtail event in {tmp_path.name} ({tmp_path})" in caplog.text
    assert str(bad_at) in caplog.text and str(next_start) in caplog.text


def test_a_reset_is_delivered_as_an_event_and_delivery_goes_on_in_the_new_session(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="rt.subscriber")
    received: list[int] = []
    writer = LogWriter(tmp_path, roll_size=ROLL, sync="none")
    with Subscriber(
        None, log_dir=tmp_path, on_message=lambda message, position: received.append(
            message.data[2]
        ),
    ):  # fmt: skip
        append(writer, range(40))
        wait_for(lambda: len(received) == 40, "the first session")
        reached = read_log(tmp_path)[-1].position
        writer.close()
        for file in list_log_files(tmp_path):  # a hard reset empties the files
            os.truncate(tmp_path / file_name(*file), 0)
        write_log(tmp_path, 10, start=1000)
        wait_for(lambda: len(received) == 50, "the new session")
    new_session = list_log_files(tmp_path)[-1][0]
    assert received == [*range(40), *range(1000, 1010)]
    assert (
        f"Reset event in {tmp_path.name} ({tmp_path}), rolling position from {reached} to"
        f" {file_start(new_session, 0)}" in caplog.text
    )


def chunks_of(directory: Path, position: int | None = None) -> list[Chunk]:
    with LogReader(directory, position) as reader:
        return [c for batch in iter(reader.read_chunks, []) for c in batch if type(c) is Chunk]


def test_a_reset_of_the_source_is_mirrored_into_a_copy_and_delivered_as_an_event(tmp_path):
    source, copy = tmp_path / "source", tmp_path / "copy"
    writer = LogWriter(source, roll_size=ROLL, sync="none")
    append(writer, range(40))
    mirror = LogMirror(copy, start_mid_file=True)
    for chunk in chunks_of(source):
        mirror.write(chunk)
    collector = Collector()
    with collector.subscribe(copy):
        wait_for(lambda: len(collector.messages) == 40, "the first session")
        reached = read_log(copy)[-1].position
        # The source is wiped (its files emptied) and goes on in a new session.
        writer.close()
        for file in list_log_files(source):
            os.truncate(source / file_name(*file), 0)
        with LogWriter(source, roll_size=ROLL, sync="none") as writer:
            append(writer, range(1000, 1030))
        new_chunks = chunks_of(source, file_start(1, 0))
        mirror.close()
        mirror = reset_copy(copy, 1)
        for chunk in new_chunks:
            mirror.write(chunk)
        wait_for(lambda: len(collector.messages) == 70, "the new session")
    mirror.close()
    assert numbers(collector.messages) == [*range(40), *range(1000, 1030)]
    assert collector.events == [(RESET, (reached, file_start(1, 0)))]
    assert all(
        (copy / file_name(*f)).stat().st_size == 0 for f in list_log_files(copy) if f[0] == 0
    )


def test_a_reset_chunk_after_a_roll_empties_the_copy_and_is_delivered_once(tmp_path):
    """The node marks the first chunk after a hard reset; a copy whose last file is sealed
    (the reset fell right after a roll) is reset too, which no heuristic could tell."""
    source, copy = tmp_path / "source", tmp_path / "copy"
    with LogWriter(source, roll_size=ROLL, sync="none", seal_on_close=True) as writer:
        append(writer, range(40))
    node = NodeSpec(id=0, name="node-0", push="127.0.0.1:1", pull="127.0.0.1:1", rest="")
    # Chunks are handed to it directly: no node is ever reached.
    replication = Replication(copy, (node,), Start(None), first_node=0, on_written=lambda: None)
    for chunk in chunks_of(source):
        replication.write(LogChunk(position=chunk.position, data=chunk.data, sealed=chunk.sealed))
    assert replication.mirror is not None and replication.mirror.sealed
    collector = Collector()
    with collector.subscribe(copy):
        wait_for(lambda: len(collector.messages) == 40, "the first session")
        reached = collector.messages[-1][1]
        assert replication.write(LogChunk(position=file_start(1, 0), reset=True))
        with LogWriter(source, roll_size=ROLL, sync="none") as writer:
            append(writer, range(1000, 1010))
        for chunk in chunks_of(source, file_start(1, 0)):
            replication.write(LogChunk(position=chunk.position, data=chunk.data))
        wait_for(lambda: len(collector.messages) == 50, "the new session")
    replication.close()
    assert collector.events == [(RESET, (reached, file_start(1, 0)))]
    assert numbers(collector.messages) == [*range(40), *range(1000, 1010)]
    assert all(
        (copy / file_name(*f)).stat().st_size == 0 for f in list_log_files(copy) if f[0] == 0
    )


# -- callback errors -----------------------------------------------------------------------


def test_a_callback_that_raises_stops_the_subscriber_with_the_error_kept(tmp_path, caplog):
    write_log(tmp_path, 20)
    received: list[int] = []

    def fragile(message: Record, position: int) -> None:
        if message.data[2] == 7:
            raise KeyError("boom")
        received.append(message.data[2])

    subscriber = Subscriber(None, log_dir=tmp_path, on_message=fragile).start()
    assert subscriber.join(WAIT)
    assert isinstance(subscriber.error, KeyError)
    assert received == list(range(7))
    assert subscriber.position == read_log(tmp_path)[6].position  # before the failed one
    assert "delivery failed" in caplog.text and "boom" in caplog.text
    subscriber.unsubscribe()  # does not raise

    retried: list[int] = []
    with Subscriber(
        None, log_dir=tmp_path, position=subscriber.position,
        on_message=lambda message, position: retried.append(message.data[2]),
    ):  # fmt: skip
        wait_for(lambda: len(retried) == 13, "the rest, from the failed message on")
    assert retried == list(range(7, 20))


# -- the local copy of a replicating subscriber -----------------------------------------------


def copy_from_middle(source: Path, copy: Path, first: int) -> int:
    """Mirror ``source`` into ``copy`` from its ``first``-th record on; return that position."""
    records = read_log(source)
    start = records[first - 1].position
    data = b"".join(r.raw for r in records[first:])
    with LogMirror(copy, start_mid_file=True) as mirror:
        mirror.write(Chunk(start, data))
    return start


def test_a_replicating_subscriber_delivers_its_copy_while_no_node_answers(
    tmp_path, monkeypatch, caplog
):
    source = tmp_path / "source"
    write_log(source, 10, roll_size=1 << 20)
    monkeypatch.setenv("RT_LOG_PATH", str(tmp_path / "logs"))
    start = copy_from_middle(source, tmp_path / "logs" / "feed", 4)
    unreachable = Cluster(["127.0.0.1:1"])
    received: list[int] = []
    subscriber = Subscriber(
        unreachable, topic="feed", on_message=lambda m, p: received.append(m.data[2])
    )
    assert subscriber.log_dir == tmp_path / "logs" / "feed"
    with subscriber:
        wait_for(lambda: len(received) == 6, "the copy's records")
        assert subscriber.position == read_log(source)[-1].position
        second = Subscriber(unreachable, log_dir=subscriber.log_dir)
        with pytest.raises(LogLockedError):  # one live subscriber per copy
            second.start()
        assert not second.running and second.join(1)  # a failed start leaves nothing running
        second.unsubscribe()
        wait_for(lambda: "pull failed" in caplog.text, "a logged retry")
    assert received == [4, 5, 6, 7, 8, 9]
    with pytest.raises(SubscriberError, match="before the local copy"):
        Subscriber(unreachable, topic="feed", position=start - 1).start()


# -- prune ---------------------------------------------------------------------------------


def test_prune_empties_rolled_files_wholly_before_the_position_and_keeps_the_rest(tmp_path):
    write_log(tmp_path, 200)
    files = list_log_files(tmp_path)
    assert len(files) >= 6
    records = read_log(tmp_path)
    in_fourth = next(r for r in records if split_position(r.position)[:2] == files[3])
    sizes = {f: (tmp_path / file_name(*f)).stat().st_size for f in files}

    pruned = prune(tmp_path, in_fourth.position)
    assert pruned == [tmp_path / file_name(*f) for f in files[:3]]
    assert list_log_files(tmp_path) == files  # names kept
    for file in files:
        size = (tmp_path / file_name(*file)).stat().st_size
        assert size == (0 if file < files[3] else sizes[file])
    assert prune(tmp_path, in_fourth.position) == []  # nothing left to give back

    rest = [r.data[2] for r in read_log(tmp_path, in_fourth.position)]
    later = [r.data[2] for r in records if r.position > in_fourth.position]
    assert rest == later  # a reader positioned later skips the emptied files
    everything = [r.data[2] for r in read_log(tmp_path)]
    assert everything == [r.data[2] for r in records if r.position > file_start(*files[3])]


def test_prune_never_touches_the_last_file(tmp_path):
    write_log(tmp_path, 60)
    files = list_log_files(tmp_path)
    beyond = file_start(files[-1][0], files[-1][1] + 5)
    pruned = prune(tmp_path, beyond)
    assert pruned == [tmp_path / file_name(*f) for f in files[:-1]]
    assert (tmp_path / file_name(*files[-1])).stat().st_size > 0
    assert prune(tmp_path / "missing", make_position(0, 1, 0)) == []


def test_subscriber_prune_goes_no_further_than_what_was_delivered(tmp_path):
    write_log(tmp_path, 200)
    files = list_log_files(tmp_path)
    collector = Collector(stop_after=120)
    subscriber = collector.subscribe(tmp_path)
    assert subscriber.join(WAIT)
    delivered = collector.messages[-1][1]
    with pytest.raises(ValueError, match="delivered"):
        subscriber.prune(delivered + 1)
    pruned = subscriber.prune(delivered)
    assert pruned and all(p.stat().st_size == 0 for p in pruned)
    assert tmp_path / file_name(*split_position(delivered)[:2]) not in pruned
    rest = Collector()
    with rest.subscribe(tmp_path, position=delivered):
        wait_for(lambda: len(rest.messages) == 80, "the rest after pruning")
    assert numbers(rest.messages) == list(range(120, 200))
    assert len(list_log_files(tmp_path)) == len(files)


# -- rt sub output -------------------------------------------------------------------------


def test_rt_sub_lines_are_json_with_bytes_tuples_and_keys_made_plain(tmp_path):
    records = []
    with LogWriter(tmp_path, sync="none") as writer:
        writer.append(encode_message(("upd", "t", {"k": b"\xff\x00", 1: b"ok"}), origin="o",
                                     ts=5, id=-3))  # fmt: skip
        writer.append(encode_message(b"caf\xc3\xa9", origin="o", ts=6, id=4, codec=Codec.RAW))
    records = read_log(tmp_path)
    line = json.loads(message_line(records[0], records[0].position))
    assert line == {
        "pos": records[0].position,
        "on": "o",
        "id": -3,
        "ts": 5,
        "data": ["upd", "t", {"k": {"$base64": "/wA="}, "1": "ok"}],
    }
    assert json.loads(message_line(records[1], 99))["data"] == "café"
    assert json.loads(event_line(RESET, (130, 1 << 44))) == {
        "event": "reset",
        "pos": [130, 1 << 44],
    }
    assert jsonable((1, [b"a", (None, 2.5)])) == [1, ["a", [None, 2.5]]]


def test_rt_sub_arguments_are_checked(tmp_path, capsys):
    assert parse_from(None) == "start" and parse_from("end") == "end"
    assert parse_from("17592186044416") == 1 << 44 and parse_from("0x100000000000") == 1 << 44
    for bad in ("-1", "later", str(1 << 64)):
        with pytest.raises(ValueError):
            parse_from(bad)
    assert parse_filter("upd, trade").tags == ("upd", "trade")
    for bad in ("a,b,c", ",", "a,"):
        with pytest.raises(ValueError):
            parse_filter(bad)

    def args(**kwargs):
        base = {"cluster": str(tmp_path / "cluster.json"), "from_": None, "filter": None}
        return argparse.Namespace(**{**base, "count": None, **kwargs})

    assert run(args()) == 2
    assert "no cluster description" in capsys.readouterr().err
    (tmp_path / "cluster.json").write_text("{not json")
    assert run(args()) == 2
    assert "not a valid cluster description" in capsys.readouterr().err
    Cluster(["127.0.0.1:1"]).spec.to_file(tmp_path / "cluster.json")
    assert run(args(from_="nowhere")) == 2
    assert "--from takes start, end or a position" in capsys.readouterr().err
    assert run(args(filter="a,b,c")) == 2
    assert run(args(count=-1)) == 2
