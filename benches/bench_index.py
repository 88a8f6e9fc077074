"""Index lookup in a full 1 GiB segment, and recovery of a 1 GiB unflushed segment.

Targets: a lookup from Python under 2 microseconds; recovery within 2x the time to read
the file and CRC it (peer: ``open().read()`` + the ``crc32c`` package).  The 1 GiB files are
made once in ``setup_cache``, in the temporary working directory asv gives it (and removes
afterwards); ``PYLOG_BENCH_SMALL=1`` shrinks them for the smoke test.
"""

import os
import random

from benches.bench_log import make_batches

SMALL = os.environ.get("PYLOG_BENCH_SMALL", "") not in ("", "0")
SEGMENT_BYTES = (4 << 20) if SMALL else (1 << 30)
LOOKUPS = 10_000


def _fill_segment(path):
    """A log whose one segment holds SEGMENT_BYTES of 16 KiB batches, left unflushed and
    not closed (as after a crash): preallocated, no checkpoint, no clean-shutdown marker."""
    from pylog.storage import Log

    batches, _ = make_batches(1)
    batch = batches[0]
    log = Log.open(path, segment_bytes=SEGMENT_BYTES + len(batch))
    for _ in range(SEGMENT_BYTES // len(batch)):
        log.append(batch)
    log._closed = True  # a crash: no trim, no checkpoint, no marker
    return log.log_end_offset


class IndexLookup:
    timeout = 900

    def setup_cache(self):
        path = os.path.abspath("bench-index-0")
        _fill_segment(path)
        from pylog.storage import Log

        Log.open(path).close()  # recover once and close cleanly: sealed, trimmed, indexed
        return path

    def setup(self, path):
        from pylog.storage import Log

        self.log = Log.open(path)
        self.seg = self.log.segments[0]
        self.index = self.seg.offset_index
        r = random.Random(1)
        self.targets = [r.randrange(self.log.log_end_offset) for _ in range(LOOKUPS)]

    def teardown(self, path):
        self.log.close()

    def time_offset_index_lookup(self, path):
        lookup = self.index.lookup
        for t in self.targets:
            lookup(t)

    def time_translate_offset(self, path):
        """Index lookup plus the forward scan of batch headers to the target's batch."""
        translate = self.seg.translate_offset
        for t in self.targets:
            translate(t)

    def track_index_entries(self, path):
        return len(self.index)

    track_index_entries.unit = "entries"


class Recovery:
    timeout = 900

    def setup_cache(self):
        path = os.path.abspath("bench-recovery-0")
        _fill_segment(path)
        return path

    def time_recover_unflushed_segment(self, path):
        from pylog.storage import Log

        log = Log.open(path)  # unclean: the whole segment is CRC-checked, indexes rebuilt
        assert not log.had_clean_shutdown and log.recovered
        log._closed = True  # stay "crashed" so every repeat recovers everything

    def time_read_and_crc32c_peer(self, path):
        import crc32c

        seg = os.path.join(path, f"{0:020d}.log")
        # The data only: recovery's Log.open preallocates the active segment to the
        # default segment.bytes (1 GiB, sparse), which at PYLOG_BENCH_SMALL sizes is
        # 250 times what was written.
        with open(seg, "rb") as f:
            crc32c.crc32c(f.read(SEGMENT_BYTES))
