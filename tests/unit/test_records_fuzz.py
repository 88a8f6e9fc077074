"""Fuzzing the decoders: random bytes and mutated valid batches (truncated, flipped bytes,
lying lengths, counts and varints, with and without a repaired CRC so the damage reaches
the record decoder and the decompressors).  The only acceptable outcomes are a valid parse
or CorruptRecordError: never a crash, IndexError, struct.error, AssertionError or a read
past the buffer.  ``pytest -m long`` runs the same checks for much longer.
"""

import ctypes
import mmap
import os
import random
import struct
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pylog import _core, codecs
from pylog.errors import CorruptRecordError, RecordTooLargeError
from pylog.records import RecordBatch, RecordBatchBuilder, filter_batch, iter_batches

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


class GuardedBuffer:
    """Places data so that it ends where an inaccessible page begins: a read one byte
    past the buffer is a segfault, not a silent success."""

    def __init__(self, size: int = 1 << 18) -> None:
        page = mmap.PAGESIZE
        self.size = -(-size // page) * page
        self.map = mmap.mmap(-1, self.size + page)
        self._export = ctypes.c_char.from_buffer(self.map)  # keeps the mapping in place
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.mprotect(ctypes.addressof(self._export) + self.size, page, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")

    def view(self, data: bytes) -> memoryview:
        if len(data) > self.size:
            return memoryview(data)
        start = self.size - len(data)
        self.map[start:self.size] = data
        return memoryview(self.map)[start:self.size]


GUARD = GuardedBuffer() if sys.platform.startswith("linux") else None


def exercise(data: bytes) -> None:
    """Every decoding entry point on data; raises only CorruptRecordError."""
    if GUARD is not None:
        data = GUARD.view(bytes(data))
    try:
        b = RecordBatch(data)
    except CorruptRecordError:
        pass
    else:
        for step in (b.validate, lambda: list(b), b.columns,
                     lambda: filter_batch(b, np.ones(min(max(b.records_count, 0), 100_000), dtype=bool))):
            try:
                step()
            except CorruptRecordError:
                pass
            except ValueError as exc:  # only filter_batch's mask-length check
                assert "keep has" in str(exc)
        try:
            cols = b.columns()
            for i in range(len(cols)):
                cols.key(i), cols.value(i), cols.headers(i)
        except CorruptRecordError:
            pass
    try:
        for batch in iter_batches(data, check_crc=False):
            for _ in batch:
                pass
    except (CorruptRecordError, RecordTooLargeError):
        pass


def sample_batch(rng: random.Random, codec: str) -> bytes:
    b = RecordBatchBuilder(base_offset=rng.randrange(1 << 40), compression=codec,
                           producer_id=rng.randrange(-1, 1000))
    for i in range(rng.randrange(1, 12)):
        key = None if rng.random() < 0.3 else rng.randbytes(rng.randrange(0, 40))
        value = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(0, 200))
        headers = [(f"h{j}", None if rng.random() < 0.3 else rng.randbytes(rng.randrange(8)))
                   for j in range(rng.randrange(3))]
        b.append(rng.randrange(1 << 42), key, value, headers)
    return b.build()


def fix_crc(data: bytearray) -> bytes:
    if len(data) >= 61:
        struct.pack_into(">I", data, 17, _core.crc32c(bytes(data[21:])))
    return bytes(data)


def fix_length(data: bytearray) -> None:
    if len(data) >= 12:
        struct.pack_into(">i", data, 8, len(data) - 12)


def mutate(rng: random.Random, data: bytes) -> bytes:
    d = bytearray(data)
    if not d:
        return data
    kind = rng.randrange(9) if len(d) >= 61 else rng.choice([0, 1, 8])
    if kind == 0:  # truncate
        return bytes(d[:rng.randrange(len(d))])
    if kind == 1:  # flip bytes anywhere
        for _ in range(rng.randrange(1, 6)):
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        return bytes(d)
    if kind == 2:  # flip bytes in the records section, CRC repaired
        for _ in range(rng.randrange(1, 6)):
            pos = rng.randrange(61, len(d)) if len(d) > 61 else rng.randrange(len(d))
            d[pos] = rng.randrange(256)
        return fix_crc(d)
    if kind == 3:  # lying recordsCount / lastOffsetDelta
        struct.pack_into(">i", d, 57, rng.choice([-1, 0, 1, 2**31 - 1, rng.randrange(100)]))
        struct.pack_into(">i", d, 23, rng.choice([0, 1, 2**31 - 1, rng.randrange(100)]))
        return fix_crc(d)
    if kind == 4:  # lying batchLength
        struct.pack_into(">i", d, 8, rng.choice([-1, 0, 48, 49, 2**31 - 1, rng.randrange(len(d) * 2)]))
        return bytes(d)
    if kind == 5:  # overwrite with a long/overlong varint in the records section
        if len(d) > 62:
            pos = rng.randrange(61, len(d) - 1)
            run = bytes([0xFF] * rng.randrange(1, 12)) + bytes([rng.randrange(128)])
            d[pos:pos + len(run)] = run
        return fix_crc(d)
    if kind == 6:  # cut or grow the records section, length and CRC made consistent
        if rng.random() < 0.5 and len(d) > 61:
            del d[rng.randrange(61, len(d)):]
        else:
            d += rng.randbytes(rng.randrange(1, 20))
        fix_length(d)
        return fix_crc(d)
    if kind == 7:  # random attributes (unknown codecs, flags)
        struct.pack_into(">h", d, 21, rng.randrange(-32768, 32768))
        return fix_crc(d)
    # splice random bytes in the middle
    pos = rng.randrange(len(d))
    d[pos:pos] = rng.randbytes(rng.randrange(1, 30))
    if rng.random() < 0.5:
        fix_length(d)
        return fix_crc(d)
    return bytes(d)


@given(st.binary(max_size=600))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes(data):
    exercise(data)


@given(st.binary(min_size=0, max_size=400), st.integers(0, 4))
@settings(max_examples=200)
def test_random_bytes_behind_a_valid_header(body, codec):
    """Random records sections behind a header that passes every header check."""
    head = bytearray(struct.pack(">qiibIhiqqqhii", 0, 49 + len(body), -1, 2, 0, codec, 3, 0, 0,
                                 -1, -1, -1, 4))
    exercise(fix_crc(head + body))


@given(st.randoms(use_true_random=False), st.sampled_from(CODECS))
@settings(max_examples=300)
def test_mutated_batches(rng, codec):
    data = sample_batch(rng, codec)
    exercise(data)
    for _ in range(5):
        exercise(mutate(rng, data))


@given(st.randoms(use_true_random=False))
@settings(max_examples=100)
def test_mutated_runs_of_batches(rng):
    run = b"".join(sample_batch(rng, rng.choice(CODECS)) for _ in range(3))
    exercise(mutate(rng, run))


@pytest.mark.parametrize("codec", CODECS[1:])
@given(data=st.binary(max_size=300))
@settings(max_examples=150)
def test_decompressors_on_garbage(codec, data):
    try:
        codecs.decompress(codec, data)
    except CorruptRecordError:
        pass


@pytest.mark.parametrize("codec", CODECS[1:])
@given(rng=st.randoms(use_true_random=False))
@settings(max_examples=100)
def test_decompressors_on_mutated_streams(codec, rng):
    plain = rng.randbytes(rng.randrange(2000)) + b"a" * rng.randrange(5000)
    packed = bytearray(codecs.compress(codec, plain))
    for _ in range(rng.randrange(1, 4)):
        packed[rng.randrange(len(packed))] = rng.randrange(256)
    for candidate in (bytes(packed), bytes(packed[:rng.randrange(len(packed) + 1)])):
        try:
            out = codecs.decompress(codec, candidate)
        except CorruptRecordError:
            continue
        assert isinstance(out, bytes)


FUZZ_SECONDS = float(os.environ.get("PYLOG_FUZZ_SECONDS", "120"))


@pytest.mark.long
@pytest.mark.timeout(FUZZ_SECONDS + 120)
def test_long_randomized_fuzz():
    """Mutations of random batches for a fixed time (PYLOG_FUZZ_SECONDS, default 120)."""
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(2**32)))
    print(f"[seed] PYLOG_SEED={seed}")
    rng = random.Random(seed)
    deadline = time.monotonic() + FUZZ_SECONDS
    rounds = 0
    while time.monotonic() < deadline:
        data = sample_batch(rng, rng.choice(CODECS))
        if rng.random() < 0.2:
            data += sample_batch(rng, rng.choice(CODECS))
        for _ in range(20):
            data = mutate(rng, data) if rng.random() < 0.9 or len(data) < 2 else rng.randbytes(100)
            exercise(data)
            if len(data) < 10:
                break
        exercise(rng.randbytes(rng.randrange(1000)))
        rounds += 1
    assert rounds > 0
