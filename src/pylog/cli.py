"""The ``pylog`` command."""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["main"]


def _demo_batch(values: list[bytes], timestamp_ms: int) -> bytes:
    """One uncompressed v2 batch of ``values`` (pylog.records' builder)."""
    from pylog.records import RecordBatchBuilder

    builder = RecordBatchBuilder()
    for v in values:
        builder.append(timestamp_ms, None, v)
    return bytes(builder.build())


def _demo(args: argparse.Namespace) -> int:
    from pylog import _core
    from pylog.storage import Log

    path = os.path.join(args.data_dir, f"{args.topic}-0")
    print(f"opening log {path}")
    with Log.open(path, segment_bytes=args.segment_bytes) as log:
        how = "clean shutdown" if log.had_clean_shutdown else (
            f"recovered {len(log.recovered)} segment(s)" if log.recovered else "new log")
        print(f"  {how}; offsets [{log.log_start_offset}, {log.log_end_offset}), "
              f"{len(log.segments)} segment(s)")
        first = log.log_end_offset
        now = int(time.time() * 1000)
        for i in range(args.batches):
            values = [f"demo batch {i} record {j}".encode() for j in range(args.records)]
            info = log.append(_demo_batch(values, now + i))
            print(f"appended batch {i}: offsets {info.base_offset}..{info.last_offset}, "
                  f"{info.size} bytes at {os.path.basename(log.active_segment.path)}:{info.position}")
        log.flush()
        print(f"flushed: recovery point {log.recovery_point}")
        offset = first
        while offset < log.log_end_offset:
            result = log.read(offset, max_bytes=1024)
            pos = 0
            data = result.records
            while pos < result.size:
                h = _core.read_batch_header(data, pos)
                print(f"read batch at offset {h['base_offset']}: {h['records_count']} records, "
                      f"{h['size']} bytes, CRC {h['crc']:#010x} ok")
                pos += h["size"]
            offset = result.next_offset
            result.release()
        print(f"log now holds offsets [{log.log_start_offset}, {log.log_end_offset}) in "
              f"{len(log.segments)} segment(s); closing cleanly")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pylog", description="Apache Kafka's architecture as a Python package.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="append a few batches to a log and read them back")
    demo.add_argument("--data-dir", default="pylog-data", help="data directory (default: ./pylog-data)")
    demo.add_argument("--topic", default="demo", help="topic name (the log is <topic>-0)")
    demo.add_argument("--batches", type=int, default=3)
    demo.add_argument("--records", type=int, default=5, help="records per batch")
    demo.add_argument("--segment-bytes", type=int, default=1024 * 1024)
    demo.set_defaults(func=_demo)
    from pylog.server import tools

    tools.add_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
