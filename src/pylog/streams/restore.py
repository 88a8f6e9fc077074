"""Restoring a task's store from its changelog partition, with Kafka Streams' restore
listener and a progress bar (the restore loop of Kafka's ``StoreChangelogReader``).

The app sets one listener (:meth:`StreamsApp.set_global_state_restore_listener`, Kafka's
name) for every store, global stores included (a global store's "restore" is its
bootstrap from its topic, through its processor); per store and changelog partition
it is told:

* ``on_restore_start(topic_partition, store_name, starting_offset, ending_offset)``:
  the first offset read (the one after the checkpointed offset, else the partition's
  log start offset) and the end offset (exclusive: the high watermark, or the last
  stable offset under exactly-once).  A store already caught up (start = end) gets no
  call at all, as in Kafka.
* ``on_batch_restored(topic_partition, store_name, batch_end_offset, num_restored)``
  after each fetched batch is written to the store: the offset of the last record it
  held and how many records it held (records without a key are skipped, not counted).
* ``on_restore_end(topic_partition, store_name, total_restored)``.
* ``on_restore_suspended(topic_partition, store_name, total_restored)`` instead of the
  end when the restore stops before it (the app is stopping); optional on the listener.
  A restore asked for while the app is stopping is not started (no call).

A listener runs on the stream thread restoring the store (thread 1 for the global
stores), between batches; an exception it raises fails the restore (and ``run``).
Every restore goes through one loop, :func:`restore_loop`: a changelog read by a
consumer (:func:`restore_store`) or records handed to
:meth:`~.state.manager.ProcessorStateManager.restore`.  A ``tqdm`` bar per store (on stderr) shows the progress when
``restore_progress`` is true, and by default when stderr is a terminal.

Records reach the store a fetched batch at a time (``poll_batches`` and its columns: no
record objects); a timestamped store gets each value prefixed with its record's
timestamp (8 bytes, big-endian), as Kafka's timestamped stores keep it.
"""

from __future__ import annotations

import struct
import sys
from typing import Any, Callable, List, Optional, Tuple

__all__ = ["RestoreSuspended", "restore_store", "restore_loop", "show_restore_progress", "changelog_records"]

_TS = struct.Struct(">q")


class RestoreSuspended(Exception):
    """A store's restore stopped before its end offset (the app is stopping, or the
    group is rebalancing); the listener was told with ``on_restore_suspended``.
    :attr:`position` is the next changelog offset to restore (the store holds every
    record before it), so a later restore resumes there."""

    position = -1


def show_restore_progress(setting: Any) -> bool:
    """``restore_progress``: True / False, or None for "when stderr is a terminal"."""
    if setting is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    if isinstance(setting, str):
        return setting.strip().lower() in ("1", "true", "yes", "on")
    return bool(setting)


def restore_store(consumer: Any, topic_partition: Tuple[str, int], store_name: str, store: Any, *,
                  start: Optional[int] = None, timestamped: bool = False, listener: Any = None,
                  progress: bool = False, suspend: Optional[Callable[[], bool]] = None,
                  poll_timeout_ms: int = 200, apply: Optional[Callable[[Any, int], Tuple[int, int]]] = None) -> int:
    """Write the changelog partition's records from ``start`` (default: its beginning)
    up to its end offset into ``store`` (``restore_batch``) through :func:`restore_loop`.
    ``consumer`` is an unsubscribed consumer of the app's isolation level, used and left
    assigned to ``topic_partition`` (the caller closes it).  ``apply(fetched_batch,
    end)``, when given, restores a fetched batch instead (a global store's records go
    through its processor) and returns (records applied, offset of the last).  Returns
    the number of records restored."""
    consumer.assign([topic_partition])
    if start is None:
        consumer.seek_to_beginning(topic_partition)
    else:
        consumer.seek(topic_partition, start)
    end = consumer.end_offsets([topic_partition])[topic_partition]

    def fetch() -> Tuple[List[Tuple[int, int]], int]:
        applied = []
        for b in consumer.poll_batches(timeout_ms=poll_timeout_ms):
            if apply is not None:
                n, last = apply(b, end)
            else:
                batch, last = changelog_records(b, end, timestamped)
                n = len(batch)
                if n:
                    store.restore_batch(batch)
            applied.append((n, last))
        return applied, consumer.position(topic_partition)
    return restore_loop(topic_partition, store_name, consumer.position(topic_partition), end, fetch,
                        listener=listener, progress=progress, suspend=suspend)


def restore_loop(topic_partition: Tuple[str, int], store_name: str, start: int, end: int,
                 fetch: Callable[[], Tuple[List[Tuple[int, int]], int]], *, listener: Any = None,
                 progress: bool = False, suspend: Optional[Callable[[], bool]] = None) -> int:
    """The restore loop of every store (a task's, a standby's taken over, a global
    store's bootstrap, :class:`~.state.manager.ProcessorStateManager`'s): from offset
    ``start`` up to ``end`` (exclusive), telling ``listener`` and drawing the bar as the
    module docstring says.  ``fetch()`` writes the next records it has into the store
    and returns ``([(records written, offset of the last), ...], next offset to read)``
    (one pair per batch written); it is called until the next offset reaches ``end``.
    ``suspend()`` is asked before each fetch: True stops the restore with
    :class:`RestoreSuspended`.  Returns the number of records restored."""
    position = start
    if position >= end:
        return 0
    if suspend is not None and suspend():
        exc = RestoreSuspended(f"restore of {store_name} from {topic_partition} not started")
        exc.position = position
        raise exc
    if listener is not None:
        listener.on_restore_start(topic_partition, store_name, position, end)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=end - position, desc=f"restoring {store_name} {topic_partition[0]}-{topic_partition[1]}",
                   unit="rec", leave=False)
    total = 0
    try:
        while position < end:
            if suspend is not None and suspend():
                if listener is not None and hasattr(listener, "on_restore_suspended"):
                    listener.on_restore_suspended(topic_partition, store_name, total)
                exc = RestoreSuspended(f"restore of {store_name} from {topic_partition} suspended at offset "
                                       f"{position} of {end}")
                exc.position = position
                raise exc
            applied, new_position = fetch()
            for n, last in applied:
                if n:
                    total += n
                    if listener is not None:
                        listener.on_batch_restored(topic_partition, store_name, last, n)
            if bar is not None:
                bar.update(min(new_position, end) - position)
            position = new_position
    finally:
        if bar is not None:
            bar.close()
    if listener is not None:
        listener.on_restore_end(topic_partition, store_name, total)
    return total


def changelog_records(batch: Any, end: int, timestamped: bool) -> Tuple[List[Tuple[bytes, Optional[bytes]]], int]:
    """(key, value) of a fetched batch's keyed records below ``end``, and the offset of
    the last one (-1: none)."""
    cols = batch.columns()
    offsets = cols.offsets.tolist()
    keys = cols.keys()
    values = cols.values()
    n = len(offsets)
    while n and offsets[n - 1] >= end:
        n -= 1
    timestamps = cols.timestamps.tolist() if timestamped else None
    pack = _TS.pack
    out = []
    last = -1
    for i in range(n):
        k = keys[i]
        if k is not None:
            v = values[i]
            if v is not None:
                v = pack(timestamps[i]) + bytes(v) if timestamps is not None else bytes(v)
            out.append((bytes(k), v))
            last = offsets[i]
    return out, last
