# Part of pylog._core (included by _core.pyx).
#
# The broker's produce path for the usual request: one partition, one record batch
# (librdkafka sends one Produce request per partition, so with many partitions the
# requests are small and their per-request cost is what the broker spends).  The header
# fields the broker's checks need come out of one C parse, instead of a batch iterator, a
# list and a RecordBatch object per request.


def lone_batch_header(records):
    """The header fields a produce checks, when ``records`` is exactly one whole v2 batch.

    Returns ``(attributes, producer_id, producer_epoch, base_sequence, records_count,
    last_offset_delta, base_timestamp, max_timestamp)`` when ``records`` (bytes-like) holds
    one batch whose header passes the checks of :func:`read_batch_header` (size, magic,
    counts, base offset; not the CRC, which the append checks) and nothing after it;
    None for anything else (several batches, a partial or malformed one, no buffer),
    which the broker's general path takes and reports.  Reads only the 61 header bytes.
    """
    cdef Py_buffer view
    cdef BatchHeader h
    cdef BatchStatus status
    if records is None:
        return None
    try:
        PyObject_GetBuffer(records, &view, PyBUF_SIMPLE)
    except TypeError:
        return None
    try:
        status = parse_batch_header(<const uint8_t *>view.buf, view.len, DEFAULT_MAX_BATCH_SIZE, False, &h)
        if status != BATCH_OK or h.size != view.len:
            return None
    finally:
        PyBuffer_Release(&view)
    return (h.attributes, h.producer_id, h.producer_epoch, h.base_sequence, h.records_count,
            h.last_offset_delta, h.base_timestamp, h.max_timestamp)
