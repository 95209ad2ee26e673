"""The scrubber's check of a sealed merged-log file (``rt_sequencer._scrub``); mending
from a peer runs for real in tests/integration/test_sequencer.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from rt_sequencer import _scrub
from rt_sequencer._scrub import check_file, first_damage
from rtcommon.log import Codec, LogWriter, encode_message, list_log_files


def sealed_file(directory: Path) -> Path:
    with LogWriter(directory, roll_size=4096) as writer:
        for i in range(1, 200):
            writer.append(encode_message(b"m%d" % i, origin="o", ts=i, id=i, codec=Codec.RAW))
    session, roll = list_log_files(directory)[0]
    return directory / f"log.{session}.{roll}"


def test_a_whole_sealed_file_passes_and_any_damage_is_named(tmp_path: Path) -> None:
    path = sealed_file(tmp_path)
    whole = path.read_bytes()
    assert first_damage(path) is None
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    assert "offset" in (first_damage(path) or "")
    path.write_bytes(whole[:-3])  # the seal cut
    assert first_damage(path) is not None
    path.write_bytes(whole[: len(whole) // 2])
    assert "without its seal" in (first_damage(path) or "")
    path.write_bytes(whole + b"\0")
    assert first_damage(path) == "1 bytes after its seal"


def test_a_check_reads_no_faster_than_its_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RT_SCRUB_RATE: a pass over a large merged log leaves the disk to the merge."""
    path = sealed_file(tmp_path)
    size = path.stat().st_size
    monkeypatch.setattr(_scrub, "_READ", 512)
    started = time.monotonic()
    unpaced = check_file(path)
    assert time.monotonic() - started < 0.2
    started = time.monotonic()
    assert check_file(path, rate=size / 0.5) == unpaced == (None, unpaced[1])
    assert time.monotonic() - started >= 0.5 - 512 / (size / 0.5)


def test_checks_out_of_turn_still_running_are_stopped_with_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node shutting down stops the checks of input copies it began out of turn (for
    an entry stalled on a damaged copy), and goes on with its shutdown."""

    class Copy:
        def __init__(self, directory: Path) -> None:
            self.directory = directory

    async def scenario() -> None:
        copies = {name: Copy(tmp_path / name) for name in ("a.feed", "b.feed")}
        size = max(sealed_file(copy.directory).stat().st_size for copy in copies.values())
        monkeypatch.setattr(_scrub, "_READ", 512)
        scrubber = _scrub.Scrubber(
            tmp_path / "out",
            peers=list,
            interval=3600,
            lock=asyncio.Lock(),
            session=lambda: 0,
            rate=size,  # a check of one file takes a second
            inputs=copies,
        )
        for name in copies:
            scrubber.check_input_soon(name)
        running = list(scrubber._soon.values())
        await asyncio.sleep(0.1)
        assert len(running) == 2 and not any(task.done() for task in running)
        await scrubber.stop()
        assert all(task.cancelled() for task in running)

    asyncio.run(scenario())
