"""The Produce response frame, encoded without building message objects.

A producer at full speed sends hundreds of Produce requests a second, each answered
with a few dozen bytes: per partition an index, an error code and three offsets.
Building ``ProduceResponse`` objects and running them through the generic encoder
costs more than the few ``struct`` packs below.  :func:`produce_response_frame` writes
exactly the bytes :func:`pylog.protocol.codec.encode_response` would for the same
answer (the tests compare the two over every version), per-record errors included.

Thread-safe: pure functions.
"""

from __future__ import annotations

import struct
from typing import Sequence

from pylog.protocol._plan import write_uvarint

__all__ = ["PRODUCE_VERSIONS", "produce_response_frame", "produce_response_ok"]

#: The Produce versions this encoder writes (those pylog serves).
PRODUCE_VERSIONS = range(3, 10)
_FLEXIBLE_FROM = 9

_HEAD = struct.Struct(">ii")          # size prefix, correlation id
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_PARTITION = struct.Struct(">ihqq")     # index, error_code, base_offset, log_append_time
_PARTITION_V5 = struct.Struct(">ihqqq")  # ... log_start_offset
_NO_RECORD_ERRORS = b"\x00\x00\x00\x00"  # v8: an empty array
_NULL_STRING = b"\xff\xff"               # v8: a null error message
_NO_ERRORS_NO_MESSAGE = _NO_RECORD_ERRORS + _NULL_STRING
_NO_ERRORS_NO_MESSAGE_FLEX = b"\x01\x00\x00"  # v9: empty array, null string, no tags


_SMALL = [bytes((n,)) for n in range(0x80)]   # one-byte unsigned varints


def _uvarint(n: int) -> bytes:
    return _SMALL[n] if n < 0x80 else write_uvarint(n)


def _string(append, text: str | None, flexible: bool) -> None:
    """A nullable string, compact (flexible versions) or not."""
    if text is None:
        append(b"\x00" if flexible else _NULL_STRING)
        return
    raw = text.encode()
    append(_uvarint(len(raw) + 1) if flexible else _I16.pack(len(raw)))
    append(raw)


def _record_errors(append, errors: Sequence[tuple[int, str | None]], flexible: bool) -> None:
    """The v8+ ``record_errors`` array: per entry ``batch_index`` int32 and a nullable
    message (and, flexible, an empty tagged-field section)."""
    append(_uvarint(len(errors) + 1) if flexible else _I32.pack(len(errors)))
    for batch_index, text in errors:
        append(_I32.pack(batch_index))
        _string(append, text, flexible)
        if flexible:
            append(b"\x00")


def produce_response_frame(version: int, correlation_id: int,
                           topics: Sequence[tuple[str, Sequence[tuple]]],
                           throttle_time_ms: int = 0) -> bytes:
    """A whole Produce response frame (size prefix and header included).

    Parameters
    ----------
    topics : sequence of ``(name, partitions)``
        ``partitions``: ``(index, error_code, base_offset, log_append_time_ms,
        log_start_offset, error_message)`` tuples, optionally with a seventh item,
        ``record_errors``: ``(batch_index, message or None)`` pairs (or None).
        ``error_message`` (str or None) and ``record_errors`` are sent from version 8 on.

    Raises
    ------
    ValueError
        ``version`` is not one of :data:`PRODUCE_VERSIONS`.
    struct.error
        A number does not fit its field.
    """
    if version not in PRODUCE_VERSIONS:
        raise ValueError(f"Produce v{version} is not encoded here (versions 3-9)")
    flexible = version >= _FLEXIBLE_FROM
    with_start = version >= 5
    with_messages = version >= 8
    part = _PARTITION_V5 if with_start else _PARTITION
    no_errors = _NO_ERRORS_NO_MESSAGE_FLEX if flexible else _NO_ERRORS_NO_MESSAGE
    out = [_uvarint(len(topics) + 1) if flexible else _I32.pack(len(topics))]
    append = out.append
    for name, partitions in topics:
        raw = name.encode()
        if flexible:
            append(_uvarint(len(raw) + 1))
            append(raw)
            append(_uvarint(len(partitions) + 1))
        else:
            append(_I16.pack(len(raw)))
            append(raw)
            append(_I32.pack(len(partitions)))
        for entry in partitions:
            if len(entry) == 6 and entry[5] is None:
                # The usual answer (no message, no record errors): one pack, one constant.
                index, code, base, append_time, start, _ = entry
                if with_start:
                    append(part.pack(index, code, base, append_time, start))
                else:
                    append(part.pack(index, code, base, append_time))
                if with_messages:
                    append(no_errors)
                continue
            index, code, base, append_time, start, message = entry[:6]
            record_errors = entry[6] if len(entry) > 6 else None
            if with_start:
                append(part.pack(index, code, base, append_time, start))
            else:
                append(part.pack(index, code, base, append_time))
            if with_messages:
                if message is None and not record_errors:
                    append(no_errors)
                    continue
                if record_errors:
                    _record_errors(append, record_errors, flexible)
                else:
                    append(b"\x01" if flexible else _NO_RECORD_ERRORS)
                _string(append, message, flexible)
                if flexible:
                    append(b"\x00")                          # tagged fields
        if flexible:
            append(b"\x00")
    append(_I32.pack(throttle_time_ms))
    if flexible:
        append(b"\x00")
        body = b"".join(out)
        return _HEAD.pack(len(body) + 5, correlation_id) + b"\x00" + body   # header v1: tags
    body = b"".join(out)
    return _HEAD.pack(len(body) + 4, correlation_id) + body


#: (version, topic) -> (bytes before the partition's numbers, after them, frame size):
#: what :func:`produce_response_ok` writes around its one partition.  Bounded: a broker
#: answers for its topics; past the bound it starts over.
_OK_LAYOUTS: dict[tuple[int, str], tuple[bytes, bytes, int]] = {}
_OK_LAYOUTS_MAX = 4096


def _ok_layout(version: int, name: str) -> tuple[bytes, bytes, int]:
    # The frame of one topic and one partition answered without error, cut around the
    # partition's numbers: produce_response_frame's bytes, by construction.
    marker = (0, 0, 0, 0, 0, None)
    frame = produce_response_frame(version, 0, [(name, (marker,))])
    part = (_PARTITION_V5 if version >= 5 else _PARTITION).size
    tail = len(_NO_ERRORS_NO_MESSAGE_FLEX if version >= _FLEXIBLE_FROM else _NO_ERRORS_NO_MESSAGE) \
        if version >= 8 else 0
    after = 1 + 4 + 1 if version >= _FLEXIBLE_FROM else 4     # topic tags, throttle, tags
    at = len(frame) - after - tail - part
    layout = (frame[8:at], frame[at + part:], len(frame) - 4)
    if len(_OK_LAYOUTS) >= _OK_LAYOUTS_MAX:
        _OK_LAYOUTS.clear()
    _OK_LAYOUTS[(version, name)] = layout
    return layout


def produce_response_ok(version: int, correlation_id: int, name: str, index: int, base_offset: int,
                        log_append_time: int, log_start_offset: int) -> bytes:
    """:func:`produce_response_frame` of a request of one topic and one partition answered
    without error (the answer to almost every request of a producer writing to many
    partitions): the same bytes, from a layout kept per version and topic, with one
    ``struct`` pack.  Raises ValueError for a version not in :data:`PRODUCE_VERSIONS`."""
    layout = _OK_LAYOUTS.get((version, name))
    if layout is None:
        layout = _ok_layout(version, name)
    before, after, size = layout
    if version >= 5:
        numbers = _PARTITION_V5.pack(index, 0, base_offset, log_append_time, log_start_offset)
    else:
        numbers = _PARTITION.pack(index, 0, base_offset, log_append_time)
    return b"".join((_HEAD.pack(size, correlation_id), before, numbers, after))
