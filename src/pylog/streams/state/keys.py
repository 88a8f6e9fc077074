"""Binary key layouts shared by the window and session stores and their changelogs,
byte for byte Kafka Streams' ``WindowKeySchema`` and ``SessionKeySchema``:

* window: ``key | window start int64 BE | seqnum int32 BE`` (12 bytes of suffix);
* session: ``key | session end int64 BE | session start int64 BE`` (16 bytes).

The key is not length-prefixed: the suffix has a fixed size, so the key is what
is left before it.
"""

from __future__ import annotations

import struct
from typing import Tuple

from pylog.errors import CorruptRecordError

__all__ = ["window_key_to_binary", "window_key_from_binary", "session_key_to_binary",
           "session_key_from_binary", "WINDOW_SUFFIX_SIZE", "SESSION_SUFFIX_SIZE"]

_WINDOW = struct.Struct(">qi")
_SESSION = struct.Struct(">qq")
WINDOW_SUFFIX_SIZE = _WINDOW.size
SESSION_SUFFIX_SIZE = _SESSION.size


def window_key_to_binary(key: bytes, window_start_ms: int, seqnum: int) -> bytes:
    return key + _WINDOW.pack(window_start_ms, seqnum)


def window_key_from_binary(binary: bytes) -> Tuple[bytes, int, int]:
    """``(key, window_start_ms, seqnum)``; raises CorruptRecordError when too short."""
    if len(binary) < WINDOW_SUFFIX_SIZE:
        raise CorruptRecordError(
            f"window-store key of {len(binary)} bytes: needs at least {WINDOW_SUFFIX_SIZE} "
            "(key + 8-byte window start + 4-byte seqnum); is this a window store's changelog?")
    start, seqnum = _WINDOW.unpack_from(binary, len(binary) - WINDOW_SUFFIX_SIZE)
    return bytes(binary[:-WINDOW_SUFFIX_SIZE]), start, seqnum


def session_key_to_binary(key: bytes, start: int, end: int) -> bytes:
    return key + _SESSION.pack(end, start)


def session_key_from_binary(binary: bytes) -> Tuple[bytes, int, int]:
    """``(key, start, end)``; raises CorruptRecordError when too short."""
    if len(binary) < SESSION_SUFFIX_SIZE:
        raise CorruptRecordError(
            f"session-store key of {len(binary)} bytes: needs at least {SESSION_SUFFIX_SIZE} "
            "(key + 8-byte end + 8-byte start); is this a session store's changelog?")
    end, start = _SESSION.unpack_from(binary, len(binary) - SESSION_SUFFIX_SIZE)
    return bytes(binary[:-SESSION_SUFFIX_SIZE]), start, end
