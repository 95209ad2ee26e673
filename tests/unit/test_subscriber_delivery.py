"""Delivery stepped directly: no thread, no sleeps (rt._sub_delivery)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rt._sub_delivery import Delivery
from rt._sub_start import Start
from rtcommon.log import (
    BADTAIL,
    Codec,
    CodecError,
    LogWriter,
    TagFilter,
    encode_message,
    encode_record,
    file_name,
    list_log_files,
    read_log,
    split_position,
)

ROLL = 4096


def append(writer: LogWriter, numbers) -> None:
    for i in numbers:
        writer.append(encode_message(("upd", "trade", i), origin="t", ts=i, id=i + 1))
    writer.commit()


class Calls:
    def __init__(self, fail_at: int | None = None) -> None:
        self.messages: list[tuple[int, int]] = []
        self.events: list[tuple[str, tuple[int, int]]] = []
        self.fail_at = fail_at

    def message(self, record, position: int) -> None:
        if record.data[2] == self.fail_at:
            raise RuntimeError("the callback failed")
        self.messages.append((record.data[2], position))

    def event(self, kind: str, positions: tuple[int, int]) -> None:
        self.events.append((kind, positions))


def delivery(directory: Path, calls: Calls, position=None, tag_filter=None) -> Delivery:
    return Delivery(
        directory,
        Start(position),
        on_message=calls.message,
        on_event=calls.event,
        tag_filter=tag_filter,
        replicated=False,
    )


def drain(steps: Delivery) -> int:
    count = 0
    while steps.step():
        count += 1
    return count


def test_each_step_delivers_one_message_and_none_when_the_log_has_no_more(tmp_path: Path):
    calls = Calls()
    with LogWriter(tmp_path, roll_size=ROLL, sync="none") as writer:
        steps = delivery(tmp_path, calls)
        assert not steps.step()  # an empty first file
        append(writer, range(3))
        assert steps.step() and [n for n, _ in calls.messages] == [0]
        assert drain(steps) == 2 and not steps.step()
        append(writer, range(3, 200))  # across rolls
        assert drain(steps) == 197
    records = read_log(tmp_path)
    assert calls.messages == [(r.data[2], r.position) for r in records]
    assert steps.position == steps.handed == records[-1].position
    steps.close()


def test_a_filter_skips_what_does_not_match_without_decoding_it(tmp_path: Path):
    with LogWriter(tmp_path, roll_size=ROLL, sync="none") as writer:
        for i in range(10):
            if i % 2:
                writer.append(encode_message(("upd", "trade", i), origin="t", ts=i, id=i + 1))
            else:  # msgpack cannot decode 0xc1: a delivery that decoded it would raise
                writer.append(
                    encode_record(
                        b"\xc1",
                        origin="t",
                        ts=i,
                        id=i + 1,
                        tags=("upd", "zzz"),
                        codec=Codec.MSGPACK,
                    )
                )
        writer.commit()
    calls = Calls()
    steps = delivery(tmp_path, calls, tag_filter=TagFilter(("upd", "trade")))
    assert drain(steps) == 5
    assert [n for n, _ in calls.messages] == [1, 3, 5, 7, 9]
    undecodable = [r for r in read_log(tmp_path) if r.tags == ("upd", "zzz")]
    with pytest.raises(CodecError):  # what the filter never had to decode
        _ = undecodable[0].data


def test_a_failing_callback_leaves_the_position_before_its_message(tmp_path: Path):
    with LogWriter(tmp_path, roll_size=ROLL, sync="none") as writer:
        append(writer, range(10))
    calls = Calls(fail_at=4)
    steps = delivery(tmp_path, calls)
    with pytest.raises(RuntimeError, match="callback failed"):
        drain(steps)
    assert [n for n, _ in calls.messages] == [0, 1, 2, 3]
    assert steps.position == calls.messages[-1][1]
    steps.close()
    again = Calls()
    resumed = delivery(tmp_path, again, position=steps.position)
    assert drain(resumed) == 6 and [n for n, _ in again.messages] == list(range(4, 10))
    resumed.close()


def test_a_damaged_record_is_one_step_delivering_a_badtail_event(tmp_path: Path):
    with LogWriter(tmp_path, roll_size=1 << 20, sync="none") as writer:
        append(writer, range(5))
    (first,) = list_log_files(tmp_path)
    path = tmp_path / file_name(*first)
    bad_at = read_log(tmp_path)[2].position  # after the third record: the fourth is damaged
    data = bytearray(path.read_bytes())
    data[split_position(bad_at)[2] + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with LogWriter(tmp_path, roll_size=1 << 20, sync="none") as writer:  # the next session
        append(writer, range(100, 102))
    calls = Calls()
    steps = delivery(tmp_path, calls)
    steps_taken = drain(steps)
    assert [n for n, _ in calls.messages] == [0, 1, 2, 100, 101], calls.events
    assert [kind for kind, _ in calls.events] == [BADTAIL], calls.events
    assert steps_taken == 6  # three messages, the event, two messages
    assert calls.events[0][1][0] == bad_at
    steps.close()
