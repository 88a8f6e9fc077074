"""Encoded messages as lists of segments, so records can go out without being copied.

An encoder returns ``list[Segment]``: ``bytes``/``bytearray``/``memoryview`` chunks and
:class:`FileRegion` placeholders for records that live in a log segment file.  A server
writes the chunks with ``socket.sendmsg`` (or ``transport.writelines``) and each
``FileRegion`` with ``os.sendfile``; where sendfile is impossible (TLS) it uses
:func:`segments_to_bytes`, which reads the regions with ``os.pread``.

FileRegion objects are immutable and thread-safe; reading one is as safe as the file
descriptor it names (the owner must keep the file open until the write is done).
"""

from __future__ import annotations

import os
from typing import Iterable, Union

__all__ = ["FileRegion", "Segment", "segments_size", "segments_to_bytes"]


class FileRegion:
    """``length`` bytes of ``file`` starting at byte ``position``: records to be sent with
    ``os.sendfile(sock, file, position, length)`` instead of being read into memory.

    Parameters
    ----------
    file : int or file object
        A file descriptor, or an object with ``fileno()``.
    position : int
        Byte offset in the file (>= 0).
    length : int
        Number of bytes (0 <= length < 2**31, the largest records field Kafka allows).
    view : memoryview, optional
        The same bytes as a read-only view of a shared mapping of the file that starts
        at the file's byte 0 (``view.obj`` is that ``mmap``), when the reader has one: a
        writer that copies rather than splices (the server, to a loopback peer, if asked)
        sends from it, and it keeps the mapping open until then.  Not part of equality.
    """

    __slots__ = ("file", "position", "length", "view")

    def __init__(self, file, position: int, length: int, view: memoryview | None = None) -> None:
        if not isinstance(position, int) or position < 0:
            raise ValueError(f"FileRegion position must be an int >= 0, not {position!r}")
        if not isinstance(length, int) or not 0 <= length < 1 << 31:
            raise ValueError(f"FileRegion length must be an int in [0, 2**31), not {length!r}")
        if view is not None and len(view) != length:
            raise ValueError(f"FileRegion view holds {len(view)} bytes, not its length {length}")
        object.__setattr__(self, "file", file)
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "length", length)
        object.__setattr__(self, "view", view)

    def __setattr__(self, name, value):
        raise AttributeError("FileRegion is immutable")

    def fileno(self) -> int:
        """The file descriptor to pass to ``os.sendfile``."""
        f = self.file
        return f if isinstance(f, int) else f.fileno()

    def read(self) -> bytes:
        """The region's bytes (``os.pread``); raises OSError if the file is shorter."""
        fd = self.fileno()
        out = bytearray()
        pos, left = self.position, self.length
        while left:
            chunk = os.pread(fd, left, pos)
            if not chunk:
                raise OSError(f"file ends before the region {self.position}+{self.length}")
            out += chunk
            pos += len(chunk)
            left -= len(chunk)
        return bytes(out)

    def __len__(self) -> int:
        return self.length

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileRegion):
            return NotImplemented
        return (self.file, self.position, self.length) == (other.file, other.position,
                                                           other.length)

    def __hash__(self) -> int:
        return hash((self.file, self.position, self.length))

    def __repr__(self) -> str:
        return f"FileRegion(file={self.file!r}, position={self.position}, length={self.length})"


Segment = Union[bytes, bytearray, memoryview, FileRegion]


def segments_size(segments: Iterable[Segment]) -> int:
    """Total number of bytes the segments put on the wire."""
    total = 0
    for s in segments:
        total += s.length if type(s) is FileRegion else len(s)
    return total


def segments_to_bytes(segments: Iterable[Segment]) -> bytes:
    """Join the segments into one ``bytes``, reading any :class:`FileRegion` from its file."""
    return b"".join([s.read() if type(s) is FileRegion else s for s in segments])
