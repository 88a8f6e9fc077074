# cython: language_level=3, embedsignature=True
"""pylog's native hot paths, one extension module.

The parts are textual includes (the way asyncpg's protocol module is put together), so
they share C-level helpers without Python-call overhead:

- ``_batch.pxi``   record batch v2 header: parse and validate (size, magic, CRC32C), CRC
- ``_records.pxi`` record encode (per record and bulk) and decode (iteration, columnar)
- ``_index.pxi``   sparse offset / time index search and append
- ``_broker.pxi``  per-record broker work: murmur2 partitioning of keys
- ``_produce.pxi`` the broker's produce path for a lone batch: its header in one parse
- ``_client.pxi``  the embedded producer's per-record send path (accumulator)
- ``_log.pxi``     the log's lock and its append entry point (pylog.storage.Log's base)
- ``_segment.pxi`` segment append (pwritev, or a memcpy into the mapping when small), batch scans for
                   recovery, reads and index rebuilds
- ``_streams.pxi`` pylog.streams' windowed count over bytes keys, a polled batch at a time

Every decoder here is bounded: it is given a buffer and its end, checks that bytes are
there before each read, and reports bad input as pylog.errors.CorruptRecordError.
"""

include "_batch.pxi"
include "_records.pxi"
include "_index.pxi"
include "_segment.pxi"
include "_log.pxi"
include "_broker.pxi"
include "_produce.pxi"
include "_client.pxi"
include "_cleaner.pxi"
include "_streams.pxi"
