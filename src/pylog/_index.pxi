# Part of pylog._core (included by _core.pyx).
#
# Sparse offset and time index search and validation.  The indexes are Kafka's files:
#   .index      8-byte entries:  relative offset u32, position u32        (big-endian)
#   .timeindex 12-byte entries:  timestamp i64, relative offset u32       (big-endian)
# pylog.storage.index maps them (mmap, numpy views) and calls these functions with the
# mapped buffer and the number of valid entries; every function here checks that the
# entries it is told about fit in the buffer before reading them.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.stdint cimport int64_t, uint8_t, uint32_t

cdef enum:
    OFFSET_ENTRY_SIZE = 8
    TIME_ENTRY_SIZE = 12
    # Kafka keeps the last 8 KiB of an index "warm": lookups near the end of the log (the
    # common case for consumers that keep up) search only that tail, whose pages stay in
    # the page cache, before falling back to the whole index.
    INDEX_WARM_BYTES = 8192

OFFSET_INDEX_ENTRY_SIZE = OFFSET_ENTRY_SIZE
TIME_INDEX_ENTRY_SIZE = TIME_ENTRY_SIZE


cdef inline int64_t _offset_key(const uint8_t *p, Py_ssize_t slot) noexcept nogil:
    return <uint32_t>pylog_be32(p + slot * OFFSET_ENTRY_SIZE)


cdef inline int64_t _time_key(const uint8_t *p, Py_ssize_t slot) noexcept nogil:
    return pylog_be64(p + slot * TIME_ENTRY_SIZE)


cdef Py_ssize_t _greatest_at_or_below(const uint8_t *p, Py_ssize_t entries, int64_t target,
                                      bint time_index) noexcept nogil:
    """Slot of the greatest entry whose key is <= target, or -1 (Kafka's indexSlotRangeFor)."""
    cdef Py_ssize_t lo, hi, mid, first_hot
    cdef Py_ssize_t warm = INDEX_WARM_BYTES // (TIME_ENTRY_SIZE if time_index else OFFSET_ENTRY_SIZE)
    if entries <= 0:
        return -1
    first_hot = entries - 1 - warm
    if first_hot < 0:
        first_hot = 0
    if (_time_key(p, first_hot) if time_index else _offset_key(p, first_hot)) <= target:
        lo = first_hot
        hi = entries - 1
    else:
        if (_time_key(p, 0) if time_index else _offset_key(p, 0)) > target:
            return -1
        lo = 0
        hi = first_hot
    # Invariant: key(lo) <= target; answer in [lo, hi].
    while lo < hi:
        mid = lo + (hi - lo + 1) // 2
        if (_time_key(p, mid) if time_index else _offset_key(p, mid)) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


cdef int _get_index_buffer(object buf, Py_buffer *view, Py_ssize_t entries, Py_ssize_t entry_size) except -1:
    PyObject_GetBuffer(buf, view, PyBUF_SIMPLE)
    if entries < 0 or entries > view.len // entry_size:
        PyBuffer_Release(view)
        raise ValueError(f"index of {view.len} bytes cannot hold {entries} entries of {entry_size} bytes")
    return 0


def offset_index_lookup(buf, Py_ssize_t entries, int64_t relative_offset):
    """Greatest offset-index entry whose relative offset is <= ``relative_offset``.

    Returns ``(slot, relative_offset, position)``; ``(-1, 0, 0)`` when every entry is
    above the target (or there are none): the caller then starts at the segment's start.
    """
    cdef Py_buffer view
    cdef Py_ssize_t slot
    cdef const uint8_t *p
    _get_index_buffer(buf, &view, entries, OFFSET_ENTRY_SIZE)
    p = <const uint8_t *>view.buf
    if relative_offset < 0:
        slot = -1
    else:
        slot = _greatest_at_or_below(p, entries, relative_offset, False)
    if slot < 0:
        PyBuffer_Release(&view)
        return (-1, 0, 0)
    result = (slot, <uint32_t>pylog_be32(p + slot * OFFSET_ENTRY_SIZE),
              <uint32_t>pylog_be32(p + slot * OFFSET_ENTRY_SIZE + 4))
    PyBuffer_Release(&view)
    return result


def time_index_lookup(buf, Py_ssize_t entries, int64_t timestamp):
    """Greatest time-index entry whose timestamp is <= ``timestamp``.

    Returns ``(slot, timestamp, relative_offset)``; ``(-1, -1, 0)`` when there is none.
    """
    cdef Py_buffer view
    cdef Py_ssize_t slot
    cdef const uint8_t *p
    _get_index_buffer(buf, &view, entries, TIME_ENTRY_SIZE)
    p = <const uint8_t *>view.buf
    slot = _greatest_at_or_below(p, entries, timestamp, True)
    if slot < 0:
        PyBuffer_Release(&view)
        return (-1, -1, 0)
    result = (slot, pylog_be64(p + slot * TIME_ENTRY_SIZE),
              <uint32_t>pylog_be32(p + slot * TIME_ENTRY_SIZE + 8))
    PyBuffer_Release(&view)
    return result


def offset_index_first_at_or_above(buf, Py_ssize_t entries, int64_t relative_offset):
    """Number of leading entries whose relative offset is < ``relative_offset``
    (the slot where truncation to that offset cuts the index)."""
    cdef Py_buffer view
    cdef Py_ssize_t slot
    _get_index_buffer(buf, &view, entries, OFFSET_ENTRY_SIZE)
    try:
        if relative_offset <= 0:
            return 0
        slot = _greatest_at_or_below(<const uint8_t *>view.buf, entries, relative_offset - 1, False)
        return slot + 1
    finally:
        PyBuffer_Release(&view)


def time_index_first_at_or_above(buf, Py_ssize_t entries, int64_t relative_offset):
    """Number of leading time-index entries whose relative offset is < ``relative_offset``.

    Offsets in a valid time index never decrease, so this is a prefix.
    """
    cdef Py_buffer view
    cdef Py_ssize_t i
    cdef const uint8_t *p
    _get_index_buffer(buf, &view, entries, TIME_ENTRY_SIZE)
    p = <const uint8_t *>view.buf
    i = entries
    # The tail to drop is short after any realistic truncation: walk back from the end.
    while i > 0 and <uint32_t>pylog_be32(p + (i - 1) * TIME_ENTRY_SIZE + 8) >= relative_offset:
        i -= 1
    PyBuffer_Release(&view)
    return i


def offset_index_check(buf, Py_ssize_t entries, int64_t max_relative_offset, int64_t segment_size):
    """Sanity check of an offset index before it is trusted: relative offsets and
    positions strictly increasing, every relative offset <= ``max_relative_offset`` and
    every position < ``segment_size``.  Returns None, or a sentence saying what is wrong."""
    cdef Py_buffer view
    cdef Py_ssize_t i
    cdef const uint8_t *p
    cdef int64_t rel, pos, prev_rel = -1, prev_pos = -1
    _get_index_buffer(buf, &view, entries, OFFSET_ENTRY_SIZE)
    p = <const uint8_t *>view.buf
    try:
        for i in range(entries):
            rel = <uint32_t>pylog_be32(p + i * OFFSET_ENTRY_SIZE)
            pos = <uint32_t>pylog_be32(p + i * OFFSET_ENTRY_SIZE + 4)
            if rel <= prev_rel or pos <= prev_pos:
                return f"entry {i} ({rel}, {pos}) does not increase on entry {i - 1} ({prev_rel}, {prev_pos})"
            if rel > max_relative_offset:
                return f"entry {i} relative offset {rel} beyond the segment's last offset"
            if pos >= segment_size:
                return f"entry {i} position {pos} beyond the segment's {segment_size} bytes"
            prev_rel = rel
            prev_pos = pos
        return None
    finally:
        PyBuffer_Release(&view)


def time_index_check(buf, Py_ssize_t entries, int64_t max_relative_offset):
    """Sanity check of a time index: timestamps strictly increasing, relative offsets
    never decreasing and <= ``max_relative_offset``.  Returns None or what is wrong."""
    cdef Py_buffer view
    cdef Py_ssize_t i
    cdef const uint8_t *p
    cdef int64_t ts, rel, prev_ts = 0, prev_rel = -1
    _get_index_buffer(buf, &view, entries, TIME_ENTRY_SIZE)
    p = <const uint8_t *>view.buf
    try:
        for i in range(entries):
            ts = pylog_be64(p + i * TIME_ENTRY_SIZE)
            rel = <uint32_t>pylog_be32(p + i * TIME_ENTRY_SIZE + 8)
            if (i > 0 and ts <= prev_ts) or rel < prev_rel:
                return f"entry {i} ({ts}, {rel}) does not increase on entry {i - 1} ({prev_ts}, {prev_rel})"
            if rel > max_relative_offset:
                return f"entry {i} relative offset {rel} beyond the segment's last offset"
            prev_ts = ts
            prev_rel = rel
        return None
    finally:
        PyBuffer_Release(&view)
