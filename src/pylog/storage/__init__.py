"""pylog.storage: Kafka's partition log as a library of its own.

A :class:`Log` is one partition directory in Kafka's on-disk layout: ``.log`` segments of
record batches (v2) named by their 20-digit base offset, with sparse ``.index`` and
``.timeindex`` files.  It is usable without the broker, as the write-ahead log or event
store of another system::

    from pylog.storage import Log

    with Log.open("/var/lib/myapp/events-0", segment_bytes=64 << 20, flush_messages=1) as log:
        info = log.append(batch_bytes)            # one or more v2 batches, validated
        result = log.read(info.base_offset, max_bytes=1 << 20)
        result.records                            # zero-copy memoryview of whole batches
        os.sendfile(sock_fd, result.fileno(), result.position, result.size)

What it provides (the rest of the package docs say how each part behaves on disk, on a
crash and across threads):

- append: validation in Cython (size, magic, CRC32C, counts), offsets assigned by
  rewriting only each batch's baseOffset (plus LogAppendTime and the leader epoch when
  configured), written in one pass (``pwritev`` from Cython) into the preallocated active
  segment, which is memory-mapped for zero-copy reads;
  ``assign_offsets=False`` for replicas.
- read: whole batches from the one holding the offset, as memoryviews and as a file range
  for ``sendfile``; :meth:`Log.offset_for_timestamp` (ListOffsets).
- durability: ``flush_messages`` / ``flush_ms`` policies, recovery point, clean-shutdown
  marker, CRC-checked recovery that truncates torn tails and rebuilds indexes.
- retention by time and size (:meth:`Log.apply_retention`), :meth:`Log.truncate_to`,
  :meth:`Log.delete_records_before`.
- leader epochs: ``leader-epoch-checkpoint`` per log, :attr:`Log.leader_epochs` and
  :meth:`Log.end_offset_for_epoch` (OffsetForLeaderEpoch).
- :class:`LogManager`: a data directory of ``<topic>-<partition>`` logs with Kafka's
  checkpoint files, ``meta.properties`` and bounded open files and mappings.
- Seams for compaction: :attr:`Log.segments`, :meth:`LogSegment.batches`,
  :meth:`Log.new_segment`, :meth:`Log.replace_segments` (the ``.cleaned`` / ``.swap`` /
  ``.deleted`` protocol).

Configuration uses Kafka's topic config names in snake_case (:class:`LogConfig`), or
Kafka's dotted names through :meth:`LogConfig.from_kafka`.
"""

from pylog.storage.cleaner import CleanerStats, LogCleaner
from pylog.storage.config import LogConfig
from pylog.storage.leader_epoch import EpochEntry, LeaderEpochCache
from pylog.storage.log import (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP, Log, LogAppendInfo,
                               ReadResult, RetentionResult, TimestampOffset)
from pylog.storage.manager import LogManager
from pylog.storage.segment import LogSegment, SegmentCache

__all__ = [
    "Log",
    "LogConfig",
    "LogManager",
    "LogCleaner",
    "CleanerStats",
    "LogSegment",
    "SegmentCache",
    "LogAppendInfo",
    "ReadResult",
    "RetentionResult",
    "TimestampOffset",
    "EpochEntry",
    "LeaderEpochCache",
    "LATEST_TIMESTAMP",
    "EARLIEST_TIMESTAMP",
    "MAX_TIMESTAMP",
]
