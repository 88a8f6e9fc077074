# Part of pylog._core (included by _core.pyx).
#
# pylog.streams' per-record work that calls no user code: a windowed count() over time
# windows (Kafka's KStreamWindowAggregate with count's initializer and aggregator) whose
# keys are bytes, counts are longs (8 bytes big-endian) and output goes to_stream() into a
# sink of windowed keys (the key's bytes, then the window start int64 BE).  The task's
# fused loop (pylog.streams._fused) hands it a polled batch when its chain is exactly
# source -> count -> to_stream -> sink over those serdes; the generated Python loop does
# the same statement for statement, and tests/streams/test_windowed_speed_path.py checks
# both against the per-record path.  No buffer is read here: every input is a Python
# object (lists of keys, values and timestamps), so nothing can read past an end.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_Append
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy


cdef inline bytes _sw_be64(int64_t value):
    """``struct.pack(">q", value)``."""
    cdef char buf[8]
    cdef uint64_t u = <uint64_t>value
    cdef int j
    for j in range(8):
        buf[7 - j] = <char>(u & 0xff)
        u >>= 8
    return PyBytes_FromStringAndSize(buf, 8)


cdef inline bytes _sw_concat(bytes a, bytes b):
    cdef Py_ssize_t na = PyBytes_GET_SIZE(a)
    cdef Py_ssize_t nb = PyBytes_GET_SIZE(b)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, na + nb)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(a), na)
    memcpy(p + na, PyBytes_AS_STRING(b), nb)
    return out


def window_count_batch(keys, values, tss, Py_ssize_t i0, int64_t st, proc, dict cache, dict cache_ts,
                       dict dirty, list cl_k, list cl_v, list cl_t, list out_k, list out_v, list out_t,
                       int64_t size, int64_t advance, int64_t grace, bint drop_null_values, int64_t sobs,
                       int64_t retention_less_slack, int64_t fresh, bad_timestamp, dropped, ctx, load):
    """Records ``i0 ..`` of a batch through a windowed count; returns the stream time.

    Per record, as the fused loop's generated code: a negative timestamp goes to
    ``bad_timestamp(i, ts)`` and is skipped; a null key (or value, with
    ``drop_null_values``) to ``dropped(ctx, reason)``; ``proc.observed`` (the
    processor's stream time) advances; each window ``[start, start + size)`` holding the
    timestamp (``advance`` apart) that is not closed (``start + size > observed -
    grace``) counts one more: its count and timestamp are read from ``cache[start]`` /
    ``cache_ts[start]`` (dicts by key bytes), else from the store through ``load(key,
    start)`` when ``start < fresh``, unless the store has expired the window (start
    below ``sobs - retention_less_slack``, ``sobs`` the store's stream time as the
    batch's windows advance it); the new count and timestamp go back to the cache, the
    stored value (timestamp then count, 8 bytes each) to ``dirty[start]`` by binary
    window key (key, start, seqnum 0), the changelog record to ``cl_*`` and the output
    record (windowed key, count) to ``out_*``; a closed window goes to ``dropped``.
    Keys must be bytes (the bytes serde's check is the caller's condition for using
    this); a non-bytes key raises TypeError.
    """
    cdef Py_ssize_t i, n = len(tss)
    cdef int64_t ts, start, first, close, nts, ets = 0, count
    cdef int64_t obs = proc.observed
    cdef int64_t sst = -1
    cdef int64_t sml = sobs - retention_less_slack
    cdef bytes kb, ck, nb, sb = None, sbz = None
    cdef bytes seq0 = b"\x00\x00\x00\x00"
    cdef dict run = None, wc = None, wcts = None
    cdef PyObject* hit
    cdef object k, loaded, found
    try:
        for i in range(i0, n):
            k = keys[i]
            ts = tss[i]
            if ts < 0:
                bad_timestamp(i, ts)
                continue
            if ts > st:
                st = ts
            if k is None or (drop_null_values and values[i] is None):
                dropped(ctx, "null key or value in a windowed aggregation")
                continue
            if ts > obs:
                obs = ts
            close = obs - grace
            if type(k) is not bytes:
                raise TypeError(f"window_count_batch takes bytes keys, got {type(k).__name__}")
            kb = <bytes>k
            first = ts - (size - advance)
            if first < 0:
                first = 0
            start = first // advance * advance
            while start <= ts:
                if start + size > close:
                    if start != sst:
                        sst = start
                        sb = _sw_be64(start)
                        sbz = _sw_concat(sb, seq0)
                        run = dirty.get(start)
                        if run is None:
                            run = {}
                            dirty[start] = run
                        wc = cache.get(start)
                        if wc is None:
                            wc = {}
                            cache[start] = wc
                            wcts = {}
                            cache_ts[start] = wcts
                        else:
                            wcts = cache_ts[start]
                    ck = _sw_concat(kb, sbz)
                    found = None
                    if start >= sml:
                        hit = PyDict_GetItem(wc, kb)
                        if hit != NULL:
                            found = <object>hit
                            ets = wcts[kb]
                        elif start < fresh:
                            loaded = load(kb, start)
                            if loaded is not None:
                                found, ets = loaded
                    if found is None:
                        nts = ts
                        count = 1
                    else:
                        nts = ts if ts > ets else ets
                        count = found + 1
                    nb = _sw_be64(count)
                    PyDict_SetItem(wc, kb, count)
                    PyDict_SetItem(wcts, kb, nts)
                    PyDict_SetItem(run, ck, _sw_concat(_sw_be64(nts), nb))
                    if start > sobs:
                        sobs = start
                        sml = start - retention_less_slack
                    PyList_Append(cl_k, ck)
                    PyList_Append(cl_v, nb)
                    PyList_Append(cl_t, nts)
                    PyList_Append(out_k, _sw_concat(kb, sb))
                    PyList_Append(out_v, nb)
                    PyList_Append(out_t, nts)
                else:
                    dropped(ctx, "record for a closed window")
                start += advance
    finally:
        proc.observed = obs
    return st
