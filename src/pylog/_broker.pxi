# Part of pylog._core (included by _core.pyx).
#
# Per-record broker work: partitioning record keys the way Kafka's Java producer does, so a
# key lands in the same partition whether it is produced through pylog or through Kafka.
#
#   partition = toPositive(murmur2(key)) % num_partitions      toPositive(x) = x & 0x7fffffff
#
# murmur2 is Kafka's variant of MurmurHash2 (seed 0x9747b28c, four little-endian bytes per
# round, tail bytes folded in before a final multiply).  The partitioner classes below are
# the producer's per-record hot path: one method call, no Python-level work beyond a dict
# lookup for keyless records.  pylog.broker.partitioner re-exports them with the interface.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

import os as _broker_os

from pylog.errors import InvalidPartitionsError, InvalidRequestError

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Four bytes as a little-endian uint32: one load on little-endian hosts. */
    static inline uint32_t pylog_le32(const uint8_t *p) {
    #if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
        uint32_t v; memcpy(&v, p, 4); return v;
    #else
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    #endif
    }
    """
    uint32_t pylog_le32(const uint8_t *p) nogil

cdef enum:
    MURMUR2_SEED = 0x9747b28c
    MURMUR2_M = 0x5bd1e995
    MURMUR2_R = 24
    # Below this many keys the GIL is not worth releasing in partition_keys.
    PARTITION_KEYS_NOGIL_MIN = 4096


cdef inline uint32_t _broker_murmur2(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """Kafka's murmur2 of n bytes at p, as an unsigned 32-bit value."""
    cdef uint32_t m = MURMUR2_M
    cdef uint32_t h = <uint32_t>MURMUR2_SEED ^ <uint32_t>n
    cdef uint32_t k
    cdef Py_ssize_t i, body = n & ~(<Py_ssize_t>3)
    cdef Py_ssize_t tail = n & 3
    i = 0
    while i < body:
        k = pylog_le32(p + i)      # little-endian whatever the host is
        k *= m
        k ^= k >> MURMUR2_R
        k *= m
        h *= m
        h ^= k
        i += 4
    if tail == 3:
        h ^= <uint32_t>p[body + 2] << 16
    if tail >= 2:
        h ^= <uint32_t>p[body + 1] << 8
    if tail >= 1:
        h ^= <uint32_t>p[body]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return h


cdef inline int32_t _broker_key_partition(const uint8_t *p, Py_ssize_t n,
                                          int32_t num_partitions) noexcept nogil:
    return <int32_t>((_broker_murmur2(p, n) & 0x7fffffff) % <uint32_t>num_partitions)


cdef int _broker_hash_object(object key, uint32_t *out) except -1:
    """murmur2 of a bytes-like key into *out; bad types raise InvalidRequestError."""
    cdef Py_buffer view
    if type(key) is bytes:
        out[0] = _broker_murmur2(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
        return 0
    try:
        PyObject_GetBuffer(key, &view, PyBUF_SIMPLE)
    except TypeError:
        raise InvalidRequestError(
            f"a serialized key must be bytes-like (bytes, bytearray, memoryview) or None, "
            f"not {type(key).__name__}") from None
    try:
        out[0] = _broker_murmur2(<const uint8_t *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef inline int _broker_check_partitions(int64_t num_partitions) except -1:
    if num_partitions <= 0 or num_partitions > 0x7fffffff:
        raise InvalidPartitionsError(
            f"num_partitions must be between 1 and 2147483647, got {num_partitions}")
    return 0


def murmur2(data):
    """Kafka's murmur2 hash of a bytes-like object, as the signed 32-bit int Java returns.

    ``murmur2(key) & 0x7fffffff`` is Kafka's ``toPositive``; the partition of a keyed
    record is that modulo the number of partitions (see :func:`partition_for_key`).

    Raises
    ------
    InvalidRequestError
        ``data`` is not bytes-like.
    """
    cdef uint32_t h
    _broker_hash_object(data, &h)
    return <int32_t>h


def partition_for_key(key, int64_t num_partitions):
    """Partition of a serialized (non-null) key among ``num_partitions``, as Kafka's
    producer computes it: ``toPositive(murmur2(key)) % num_partitions``.

    Raises
    ------
    InvalidRequestError
        ``key`` is not bytes-like.
    InvalidPartitionsError
        ``num_partitions`` is not positive.
    """
    cdef uint32_t h
    _broker_check_partitions(num_partitions)
    _broker_hash_object(key, &h)
    return <int32_t>((h & 0x7fffffff) % <uint32_t>num_partitions)


cdef void _broker_partition_ranges(const uint8_t *base, const int64_t *offs,
                                   const int64_t *lens, Py_ssize_t n, int32_t parts,
                                   int32_t *out) noexcept nogil:
    # Ranges were validated by the caller.  lens NULL: offs holds n + 1 boundaries.
    cdef Py_ssize_t i
    for i in range(n):
        if lens == NULL:
            out[i] = _broker_key_partition(base + offs[i], offs[i + 1] - offs[i], parts)
        elif lens[i] == -1:
            out[i] = -1
        else:
            out[i] = _broker_key_partition(base + offs[i], lens[i], parts)


def partition_keys(keys, int64_t num_partitions, offsets=None, lengths=None):
    """Partition of every key of a batch, in one C loop: a numpy int32 array.

    Two input forms:

    - ``partition_keys(list_of_keys, n)``: a list (or tuple) of bytes-like keys or None.
    - ``partition_keys(buffer, n, offsets)``: the keys concatenated in one bytes-like
      ``buffer``; ``offsets`` holds ``len + 1`` ascending boundaries, key ``i`` being
      ``buffer[offsets[i]:offsets[i + 1]]``.  With ``lengths`` also given, key ``i`` is
      ``buffer[offsets[i]:offsets[i] + lengths[i]]`` and a length of -1 is a null key (the
      layout of a decoded record column).

    A null key gives -1: the caller's partitioner picks the partition of keyless records
    (Kafka's sticky partitioning), which is per-batch state, not a function of the key.

    The buffer form releases the GIL for large batches.

    Raises
    ------
    InvalidPartitionsError
        ``num_partitions`` is not positive.
    InvalidRequestError
        A key is not bytes-like, or ``offsets``/``lengths`` do not describe ranges inside
        ``buffer`` (nothing is read outside it).
    """
    cdef Py_ssize_t n, i
    cdef uint32_t h
    cdef int32_t parts
    cdef int32_t[::1] out
    cdef const int64_t[::1] offs
    cdef const int64_t[::1] lens
    cdef Py_buffer view
    cdef const uint8_t *base
    cdef int64_t start, end, size
    cdef object item
    cdef bint has_lengths = lengths is not None
    _broker_check_partitions(num_partitions)
    parts = <int32_t>num_partitions

    if offsets is None:
        if lengths is not None:
            raise InvalidRequestError("partition_keys: lengths needs offsets")
        if not isinstance(keys, (list, tuple)):
            keys = list(keys)
        n = len(keys)
        result = _np().empty(n, dtype=_np().int32)
        out = result
        for i in range(n):
            item = keys[i]
            if item is None:
                out[i] = -1
            elif type(item) is bytes:
                out[i] = _broker_key_partition(<const uint8_t *>PyBytes_AS_STRING(item),
                                               PyBytes_GET_SIZE(item), parts)
            else:
                _broker_hash_object(item, &h)
                out[i] = <int32_t>((h & 0x7fffffff) % <uint32_t>parts)
        return result

    offs = _np().ascontiguousarray(offsets, dtype=_np().int64)
    if not has_lengths:
        n = offs.shape[0] - 1
        if n < 0:
            raise InvalidRequestError("partition_keys: offsets needs len(keys) + 1 boundaries")
    else:
        lens = _np().ascontiguousarray(lengths, dtype=_np().int64)
        n = offs.shape[0]
        if lens.shape[0] != n:
            raise InvalidRequestError(
                f"partition_keys: {n} offsets but {lens.shape[0]} lengths")
    result = _np().empty(n, dtype=_np().int32)
    out = result
    try:
        PyObject_GetBuffer(keys, &view, PyBUF_SIMPLE)
    except TypeError:
        raise InvalidRequestError(
            f"partition_keys: keys must be bytes-like when offsets are given, "
            f"not {type(keys).__name__}") from None
    try:
        base = <const uint8_t *>view.buf
        size = view.len
        # Validate every range first, so a bad one is reported before any work is done.
        for i in range(n):
            start = offs[i]
            if not has_lengths:
                end = offs[i + 1]
            elif lens[i] == -1:
                continue
            else:
                end = start + lens[i] if lens[i] >= 0 else -1
            if start < 0 or end < start or end > size:
                raise InvalidRequestError(
                    f"partition_keys: key {i} spans [{start}, {end}) outside a buffer of "
                    f"{size} bytes (or has a negative length)")
        if n >= PARTITION_KEYS_NOGIL_MIN:
            with nogil:
                _broker_partition_ranges(base, &offs[0], &lens[0] if has_lengths else NULL,
                                         n, parts, &out[0])
        elif n > 0:
            _broker_partition_ranges(base, &offs[0], &lens[0] if has_lengths else NULL,
                                     n, parts, &out[0])
    finally:
        PyBuffer_Release(&view)
    return result


# ---------------------------------------------------------------------------------------
# Partitioners.  State is small and per topic: the sticky partition of keyless records, or
# the round-robin counter.  Each method runs without releasing the GIL and calls no Python
# code, so one instance may be shared by threads (each call is atomic under the GIL).

cdef inline uint64_t _broker_splitmix64(uint64_t *state) noexcept nogil:
    cdef uint64_t z
    state[0] += <uint64_t>0x9E3779B97F4A7C15
    z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef class _StickyBase:
    # Sticky choice of a partition for keyless records (KIP-480): a topic keeps one
    # partition until on_new_batch() says the batch being filled for it was closed; the
    # next keyless record then picks another available partition at random.
    cdef dict _sticky          # topic -> partition currently stuck to
    cdef dict _avoid           # topic -> partition whose batch was just closed
    cdef uint64_t _rng

    def __cinit__(self, *args, **kwargs):
        self._sticky = {}
        self._avoid = {}
        self._rng = <uint64_t>int.from_bytes(_broker_os.urandom(8), "little")

    cdef int32_t _sticky_partition(self, object topic, int64_t num_partitions,
                                   object available) except -2:
        cdef object cached = self._sticky.get(topic)
        cdef int32_t p
        if cached is not None:
            p = <int32_t>cached
            if p < num_partitions:
                return p
        p = self._pick(topic, num_partitions, available)
        self._sticky[topic] = p
        return p

    cdef int32_t _pick(self, object topic, int64_t num_partitions, object available) except -2:
        cdef Py_ssize_t n_avail = 0 if available is None else len(available)
        cdef object avoid = self._avoid.pop(topic, None)
        cdef int32_t p
        cdef int64_t candidate
        cdef int tries
        if n_avail == 0:
            # Nothing is known to be available: any partition (Kafka does the same).
            return <int32_t>((_broker_splitmix64(&self._rng) & 0x7fffffff) % <uint64_t>num_partitions)
        if n_avail == 1:
            candidate = available[0]
        else:
            # Another partition than the one whose batch just closed, so load spreads.
            for tries in range(64):
                candidate = available[<Py_ssize_t>((_broker_splitmix64(&self._rng) & 0x7fffffff)
                                                   % <uint64_t>n_avail)]
                if avoid is None or candidate != avoid:
                    break
        if candidate < 0 or candidate >= num_partitions:
            raise InvalidPartitionsError(
                f"available partition {candidate} of topic {topic!r} is outside "
                f"0..{num_partitions - 1}")
        return <int32_t>candidate

    def on_new_batch(self, topic, int prev_partition):
        """The producer closed the batch it was filling for ``prev_partition`` of ``topic``:
        the next keyless record of the topic goes to another partition (if the sticky
        partition is still ``prev_partition``; a stale call changes nothing)."""
        cached = self._sticky.get(topic)
        if cached is not None and cached == prev_partition:
            del self._sticky[topic]
            self._avoid[topic] = prev_partition

    def seed(self, uint64_t value):
        """Seed the random choice of sticky partitions (for reproducible tests)."""
        self._rng = value

    def sticky_partition(self, topic):
        """The partition keyless records of ``topic`` currently go to, or None."""
        return self._sticky.get(topic)


cdef class DefaultPartitioner(_StickyBase):
    """Kafka's default partitioning.

    A record with a key goes to ``toPositive(murmur2(key_bytes)) % num_partitions``, over
    all partitions, available or not, so a key always maps to the same partition.  A
    record without a key goes to the topic's sticky partition (KIP-480): chosen at
    random among ``available_partitions`` (all partitions when that is empty or None) and
    kept until :meth:`on_new_batch` reports that the producer closed the batch for it.

    ``ignore_keys=True`` is Kafka's ``partitioner.ignore.keys`` (KIP-794): keys are then
    not hashed and every record is partitioned as a keyless one.

    Thread safety: safe to share; every call completes under the GIL without calling back
    into Python.  No state survives a restart (none needs to: sticky choice is per batch).
    """
    cdef bint _ignore_keys

    def __init__(self, *, bint ignore_keys=False):
        self._ignore_keys = ignore_keys

    @property
    def ignore_keys(self):
        return self._ignore_keys

    def partition(self, topic, key, key_bytes, int64_t num_partitions, available_partitions=None):
        """Partition of one record.

        Parameters
        ----------
        topic : str
        key : object
            The record key before serialization (unused here; part of the interface).
        key_bytes : bytes-like or None
            The serialized key; None for a keyless record.
        num_partitions : int
            Number of partitions of ``topic``.
        available_partitions : sequence of int, optional
            Partitions that have a leader now; only keyless records look at it.

        Raises
        ------
        InvalidPartitionsError
            ``num_partitions`` is not positive, or an available partition is out of range.
        InvalidRequestError
            ``key_bytes`` is neither None nor bytes-like.
        """
        cdef uint32_t h
        if num_partitions <= 0 or num_partitions > 0x7fffffff:
            _broker_check_partitions(num_partitions)
        if key_bytes is not None and not self._ignore_keys:
            if type(key_bytes) is bytes:
                return _broker_key_partition(<const uint8_t *>PyBytes_AS_STRING(key_bytes),
                                             PyBytes_GET_SIZE(key_bytes), <int32_t>num_partitions)
            _broker_hash_object(key_bytes, &h)
            return <int32_t>((h & 0x7fffffff) % <uint32_t>num_partitions)
        return self._sticky_partition(topic, num_partitions, available_partitions)


cdef class UniformStickyPartitioner(_StickyBase):
    """Kafka's ``UniformStickyPartitioner``: every record, keyed or not, goes to the
    topic's sticky partition (see :class:`DefaultPartitioner`), which changes when
    :meth:`on_new_batch` is called.  Spreads load evenly; gives up key ordering.

    Thread safety: as :class:`DefaultPartitioner`.
    """

    def partition(self, topic, key, key_bytes, int64_t num_partitions, available_partitions=None):
        """Partition of one record (the key is ignored); see DefaultPartitioner.partition."""
        if num_partitions <= 0 or num_partitions > 0x7fffffff:
            _broker_check_partitions(num_partitions)
        return self._sticky_partition(topic, num_partitions, available_partitions)


cdef class RoundRobinPartitioner:
    """Kafka's ``RoundRobinPartitioner``: records of a topic, keyed or not, are dealt to
    its available partitions in turn (to all partitions when none is known available).

    Kafka's Java version calls ``partition()`` twice for the first record of a new batch
    and so skips partitions (KAFKA-9965); pylog's producer calls it once per record, so the
    rotation is exact.  :meth:`on_new_batch` does nothing.

    Thread safety: as :class:`DefaultPartitioner`.
    """
    cdef dict _counters        # topic -> next counter value

    def __cinit__(self):
        self._counters = {}

    def partition(self, topic, key, key_bytes, int64_t num_partitions, available_partitions=None):
        """Partition of one record; see DefaultPartitioner.partition."""
        cdef int64_t counter
        cdef Py_ssize_t n_avail
        cdef int64_t p
        if num_partitions <= 0 or num_partitions > 0x7fffffff:
            _broker_check_partitions(num_partitions)
        counter = self._counters.get(topic, 0)
        self._counters[topic] = (counter + 1) & 0x7fffffff
        n_avail = 0 if available_partitions is None else len(available_partitions)
        if n_avail == 0:
            return <int32_t>(counter % num_partitions)
        p = available_partitions[counter % n_avail]
        if p < 0 or p >= num_partitions:
            raise InvalidPartitionsError(
                f"available partition {p} of topic {topic!r} is outside 0..{num_partitions - 1}")
        return <int32_t>p

    def on_new_batch(self, topic, int prev_partition):
        """Nothing to do: round-robin has no per-batch state."""
