"""Log-format figures: writer, reader and tag-filter throughput on real files.

100-byte payloads, raw codec, on this machine's disk. The writer figure includes
encoding each record, and an fdatasync per commit of ``BATCH`` records.
"""

from __future__ import annotations

import os
import tempfile
import time

from rtcommon.log import Codec, LogReader, LogWriter, encode_record

COUNT = int(os.environ.get("RT_BENCH_LOG_COUNT", "1000000"))
BATCH = 1000
PAYLOAD = os.urandom(100)


def bench_writer(directory: str) -> float:
    started = time.perf_counter()
    with LogWriter(directory, sync="batch", roll_size=256 << 20) as writer:
        append = writer.append
        for i in range(COUNT):
            append(
                encode_record(
                    PAYLOAD, origin="bench", ts=i, id=i + 1, tags=("upd", "trade"), codec=Codec.RAW
                )
            )
            if i % BATCH == BATCH - 1:
                writer.commit()
    return COUNT / (time.perf_counter() - started)


def bench_reader(directory: str, tag_filter: tuple[str, ...] | None) -> tuple[float, int]:
    started = time.perf_counter()
    seen = 0
    with LogReader(directory, tag_filter=tag_filter) as reader:
        while items := reader.read():
            seen += len(items)
    return COUNT / (time.perf_counter() - started), seen


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("RT_BENCH_DIR")) as directory:
        write_rate = bench_writer(directory)
        read_rate, read = bench_reader(directory, None)
        skip_rate, matched = bench_reader(directory, ("upd", "quote"))
        size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    assert read == COUNT and matched == 0, (read, matched)
    print(f"log: {COUNT} records of 100-byte payloads ({size / COUNT:.0f} bytes each on disk)")
    print(f"log: writer (encode + append, fdatasync per {BATCH}): {write_rate:,.0f} records/s")
    print(f"log: reader (decode + CRC32C + record objects): {read_rate:,.0f} records/s")
    print(f"log: tag filter skipping non-matching records: {skip_rate:,.0f} records/s")


if __name__ == "__main__":
    main()
