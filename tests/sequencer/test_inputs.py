"""A node's input copies (``rt_sequencer._inputs``) and the merge's readers of them
(``rt_sequencer._files.InputFiles``) on real files: idle ones hold no descriptor (issue
14 #7), and go on where they were at the next write or read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rt_sequencer._files import InputFiles
from rt_sequencer._inputs import InputStore
from rtcommon.log import Chunk, Codec, encode_message, read_log


def record(i: int) -> bytes:
    return encode_message(b"r%d" % i, origin="pub", ts=i, id=i, codec=Codec.RAW)


async def synced(store: InputStore) -> None:
    """Run the group syncer until every written copy is held."""
    syncer = asyncio.create_task(store.run_syncer())
    try:
        while store._dirty or store._syncing:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
    finally:
        syncer.cancel()


def test_idle_copies_hold_no_descriptor_and_go_on_at_the_next_write(
    tmp_path: Path, open_descriptors
) -> None:
    async def scenario() -> None:
        before = open_descriptors()
        store = InputStore(tmp_path)
        streams = [store.open(f"host-{n}.feed", "feed") for n in range(50)]
        for stream in streams:
            stream.write(Chunk(0, record(1)))
        await synced(store)
        assert open_descriptors() >= before + 100  # a file and a lock each
        now = time.monotonic()
        assert store.suspend_idle(now) == 0  # written just now
        streams[0].write(Chunk(len(record(1)), record(2)))  # unsynced: busy, kept open
        assert store.suspend_idle(now + store.IDLE_SECONDS) == 49
        await synced(store)
        assert store.suspend_idle(time.monotonic() + store.IDLE_SECONDS) == 1
        assert open_descriptors() == before
        assert [s.held for s in streams] == [2 * len(record(1))] + [len(record(1))] * 49

        # The next write takes the copy's file again and goes on where it was.
        streams[7].write(Chunk(len(record(1)), record(2)))
        await synced(store)
        assert streams[7].held == 2 * len(record(1)) and not streams[7].mirror.suspended

        # The merge's readers of idle streams let go of their files too.
        store.suspend_idle(time.monotonic() + store.IDLE_SECONDS)
        files = InputFiles(store)
        for stream in streams:
            assert [n for _, n in files.read(stream.name, 0, len(record(1)))] == [1]
        assert open_descriptors() >= before + 50
        files.close_idle(time.monotonic())  # read just now: kept
        assert open_descriptors() >= before + 50
        files.close_idle(time.monotonic() + files.IDLE_READER_SECONDS + 1)
        assert open_descriptors() == before
        assert [n for _, n in files.read("host-7.feed", len(record(1)), 2 * len(record(1)))] == [1]
        files.close()
        store.close()
        assert open_descriptors() == before
        assert [r.id for r in read_log(tmp_path / "host-7.feed")] == [1, 2]

    asyncio.run(scenario())
