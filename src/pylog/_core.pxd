# cython: language_level=3
# Declarations shared by the parts of pylog._core (and by any later Cython module that
# cimports them).  Implementations live in _core.pyx and the .pxi files it includes.
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t

cdef extern from "_crc32c.h" nogil:
    void pylog_crc32c_init()
    uint32_t pylog_crc32c(uint32_t crc, const uint8_t *p, size_t n)
    uint32_t pylog_crc32c_by(int impl, uint32_t crc, const uint8_t *p, size_t n, int *ok)
    int pylog_crc32c_impl()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline int16_t pylog_be16(const uint8_t *p) { return (int16_t)(((uint16_t)p[0] << 8) | p[1]); }
    static inline int32_t pylog_be32(const uint8_t *p) {
        return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]);
    }
    static inline int64_t pylog_be64(const uint8_t *p) {
        return (int64_t)(((uint64_t)(uint32_t)pylog_be32(p) << 32) | (uint32_t)pylog_be32(p + 4));
    }
    static inline void pylog_put_be16(uint8_t *p, int16_t v) { p[0] = (uint8_t)((uint16_t)v >> 8); p[1] = (uint8_t)v; }
    static inline void pylog_put_be32(uint8_t *p, int32_t v) {
        uint32_t u = (uint32_t)v; p[0] = u >> 24; p[1] = u >> 16; p[2] = u >> 8; p[3] = u;
    }
    static inline void pylog_put_be64(uint8_t *p, int64_t v) {
        pylog_put_be32(p, (int32_t)((uint64_t)v >> 32)); pylog_put_be32(p + 4, (int32_t)v);
    }
    """
    int16_t pylog_be16(const uint8_t *p) nogil
    int32_t pylog_be32(const uint8_t *p) nogil
    int64_t pylog_be64(const uint8_t *p) nogil
    void pylog_put_be16(uint8_t *p, int16_t v) nogil
    void pylog_put_be32(uint8_t *p, int32_t v) nogil
    void pylog_put_be64(uint8_t *p, int64_t v) nogil

# Record batch v2 header layout (big-endian), ARCHITECTURE.md.
cdef enum:
    BATCH_BASE_OFFSET = 0
    BATCH_LENGTH = 8
    BATCH_LEADER_EPOCH = 12
    BATCH_MAGIC = 16
    BATCH_CRC = 17
    BATCH_ATTRIBUTES = 21
    BATCH_LAST_OFFSET_DELTA = 23
    BATCH_BASE_TIMESTAMP = 27
    BATCH_MAX_TIMESTAMP = 35
    BATCH_PRODUCER_ID = 43
    BATCH_PRODUCER_EPOCH = 51
    BATCH_BASE_SEQUENCE = 53
    BATCH_RECORDS_COUNT = 57
    BATCH_HEADER_SIZE = 61
    # batchLength counts the bytes after itself: the smallest legal value.
    BATCH_LENGTH_OVERHEAD = 12
    BATCH_MIN_LENGTH = 49

    ATTR_CODEC_MASK = 0x07
    ATTR_LOG_APPEND_TIME = 0x08
    ATTR_TRANSACTIONAL = 0x10
    ATTR_CONTROL = 0x20
    ATTR_DELETE_HORIZON = 0x40

# Result of parse_batch_header: 0 is a whole, valid batch; the others say why not.
cdef enum BatchStatus:
    BATCH_OK = 0
    BATCH_TRUNCATED_HEADER = 1     # fewer than 61 bytes left
    BATCH_TRUNCATED_BODY = 2       # batchLength says more bytes than are there
    BATCH_BAD_LENGTH = 3           # batchLength below the header size or above the limit
    BATCH_BAD_MAGIC = 4
    BATCH_BAD_CRC = 5
    BATCH_BAD_COUNT = 6            # recordsCount negative, or lastOffsetDelta inconsistent
    BATCH_BAD_OFFSETS = 7          # negative base offset

ctypedef struct BatchHeader:
    int64_t base_offset
    int32_t batch_length           # as stored: bytes after the length field
    int32_t size                   # whole batch: batch_length + 12
    int32_t leader_epoch
    int8_t magic
    uint32_t crc
    int16_t attributes
    int32_t last_offset_delta
    int64_t base_timestamp
    int64_t max_timestamp
    int64_t producer_id
    int16_t producer_epoch
    int32_t base_sequence
    int32_t records_count

cdef BatchStatus parse_batch_header(const uint8_t *p, Py_ssize_t avail, Py_ssize_t max_size,
                                    bint check_crc, BatchHeader *out) noexcept nogil
