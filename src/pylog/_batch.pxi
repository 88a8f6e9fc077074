# Record batch v2 header parsing and CRC32C.  Included by _core.pyx.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t

from pylog.errors import CorruptRecordError, RecordTooLargeError

pylog_crc32c_init()

#: Largest batch any decoder accepts unless told otherwise (Kafka's default
#: message.max.bytes is 1 MiB; socket.request.max.bytes 100 MiB bounds what can arrive).
DEFAULT_MAX_BATCH_SIZE = 100 * 1024 * 1024

cdef Py_ssize_t GIL_RELEASE_BYTES = 64 * 1024

_STATUS_MESSAGES = {
    BATCH_TRUNCATED_HEADER: "truncated record batch: fewer than 61 header bytes",
    BATCH_TRUNCATED_BODY: "truncated record batch: batchLength runs past the end of the buffer",
    BATCH_BAD_LENGTH: "record batch length out of range",
    BATCH_BAD_MAGIC: "unsupported record batch magic (only v2, magic 2, is accepted)",
    BATCH_BAD_CRC: "record batch CRC32C mismatch",
    BATCH_BAD_COUNT: "record batch recordsCount/lastOffsetDelta inconsistent",
    BATCH_BAD_OFFSETS: "record batch has a negative base offset",
}


def batch_status_message(int status):
    """Human-readable reason for a BatchStatus code."""
    return _STATUS_MESSAGES.get(status, "valid")


cdef BatchStatus parse_batch_header(const uint8_t *p, Py_ssize_t avail, Py_ssize_t max_size,
                                    bint check_crc, BatchHeader *out) noexcept nogil:
    """Parse and validate the batch that starts at p, with avail bytes readable from p.

    Checks: 61 header bytes present, batchLength within [49, max_size - 12] and wholly
    present, magic 2, recordsCount >= 0 and lastOffsetDelta >= recordsCount - 1 (Kafka
    allows gaps after compaction, never fewer deltas than records), base offset >= 0,
    and (check_crc) the CRC32C of bytes 21..end.  Fills *out in every case where the
    header bytes are there, so a caller can report what it saw.
    """
    cdef int64_t length
    if avail < BATCH_HEADER_SIZE:
        return BATCH_TRUNCATED_HEADER
    out.base_offset = pylog_be64(p + BATCH_BASE_OFFSET)
    out.batch_length = pylog_be32(p + BATCH_LENGTH)
    out.leader_epoch = pylog_be32(p + BATCH_LEADER_EPOCH)
    out.magic = <int8_t>p[BATCH_MAGIC]
    out.crc = <uint32_t>pylog_be32(p + BATCH_CRC)
    out.attributes = pylog_be16(p + BATCH_ATTRIBUTES)
    out.last_offset_delta = pylog_be32(p + BATCH_LAST_OFFSET_DELTA)
    out.base_timestamp = pylog_be64(p + BATCH_BASE_TIMESTAMP)
    out.max_timestamp = pylog_be64(p + BATCH_MAX_TIMESTAMP)
    out.producer_id = pylog_be64(p + BATCH_PRODUCER_ID)
    out.producer_epoch = pylog_be16(p + BATCH_PRODUCER_EPOCH)
    out.base_sequence = pylog_be32(p + BATCH_BASE_SEQUENCE)
    out.records_count = pylog_be32(p + BATCH_RECORDS_COUNT)
    length = <int64_t>out.batch_length + BATCH_LENGTH_OVERHEAD
    out.size = <int32_t>length if 0 <= length <= 0x7fffffff else -1
    if out.batch_length < BATCH_MIN_LENGTH or length > max_size:
        return BATCH_BAD_LENGTH
    if length > avail:
        return BATCH_TRUNCATED_BODY
    if out.magic != 2:
        return BATCH_BAD_MAGIC
    if out.records_count < 0 or out.last_offset_delta < 0 or (
            out.records_count > 0 and out.last_offset_delta < out.records_count - 1):
        return BATCH_BAD_COUNT
    if out.base_offset < 0:
        return BATCH_BAD_OFFSETS
    if check_crc and pylog_crc32c(0, p + BATCH_ATTRIBUTES, <size_t>(length - BATCH_ATTRIBUTES)) != out.crc:
        return BATCH_BAD_CRC
    return BATCH_OK


def crc32c(data, unsigned int value=0):
    """CRC-32C of a bytes-like object, continuing from ``value`` (0 to start).

    Releases the GIL for buffers of 64 KiB and more.
    """
    cdef Py_buffer view
    cdef uint32_t crc = value
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len >= GIL_RELEASE_BYTES:
            with nogil:
                crc = pylog_crc32c(crc, <const uint8_t *>view.buf, <size_t>view.len)
        else:
            crc = pylog_crc32c(crc, <const uint8_t *>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return crc


_CRC32C_IMPLEMENTATIONS = ("portable", "lanes", "fold")


def crc32c_implementation():
    """Which CRC-32C implementation long buffers take on this CPU: ``"fold"`` (carry-less
    multiplication, VPCLMULQDQ with AVX-512), ``"lanes"`` (the SSE4.2 crc32 instruction in
    three lanes) or ``"portable"`` (slicing-by-8 tables)."""
    return _CRC32C_IMPLEMENTATIONS[pylog_crc32c_impl()]


def _crc32c_by(str implementation, data, unsigned int value=0):
    """CRC-32C by one named implementation (see :func:`crc32c_implementation`), for tests
    that compare them.  Returns None when this CPU can't run it (``"fold"`` also needs at
    least 272 bytes)."""
    cdef Py_buffer view
    cdef int ok = 0
    cdef uint32_t crc
    if implementation not in _CRC32C_IMPLEMENTATIONS:
        raise ValueError(f"unknown CRC-32C implementation {implementation!r}")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        crc = pylog_crc32c_by(_CRC32C_IMPLEMENTATIONS.index(implementation), value,
                              <const uint8_t *>view.buf, <size_t>view.len, &ok)
    finally:
        PyBuffer_Release(&view)
    return crc if ok else None


def read_batch_header(data, Py_ssize_t position=0, *, bint check_crc=True,
                      Py_ssize_t max_size=DEFAULT_MAX_BATCH_SIZE):
    """Validate the batch at ``data[position:]`` and return its header as a dict.

    Raises
    ------
    CorruptRecordError
        The bytes are not one whole, valid v2 batch (the message says which check failed).
    RecordTooLargeError
        batchLength is valid but larger than ``max_size``.
    """
    cdef Py_buffer view
    cdef BatchHeader h
    cdef BatchStatus st
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if position < 0 or position > view.len:
            raise CorruptRecordError(f"batch position {position} outside a buffer of {view.len} bytes")
        st = parse_batch_header(<const uint8_t *>view.buf + position, view.len - position,
                                max_size, check_crc, &h)
    finally:
        PyBuffer_Release(&view)
    if st == BATCH_BAD_LENGTH and h.batch_length >= BATCH_MIN_LENGTH:
        raise RecordTooLargeError(
            f"record batch of {<int64_t>h.batch_length + 12} bytes is larger than the limit of {max_size} bytes")
    if st != BATCH_OK:
        raise CorruptRecordError(f"{_STATUS_MESSAGES[st]} (at position {position})")
    return dict(base_offset=h.base_offset, batch_length=h.batch_length, size=h.size,
                partition_leader_epoch=h.leader_epoch, magic=h.magic, crc=h.crc,
                attributes=h.attributes, last_offset_delta=h.last_offset_delta,
                base_timestamp=h.base_timestamp, max_timestamp=h.max_timestamp,
                producer_id=h.producer_id, producer_epoch=h.producer_epoch,
                base_sequence=h.base_sequence, records_count=h.records_count)
