"""The aborted-transaction index of one segment: Kafka's ``.txnindex`` file.

A read_committed consumer must skip the records of aborted transactions.  It learns
which ones from the Fetch answer's ``aborted_transactions``: ``(producer_id,
first_offset)`` of every aborted transaction overlapping the fetched range.  The broker
answers from this index, one file per segment, without reading a record.

On disk
-------
``<base_offset:020d>.txnindex`` beside the segment's ``.log`` (Kafka's name and format).
Entries of 34 bytes each, big-endian, no header, appended in the order the ABORT markers
were written (so ``last_offset`` strictly increases)::

    version            int16   0
    producer_id        int64
    first_offset       int64   the transaction's first record
    last_offset        int64   the ABORT marker's offset (in this segment)
    last_stable_offset int64   the partition's LSO once this abort was applied

An entry lives in the index of the segment holding its marker; its data may begin in
earlier segments.  ``last_stable_offset`` lets a search stop early: any later abort
overlapping a range that ends at or below it would have had to be open already, and
then the LSO would be lower.  The file is created with its first entry: most segments
never have one.

Crash behaviour
---------------
An entry is appended (one ``write``) after its marker is in the log.  A crash can lose
the entry while keeping the marker, or (power loss) keep an entry whose marker was not
flushed; so the indexes of every segment recovery rescans are rebuilt from the log's
control batches (:meth:`TransactionIndex.reset` then :meth:`append`), as Kafka's segment
recovery rebuilds them.  A file is untrusted input: :meth:`TransactionIndex.sanity_check`
reads it whole and names the first fault (size not a multiple of 34, unknown version, a
negative producer id, first after last, last outside the segment, last offsets not
increasing, an LSO past the marker); the log then rebuilds it.

Thread safety
-------------
None of its own: the owning :class:`~pylog.storage.Log` calls it under the log's lock.
"""

from __future__ import annotations

import os
import struct
from typing import Iterable

from pylog._value import ValueTuple
from pylog.errors import CorruptRecordError

__all__ = ["AbortedTxn", "TransactionIndex", "CorruptTxnIndexError", "TXN_INDEX_SUFFIX", "ENTRY_SIZE"]

TXN_INDEX_SUFFIX = ".txnindex"
_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = _ENTRY.size           # 34
_VERSION = 0
#: Bounded read: a million aborted transactions in one segment is 34 MB.
_MAX_BYTES = 256 << 20


class CorruptTxnIndexError(CorruptRecordError):
    """A ``.txnindex`` file fails its sanity check (the message says where and how)."""


class AbortedTxn(ValueTuple):
    """One entry of a ``.txnindex`` file (Kafka's ``AbortedTxn``)."""

    __slots__ = ()

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def pack(self) -> bytes:
        return _ENTRY.pack(_VERSION, self.producer_id, self.first_offset, self.last_offset,
                           self.last_stable_offset)


class TransactionIndex:
    """The ``.txnindex`` of the segment starting at ``base_offset`` (see the module
    docstring).  Entries are kept in memory too (they are few and small); the file is
    written through on every change.

    Parameters
    ----------
    path : str
        The file; it need not exist.
    base_offset : int
        The segment's base offset (entries' last offsets are at or above it).
    """

    __slots__ = ("path", "base_offset", "_entries")

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._entries: list[AbortedTxn] | None = None

    # -- reading ------------------------------------------------------------------

    @staticmethod
    def decode(data: bytes | memoryview, base_offset: int = 0,
               upper_bound: int | None = None, path: str = "<txnindex>") -> list[AbortedTxn]:
        """The entries of a ``.txnindex`` file's bytes.

        Raises
        ------
        CorruptTxnIndexError
            The bytes are not a valid index of a segment starting at ``base_offset``
            (and ending before ``upper_bound`` when given).
        """
        n = len(data)
        if n % ENTRY_SIZE:
            raise CorruptTxnIndexError(
                f"{path}: size {n} is not a multiple of the {ENTRY_SIZE}-byte entry "
                f"({n % ENTRY_SIZE} trailing bytes)")
        out: list[AbortedTxn] = []
        prev = -1
        for i, (version, pid, first, last, lso) in enumerate(_ENTRY.iter_unpack(data)):
            where = f"{path}: entry {i} (byte {i * ENTRY_SIZE})"
            if version != _VERSION:
                raise CorruptTxnIndexError(f"{where}: unknown version {version}")
            if pid < 0 or first < 0 or first > last:
                raise CorruptTxnIndexError(f"{where}: producer {pid} offsets {first}..{last} are invalid")
            if last < base_offset or (upper_bound is not None and last >= upper_bound):
                raise CorruptTxnIndexError(
                    f"{where}: marker offset {last} lies outside the segment "
                    f"[{base_offset}, {'...' if upper_bound is None else upper_bound})")
            if last <= prev:
                raise CorruptTxnIndexError(f"{where}: marker offset {last} does not follow {prev}")
            if lso < 0 or lso > last + 1:
                raise CorruptTxnIndexError(f"{where}: last stable offset {lso} is past the marker {last}")
            prev = last
            out.append(AbortedTxn(pid, first, last, lso))
        return out

    def sanity_check(self, upper_bound: int | None = None) -> None:
        """Read and check the whole file (a missing file is an empty index).

        Raises CorruptTxnIndexError naming the fault."""
        self._entries = None
        try:
            with open(self.path, "rb") as f:
                data = f.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            self._entries = []
            return
        if len(data) > _MAX_BYTES:
            raise CorruptTxnIndexError(f"{self.path}: larger than {_MAX_BYTES} bytes")
        self._entries = self.decode(data, self.base_offset, upper_bound, self.path)

    @property
    def entries(self) -> list[AbortedTxn]:
        """All entries, oldest first (read from the file on first use)."""
        if self._entries is None:
            self.sanity_check()
        return self._entries  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def last_offset(self) -> int:
        """The last entry's marker offset, -1 when empty."""
        e = self.entries
        return e[-1].last_offset if e else -1

    # -- writing ------------------------------------------------------------------

    def append(self, txn: AbortedTxn) -> None:
        """Append one entry (its marker must follow every entry's and lie in the segment).

        Raises
        ------
        ValueError
            The entry would break the index's order.
        """
        entries = self.entries
        if txn.last_offset < self.base_offset:
            raise ValueError(f"aborted transaction ending at {txn.last_offset} belongs below segment "
                             f"{self.base_offset}")
        if entries and txn.last_offset <= entries[-1].last_offset:
            raise ValueError(f"aborted transaction ending at {txn.last_offset} does not follow "
                             f"{entries[-1].last_offset} in {self.path}")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, txn.pack())
        finally:
            os.close(fd)
        entries.append(txn)

    def _rewrite(self, entries: Iterable[AbortedTxn]) -> None:
        entries = list(entries)
        if not entries:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self._entries = []
            return
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(e.pack() for e in entries))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._entries = entries

    def truncate_to(self, offset: int) -> None:
        """Drop the entries whose marker is at or past ``offset`` (the log was truncated)."""
        entries = self.entries
        keep = [e for e in entries if e.last_offset < offset]
        if len(keep) != len(entries):
            self._rewrite(keep)

    def reset(self) -> None:
        """Empty the index (delete its file), before a rebuild."""
        self._rewrite(())

    def flush(self) -> None:
        """fsync the file (if any)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, path: str) -> None:
        """The segment's files were renamed: follow them."""
        self.path = path

    def __repr__(self) -> str:
        return f"<TransactionIndex {self.path} {len(self._entries) if self._entries is not None else '?'} entries>"
