"""The leader epoch cache of one partition log and its ``leader-epoch-checkpoint`` file.

Which leader epoch began at which offset: the answer to OffsetForLeaderEpoch, which a
follower or a consumer asks after a leader change to find where its copy of the log may
have diverged.  Entries ``(epoch, start_offset)`` are strictly increasing in both.

On disk, in the partition directory, Kafka's text checkpoint format::

    0                  version
    2                  number of entries
    0 0                epoch start_offset
    3 1500

The file is replaced atomically and durably (tmp, fsync, rename, fsync the directory)
when the log is truncated at either end.  A new epoch, which an append records, is
written later, as Kafka stopped fsyncing it on the append path (KAFKA-15046): replacing
the file there (an fsync, and on ext4 a rename over the old file flushes the new one's
data) stalled the first append of every partition in every leader epoch, a thousand of
them after a leader change or on a new topic.  The owning Log writes it durably
(:meth:`LeaderEpochCache.sync`) before its recovery point passes the epoch's start, and
at close; until then a crash leaves the epoch's batches in the part of the log that
recovery scans, and recovery adds the epochs of the batches it scans.  Crash behaviour:
the file is always a whole old or whole new version; a missing or unreadable file (bad
version, count, entry, order, encoding, or a last line without its newline: torn) starts
an empty cache, which the owning Log rebuilds from the partitionLeaderEpoch of every
batch and logs as a warning naming the file and the reason; the cache is clipped to the
log's bounds at every open.

Thread safety: none of its own; the owning :class:`~pylog.storage.Log` calls it under
its lock.  With ``path=None`` the cache lives in memory only (the replication state
machine's model test keeps its replicas' logs that way).
"""

from __future__ import annotations

import os

from pylog._value import ValueTuple
from pylog.storage.checkpoint import atomic_write

__all__ = ["LEADER_EPOCH_CHECKPOINT", "EpochEntry", "LeaderEpochCache", "UNDEFINED_EPOCH",
           "UNDEFINED_EPOCH_OFFSET"]

LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
#: Kafka's answers for an epoch the cache cannot place.
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1

_VERSION = 0
_MAX_FILE_BYTES = 16 << 20  # bounded read: a real file holds one short line per epoch


class EpochEntry(ValueTuple):
    __slots__ = ()
    epoch: int
    start_offset: int


class LeaderEpochCache:
    """``(epoch, start_offset)`` entries of one log, persisted to ``path`` (``None``:
    kept in memory only)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._entries: list[EpochEntry] = []
        #: Entries changed since the file was last written (durably).
        self.unsynced = False
        #: Why the file on disk was ignored at load (None when it was read, or absent).
        self.load_error: str | None = None

    @classmethod
    def load(cls, path: str) -> "LeaderEpochCache":
        """The cache stored at ``path``; empty when the file is missing or unreadable
        (``load_error`` then says why)."""
        cache = cls(path)
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return cache
        try:
            cache._entries = _parse(data)
        except ValueError as exc:
            cache.load_error = f"{path}: {exc}"
        return cache

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    @property
    def latest_epoch(self) -> int:
        """The newest epoch, or UNDEFINED_EPOCH when there is none."""
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    def __len__(self) -> int:
        return len(self._entries)

    def assign(self, epoch: int, start_offset: int, *, durable: bool = True) -> bool:
        """Record that ``epoch`` began at ``start_offset`` (at the latest).  A known epoch
        keeps its first start offset.  Entries the new one contradicts (an epoch at or
        above it, or a start offset at or above its own) are dropped so both columns
        keep increasing.  Returns whether anything changed; writes the file if so
        (``durable=False``: not now; :meth:`sync` writes it)."""
        if epoch < 0 or start_offset < 0:
            return False
        entries = self._entries
        if entries and entries[-1].epoch == epoch and entries[-1].start_offset <= start_offset:
            return False
        if entries and entries[-1].epoch < epoch and entries[-1].start_offset < start_offset:
            entries.append(EpochEntry(epoch, start_offset))
        else:
            kept = [e for e in entries if e.epoch < epoch and e.start_offset < start_offset]
            self._entries = kept + [EpochEntry(epoch, start_offset)]
        if durable:
            self._write()
        else:
            self.unsynced = True
        return True

    def truncate_from_end(self, end_offset: int) -> None:
        """Forget epochs that start at or after ``end_offset`` (the log was truncated
        there)."""
        if self._entries and self._entries[-1].start_offset >= end_offset:
            self._entries = [e for e in self._entries if e.start_offset < end_offset]
            self._write()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at ``start_offset``: of the epochs that began at or before
        it, only the newest stays, moved to start there."""
        entries = self._entries
        i = 0
        while i < len(entries) and entries[i].start_offset <= start_offset:
            i += 1
        if i == 0 or (i == 1 and entries[0].start_offset == start_offset):
            return
        self._entries = [EpochEntry(entries[i - 1].epoch, start_offset)] + entries[i:]
        self._write()

    def clear(self) -> None:
        if self._entries:
            self._entries = []
            self._write()

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's OffsetForLeaderEpoch answer: ``(largest epoch <= epoch, the offset where
        the next epoch starts)``; for the latest epoch that is the log end offset.  An
        epoch below every known one gives ``(epoch, first start offset)``; one above
        every known one, or an empty cache, gives ``(UNDEFINED_EPOCH,
        UNDEFINED_EPOCH_OFFSET)``."""
        entries = self._entries
        if epoch < 0 or not entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if epoch == entries[-1].epoch:
            return epoch, log_end_offset
        higher = next((i for i, e in enumerate(entries) if e.epoch > epoch), None)
        if higher is None:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if higher == 0:
            return epoch, entries[0].start_offset
        return entries[higher - 1].epoch, entries[higher].start_offset

    def flush(self) -> None:
        """Write the file now, durably (it is written on every change anyway)."""
        self._write()

    def sync(self, durable: bool = True) -> None:
        """Write the file if an :meth:`assign` left it behind (a no-op otherwise);
        ``durable=False``: without fsync, for a caller that makes the whole filesystem
        durable next (a LogManager's clean shutdown, one ``syncfs``)."""
        if self.unsynced:
            self._write(durable)

    def _write(self, durable: bool = True) -> None:
        if self.path is not None:
            lines = [str(_VERSION), str(len(self._entries))]
            lines += [f"{e.epoch} {e.start_offset}" for e in self._entries]
            atomic_write(self.path, ("\n".join(lines) + "\n").encode(), durable=durable)
        # Only once written: a write that failed (a full disk) is tried again by the next
        # sync, before any recovery point passes the epoch.
        self.unsynced = False

    def __repr__(self) -> str:
        where = os.path.basename(os.path.dirname(self.path)) if self.path is not None else "in memory"
        return f"<LeaderEpochCache {where} {self._entries}>"


def _parse(data: bytes) -> list[EpochEntry]:
    if len(data) > _MAX_FILE_BYTES:
        raise ValueError(f"larger than {_MAX_FILE_BYTES} bytes")
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise ValueError("not ASCII text") from None
    if len(lines) < 2:
        raise ValueError("truncated: no version and count lines")
    if not data.endswith(b"\n"):
        # Every writer (pylog's, Kafka's) ends each line with a newline: a file without
        # one was cut mid-line, and its last entry may read as a wrong start offset.
        raise ValueError(f"torn: the last line {lines[-1]!r} has no newline")
    if lines[0].strip() != str(_VERSION):
        raise ValueError(f"unsupported version {lines[0].strip()!r}")
    try:
        count = int(lines[1])
    except ValueError:
        raise ValueError(f"bad entry count {lines[1]!r}") from None
    if count < 0 or count != len(lines) - 2:
        raise ValueError(f"says {count} entries, holds {len(lines) - 2}")
    entries: list[EpochEntry] = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"bad entry {line!r}")
        try:
            epoch, start = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(f"bad entry {line!r}") from None
        if epoch < 0 or start < 0 or (entries and (epoch <= entries[-1].epoch
                                                    or start <= entries[-1].start_offset)):
            raise ValueError(f"entry {line!r} does not follow {tuple(entries[-1]) if entries else None}")
        entries.append(EpochEntry(epoch, start))
    return entries
