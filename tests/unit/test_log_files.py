"""The writer and reader on real files: sessions, rolls, seals, locks, events, faults."""

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rtcommon.log import (
    BADTAIL,
    COLLECTED,
    RESET,
    SEAL_SIZE,
    Codec,
    LogDirectoryError,
    LogEvent,
    LogLockedError,
    LogMirror,
    LogReader,
    LogWriteError,
    LogWriter,
    PositionError,
    Record,
    RecordTooLargeError,
    archive_log_files,
    collect_copy,
    collected_end,
    encode_message,
    file_is_sealed,
    file_name,
    file_start,
    list_log_files,
    make_position,
    read_log,
    read_session,
    split_position,
)


def record(i: int, size: int = 0) -> bytes:
    return encode_message(
        b"x" * size + str(i).encode(), origin="pub", ts=i, id=i + 1, codec=Codec.RAW
    )


def records_only(items):
    assert all(isinstance(item, Record) for item in items), items
    return items


def test_each_open_starts_a_new_session(tmp_path):
    for session in range(3):
        with LogWriter(tmp_path) as writer:
            assert writer.session == session
            assert writer.position == file_start(session, 0)
            writer.append(record(session))
        assert read_session(tmp_path) == session
    assert list_log_files(tmp_path) == [(0, 0), (1, 0), (2, 0)]
    assert [r.id for r in records_only(read_log(tmp_path))] == [1, 2, 3]


def test_session_continues_after_files_when_session_file_is_lost(tmp_path):
    with LogWriter(tmp_path):
        pass
    with LogWriter(tmp_path):
        pass
    (tmp_path / ".session").unlink()
    with LogWriter(tmp_path) as writer:
        assert writer.session == 2


def test_roll_exactly_at_the_boundary(tmp_path):
    size = len(record(0))
    with LogWriter(tmp_path, roll_size=3 * size + SEAL_SIZE) as writer:
        positions = [writer.append(record(i)) for i in range(3)]
        assert positions == [size, 2 * size, 3 * size]
        assert writer.roll == 0
        assert writer.append(record(3)) == make_position(0, 1, size)
        assert writer.roll == 1
        writer.commit()
        assert (tmp_path / "log.0.0").stat().st_size == 3 * size + SEAL_SIZE
        assert file_is_sealed(tmp_path / "log.0.0")
        assert not file_is_sealed(tmp_path / "log.0.1")
    assert file_is_sealed(tmp_path / "log.0.1")  # close seals the last file
    items = records_only(read_log(tmp_path))
    assert [r.position for r in items] == [*positions, make_position(0, 1, size)]


def test_one_byte_smaller_rolls_one_record_earlier(tmp_path):
    size = len(record(0))
    with LogWriter(tmp_path, roll_size=3 * size + SEAL_SIZE - 1) as writer:
        for i in range(3):
            writer.append(record(i))
        assert writer.roll == 1


def test_record_larger_than_a_file_is_refused(tmp_path):
    with LogWriter(tmp_path, roll_size=100) as writer:
        with pytest.raises(RecordTooLargeError):
            writer.append(record(0, size=100))
        writer.append(record(1))
    assert len(read_log(tmp_path)) == 1


def test_read_from_every_position_gives_exactly_the_rest(tmp_path):
    with LogWriter(tmp_path, roll_size=400) as writer:
        for i in range(40):
            writer.append(record(i))
    with LogWriter(tmp_path, roll_size=400) as writer:
        for i in range(40, 60):
            writer.append(record(i))
    everything = records_only(read_log(tmp_path))
    assert [r.id for r in everything] == list(range(1, 61))
    assert len({s for s, _ in list_log_files(tmp_path)}) == 2
    for k, item in enumerate(everything):
        rest = records_only(read_log(tmp_path, item.position))
        assert [r.raw for r in rest] == [r.raw for r in everything[k + 1 :]]


def test_start_of_a_later_file_is_a_valid_position(tmp_path):
    with LogWriter(tmp_path, roll_size=400) as writer:
        writer.append(record(0))
    assert read_log(tmp_path, file_start(1, 0)) == []  # the next session, not yet written
    with LogWriter(tmp_path) as writer:
        writer.append(record(1))
    assert [r.id for r in read_log(tmp_path, file_start(1, 0))] == [2]


@pytest.mark.parametrize(
    "position", [make_position(0, 0, 10_000), make_position(0, 5, 1), make_position(3, 0, 1)]
)
def test_position_past_the_end_is_refused(tmp_path, position):
    with LogWriter(tmp_path) as writer:
        writer.append(record(0))
    with pytest.raises(PositionError, match="past the end"):
        LogReader(tmp_path, position)


def test_second_writer_in_the_same_process_is_refused(tmp_path):
    with LogWriter(tmp_path), pytest.raises(LogLockedError, match=f"pid {os.getpid()}"):
        LogWriter(tmp_path)
    with LogWriter(tmp_path) as writer:  # released on close
        assert writer.session == 1


def test_second_writer_in_another_process_is_refused_until_it_dies(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from rtcommon.log import LogWriter
            w = LogWriter({str(tmp_path)!r})
            print("locked", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LogLockedError, match=f"pid {holder.pid}"):
            LogWriter(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    with LogWriter(tmp_path) as writer:  # a dead holder's lock is gone
        assert writer.session == 1


def test_a_file_where_the_directory_should_be_is_a_clear_error(tmp_path):
    (tmp_path / "feed").write_text("not a directory")
    with pytest.raises(LogDirectoryError, match="not a directory"):
        LogWriter(tmp_path / "feed")


def test_torn_tail_of_a_crashed_writer_is_a_badtail(tmp_path):
    writer = LogWriter(tmp_path)
    writer.append(record(0))
    writer.append(record(1))
    writer.commit()
    good = writer.written_position
    with open(tmp_path / "log.0.0", "ab") as file:
        file.write(record(2)[:-3])  # a crash mid-write
    os.close(writer._fd)  # the process died: no seal, lock released
    writer._lock.release()
    assert [r.id for r in read_log(tmp_path)] == [1, 2]  # still growing, as far as anyone knows
    with LogWriter(tmp_path) as restarted:
        restarted.append(record(3))
    items = read_log(tmp_path)
    assert [r.id for r in items[:2]] == [1, 2]
    assert items[2] == LogEvent(BADTAIL, (good, file_start(1, 0)))
    assert items[3].id == 4 and len(items) == 4


def test_corrupt_record_mid_file_skips_to_the_next_file(tmp_path):
    size = len(record(0))
    with LogWriter(tmp_path, roll_size=5 * size + SEAL_SIZE) as writer:
        for i in range(8):
            writer.append(record(i))
    with open(tmp_path / "log.0.0", "r+b") as file:
        file.seek(2 * size + 20)
        file.write(b"\x00")
    items = read_log(tmp_path)
    assert [r.id for r in items[:2]] == [1, 2]
    assert items[2] == LogEvent(BADTAIL, (2 * size, file_start(0, 1)))
    assert [r.id for r in items[3:]] == [6, 7, 8]
    # replayable: resuming from before the bad record meets the same event
    assert read_log(tmp_path, size)[1] == items[2]


def test_corruption_in_the_growing_file_waits_for_the_next_file(tmp_path):
    writer = LogWriter(tmp_path)
    writer.append(record(0))
    writer.append(record(1))
    writer.commit()
    with open(tmp_path / "log.0.0", "r+b") as file:
        file.seek(len(record(0)) + 10)
        file.write(b"\xee")
    reader = LogReader(tmp_path)
    assert [r.id for r in reader.read()] == [1]
    assert reader.read() == []  # the next file's start is not known yet
    writer.close()
    with LogWriter(tmp_path) as second:
        second.append(record(2))
    assert reader.read() == [LogEvent(BADTAIL, (len(record(0)), file_start(1, 0)))]
    assert [r.id for r in reader.read()] == [3]
    reader.close()


def test_reset_wipes_files_and_starts_a_new_session(tmp_path):
    with LogWriter(tmp_path, roll_size=200) as writer:
        for i in range(6):
            writer.append(record(i))
    reader = LogReader(tmp_path)
    seen = records_only([item for _ in range(10) for item in reader.read()])
    assert len(seen) == 6
    reached = reader.position
    for session, roll in list_log_files(tmp_path):
        os.truncate(tmp_path / f"log.{session}.{roll}", 0)  # emptied, not deleted
    with LogWriter(tmp_path) as writer:
        writer.append(record(100))
    items = reader.read()
    assert items == [LogEvent(RESET, (reached, file_start(1, 0)))]
    assert [r.id for r in reader.read()] == [101]
    reader.close()


def test_a_reset_right_after_a_roll_and_a_replay_from_before_it_meet_the_reset(tmp_path):
    writer = LogWriter(tmp_path, roll_size=200, seal_on_close=True)
    for i in range(3):
        writer.append(record(i))
    writer.close()  # the last file sealed: the reset falls right after a roll
    reader = LogReader(tmp_path)
    assert len(records_only([item for _ in range(5) for item in reader.read()])) == 3
    reached = reader.position
    for session, roll in list_log_files(tmp_path):
        os.truncate(tmp_path / f"log.{session}.{roll}", 0)
    with LogWriter(tmp_path) as writer:
        writer.append(record(100))
    event = LogEvent(RESET, (reached, file_start(1, 0)))
    assert reader.read() == [event]
    assert [r.id for r in reader.read()] == [101]
    reader.close()
    # a reader that starts from the position reached meets the same event
    assert read_log(tmp_path, reached) == [event, read_log(tmp_path)[-1]]


def test_a_reset_while_a_reader_waits_at_the_start_of_an_empty_file_is_met(tmp_path):
    """A merged log restarted right after a roll holds an empty successor file; a reader
    waits at its start. A reset empties what was before: nothing shrinks under the
    reader, yet it meets the reset; so does a reader that starts in the wiped session."""
    with LogWriter(tmp_path, roll_size=200, seal_on_close=True) as writer:
        for i in range(3):
            writer.append(record(i))
    sealed_last = list_log_files(tmp_path)[-1]
    with LogWriter(tmp_path, at=file_start(sealed_last[0], sealed_last[1] + 1)):
        pass  # the successor exists, empty
    reader = LogReader(tmp_path, merged=True)
    assert len(records_only([item for _ in range(5) for item in reader.read()])) == 3
    waiting_at = reader.position
    assert waiting_at == file_start(sealed_last[0], sealed_last[1] + 1)
    for session, roll in list_log_files(tmp_path):
        os.truncate(tmp_path / f"log.{session}.{roll}", 0)
    with LogWriter(tmp_path) as writer:
        writer.append(record(100))
    assert reader.read() == [LogEvent(RESET, (waiting_at, file_start(1, 0)))]
    assert [r.id for r in reader.read()] == [101]
    reader.close()
    with LogReader(tmp_path, 0, merged=True) as replay:
        assert replay.read() == [LogEvent(RESET, (0, file_start(1, 0)))]
    # elsewhere an empty session is a writer that died before writing: no event
    assert [type(item) for item in read_log(tmp_path, 0)] == [Record]


def test_a_position_in_a_file_the_log_will_not_reach_is_refused(tmp_path):
    with LogWriter(tmp_path, roll_size=200) as writer:
        writer.append(record(0))
    for awaited in (file_start(0, 1), file_start(1, 0)):  # the next file, the next session
        with LogReader(tmp_path, awaited) as reader:
            assert reader.read() == []
    for beyond in (file_start(0, 2), file_start(1, 1), 1 << 52):
        with pytest.raises(PositionError, match=r"past the end.*the log ends in log\.0\.0"):
            LogReader(tmp_path, beyond)


def test_reader_follows_a_growing_log_across_rolls(tmp_path):
    total = 2000
    writer = LogWriter(tmp_path, roll_size=4096)

    def publish():
        for i in range(total):
            writer.append(record(i))
            if i % 97 == 0:
                writer.commit()
                time.sleep(0.001)
        writer.close()

    thread = threading.Thread(target=publish)
    thread.start()
    got = []
    deadline = time.monotonic() + 30
    with LogReader(tmp_path) as reader:
        while len(got) < total and time.monotonic() < deadline:
            items = reader.read()
            if not items:
                reader.wait(0.5)
            got.extend(records_only(items))
    thread.join()
    assert [r.id for r in got] == list(range(1, total + 1))
    assert len(list_log_files(tmp_path)) > 10


def test_pruned_file_is_skipped(tmp_path):
    size = len(record(0))
    with LogWriter(tmp_path, roll_size=2 * size + SEAL_SIZE) as writer:
        for i in range(6):
            writer.append(record(i))
    os.truncate(tmp_path / "log.0.0", 0)
    assert [r.id for r in read_log(tmp_path, size)] == [3, 4, 5, 6]


def test_interval_sync_policy_uses_the_injected_clock(tmp_path):
    now = [0.0]
    with LogWriter(tmp_path, sync="interval", sync_interval=1.0, clock=lambda: now[0]) as writer:
        writer.append(record(0))
        writer.commit()
        assert writer.durable_position == file_start(0, 0)  # not yet an interval
        now[0] = 1.5
        writer.append(record(1))
        assert writer.commit() == writer.durable_position == writer.position


def test_full_disk_leaves_no_torn_record_and_commit_retries(tmp_path):
    # RLIMIT_FSIZE makes the kernel fail writes past a size, as a full disk does.
    script = textwrap.dedent(f"""
        import resource, signal
        from rtcommon.log import Codec, LogWriter, LogWriteError, encode_message, read_log
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))
        writer = LogWriter({str(tmp_path)!r}, buffer_size=1 << 30)
        for i in range(100):
            writer.append(encode_message(b"x" * 60, origin="o", ts=i, id=i, codec=Codec.RAW))
        try:
            writer.commit()
        except LogWriteError as exc:
            print("error:", exc)
        print("intact:", len(read_log({str(tmp_path)!r})))
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        writer.commit()
        writer.close()
        print("after:", [r.id for r in read_log({str(tmp_path)!r})] == list(range(100)))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "error: cannot write" in out and "later commit retries" in out
    assert "intact: 0" in out
    assert "after: True" in out


def test_continue_at_a_position_drops_what_follows(tmp_path):
    with LogWriter(tmp_path, roll_size=120, seal_on_close=False) as writer:
        positions = [writer.append(record(i)) for i in range(10)]
    assert not file_is_sealed(tmp_path / "log.0.3") and len(list_log_files(tmp_path)) == 4
    with LogWriter(tmp_path, roll_size=120, at=positions[3], seal_on_close=False) as writer:
        assert writer.session == 0 and writer.position == positions[3]
        again = [writer.append(record(i)) for i in range(4, 10)]
    assert again == positions[4:]
    assert [r.id for r in read_log(tmp_path)] == list(range(1, 11))
    with pytest.raises(LogDirectoryError, match="holds only"):
        LogWriter(tmp_path, at=make_position(0, 0, 5000))


def test_continue_at_the_start_of_a_new_session(tmp_path):
    with LogWriter(tmp_path, at=file_start(4, 0)) as writer:
        writer.append(record(0))
    assert list_log_files(tmp_path) == [(4, 0)] and read_session(tmp_path) == 4


def test_append_run_rolls_between_records_like_single_appends(tmp_path):
    raws = [record(i) for i in range(20)]
    with LogWriter(tmp_path / "one", roll_size=150) as one:
        singles = [one.append(raw) for raw in raws]
    with LogWriter(tmp_path / "run", roll_size=150) as run:
        ends = [run.append_run(b"".join(raws[i : i + 7])) for i in range(0, 20, 7)]
    assert ends == [singles[6], singles[13], singles[19]]
    for name in os.listdir(tmp_path / "one"):
        if name.startswith("log."):
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "run" / name).read_bytes()


def test_a_full_disk_at_a_roll_loses_nothing_and_recovers(small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (96 << 10))
    accepted, errors = [], []
    writer = LogWriter(small_disk / "log", roll_size=2048, buffer_size=1)
    for i in range(400):  # far more than fits: writes fail, some of them at a roll
        before = writer.position
        try:
            writer.append(record(i, size=50))
        except LogWriteError as exc:
            errors.append(str(exc))
        if writer.position != before:  # taken (maybe only buffered), as a publisher sees it
            accepted.append(i + 1)
    assert errors and all("the disk is full" in error for error in errors)
    assert len(accepted) < 400
    filler.unlink()  # space again: what was accepted reaches the log, exactly once
    writer.close()
    assert [r.id for r in read_log(small_disk / "log")] == accepted


def test_archived_files_are_collected_not_a_reset(tmp_path):
    """A publisher's whole old session emptied by archival (sticky bit set) is garbage
    collection: a reader in it goes on to the next session without a reset event."""
    with LogWriter(tmp_path, roll_size=200) as writer:
        for i in range(3):
            writer.append(record(i))
    reader = LogReader(tmp_path)
    assert len(records_only([item for _ in range(5) for item in reader.read()])) == 3
    with LogWriter(tmp_path) as writer:  # a restarted publisher: session 1
        writer.append(record(100))
    assert archive_log_files(tmp_path, file_start(1, 0))
    assert all(
        (tmp_path / f"log.0.{r}").stat().st_mode & stat.S_ISVTX
        for s, r in list_log_files(tmp_path)
        if s == 0
    )
    assert [r.id for r in records_only(reader.read() + reader.read())] == [101]
    reader.close()


# -- garbage collection of a merged log ------------------------------------------------------


def records_of(items):
    return [item for item in items if isinstance(item, Record)]


def test_a_merged_log_reader_reports_collected_records_and_refuses_to_start_in_them(tmp_path):
    """Records collected before a merged-log reader read them are a ``collected`` event,
    also when it is asked to start among them; with no position a reader starts after
    the collected files."""
    with LogWriter(tmp_path, roll_size=200) as writer:
        for i in range(12):
            writer.append(record(i, size=80))
    files = list_log_files(tmp_path)
    assert len(files) >= 5
    reader = LogReader(tmp_path, merged=True)
    first = records_of(reader.read())
    assert first and split_position(first[-1].position)[:2] == files[0]
    assert len(archive_log_files(tmp_path, file_start(*files[3]))) == 3
    items = reader.read() + reader.read()
    event = next(item for item in items if isinstance(item, LogEvent))
    assert event == LogEvent(COLLECTED, (first[-1].position, file_start(*files[3])))
    rest = records_of(items)
    assert rest and split_position(rest[0].position)[:2] == files[3]
    reader.close()
    assert collected_end(tmp_path) == file_start(*files[3])
    asked = file_start(*files[1]) + 10
    with LogReader(tmp_path, asked, merged=True) as late:  # the event first, then the rest
        assert late.read() == [LogEvent(COLLECTED, (asked, file_start(*files[3])))]
        assert records_of(late.read())[0].id == rest[0].id
    for merged in (True, False):  # no position: the first file held, no event
        with LogReader(tmp_path, merged=merged) as fresh:
            assert records_of(fresh.read())[0].id == rest[0].id
    # A publisher's log (not merged) skips collected files without an event, as before.
    with LogReader(tmp_path, file_start(*files[1])) as plain:
        assert records_only(plain.read())


def test_a_copy_goes_on_past_files_its_source_collected(tmp_path):
    """collect_copy: the files between the copy's last one and the source's first held
    one are created empty with the sticky bit, the copy's own files keep their records,
    and a mirror goes on at that file; a reader that was behind reads what the copy held,
    then reports the records it missed as a ``collected`` event."""
    source, copy = tmp_path / "source", tmp_path / "copy"
    with LogWriter(source, roll_size=200) as writer:
        for i in range(14):
            writer.append(record(i, size=80))
    files = list_log_files(source)
    with LogMirror(copy) as mirror, LogReader(source) as reader:
        while items := reader.read_chunks(file_start(*files[2])):
            for item in items:
                mirror.write(item)
    assert list_log_files(copy) == files[:2]
    sizes = {f: (copy / file_name(*f)).stat().st_size for f in files[:2]}
    behind = LogReader(copy, merged=True)
    first = records_of(behind.read())
    target = file_start(*files[4])
    assert collect_copy(copy, target) == [copy / file_name(*f) for f in files[2:4]]
    assert list_log_files(copy) == files[:5]
    for file in files[:4]:
        info = (copy / file_name(*file)).stat()
        if file < files[2]:  # held: untouched
            assert info.st_size == sizes[file] and not info.st_mode & stat.S_ISVTX
        else:
            assert info.st_size == 0 and info.st_mode & stat.S_ISVTX
    with LogMirror(copy) as mirror, LogReader(source, target) as reader:
        while items := reader.read_chunks():
            for item in items:
                mirror.write(item)
    items = [item for _ in range(20) for item in behind.read()]
    held = [r.id for r in read_log(source) if r.position <= file_start(*files[2])]
    events = [item for item in items if isinstance(item, LogEvent)]
    assert events == [
        LogEvent(COLLECTED, (file_start(*files[1]) + sizes[files[1]] - SEAL_SIZE, target))
    ]
    ids = [r.id for r in first + records_of(items)]
    assert ids == held + [r.id for r in read_log(source, target)]
    behind.close()
    with pytest.raises(ValueError, match="file's start"):
        collect_copy(copy, target + 5)
