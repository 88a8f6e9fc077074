import os

import crc32c as crc32c_oracle
import pytest
from hypothesis import given, strategies as st

from pylog import _core


def test_known_vector():
    # RFC 3720 check value for "123456789".
    assert _core.crc32c(b"123456789") == 0xE3069283


@given(st.binary(max_size=4096), st.integers(0, 2**32 - 1))
def test_matches_crc32c_package(data, start):
    assert _core.crc32c(data, start) == crc32c_oracle.crc32c(data, start)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 63, 64, 65, 4095, 65536, 65537, 1 << 20])
def test_sizes_and_alignment(size):
    data = os.urandom(size + 8)
    for shift in range(8):
        view = memoryview(data)[shift:shift + size]
        assert _core.crc32c(view) == crc32c_oracle.crc32c(bytes(view))


def test_incremental():
    data = os.urandom(10000)
    assert _core.crc32c(data[5000:], _core.crc32c(data[:5000])) == _core.crc32c(data)


# The crc32-instruction path cuts buffers into three lanes of 8 KiB, then of 256 bytes, and joins
# the lane CRCs with tabulated shifts: probe every boundary of that scheme.
LANE_SIZES = sorted({n + d for n in (768, 1536, 24576, 49152, 24576 + 768, 3 * 8192 * 5)
                     for d in (-9, -8, -1, 0, 1, 7, 8, 9)})


@pytest.mark.parametrize("size", LANE_SIZES)
def test_lane_boundaries(size):
    data = os.urandom(size + 3)
    for shift in (0, 3):
        view = memoryview(data)[shift:shift + size]
        assert _core.crc32c(view) == crc32c_oracle.crc32c(bytes(view))
        assert _core.crc32c(view, 0xDEADBEEF) == crc32c_oracle.crc32c(bytes(view), 0xDEADBEEF)
        # _core.crc32c folds these sizes when the CPU can: check the lane path itself too
        lanes = _core._crc32c_by("lanes", view, 0xDEADBEEF)
        assert lanes in (None, crc32c_oracle.crc32c(bytes(view), 0xDEADBEEF))


@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1))
def test_portable_fallback_matches(data, start):
    assert _core._crc32c_portable(data, start) == crc32c_oracle.crc32c(data, start)


def test_portable_fallback_large():
    data = os.urandom(100_003)
    assert _core._crc32c_portable(data) == crc32c_oracle.crc32c(data)


def test_crc_of_all_zero_lanes():
    data = bytes(3 * 8192 * 2 + 777)
    assert _core.crc32c(data) == crc32c_oracle.crc32c(data)


# Folding (VPCLMULQDQ) takes buffers of 272 bytes and more, 256 bytes a round, then
# 16-byte chunks, then a tail of under 16 bytes: probe every boundary, with and without a
# starting CRC, against the oracle and against the other implementations.
FOLD_SIZES = sorted({n + d for n in (272, 512, 528, 768, 1024, 4096, 16384, 16384 + 61)
                     for d in (-17, -16, -15, -1, 0, 1, 15, 16, 17)})


@pytest.mark.parametrize("size", FOLD_SIZES)
def test_implementations_agree(size):
    data = os.urandom(size + 5)
    for shift in (0, 5):
        view = memoryview(data)[shift:shift + size]
        for start in (0, 0xDEADBEEF):
            expected = crc32c_oracle.crc32c(bytes(view), start)
            assert _core.crc32c(view, start) == expected
            for impl in ("portable", "lanes", "fold"):
                got = _core._crc32c_by(impl, view, start)
                assert got in (None, expected), (impl, size, shift, start)
    assert _core._crc32c_by("portable", data) is not None


@given(st.binary(min_size=272, max_size=5000), st.integers(0, 2**32 - 1))
def test_fold_matches_oracle(data, start):
    got = _core._crc32c_by("fold", data, start)
    assert got is None or got == crc32c_oracle.crc32c(data, start)


def test_implementation_named_and_switchable():
    # The environment switch turns folding off in a fresh process (read once at import).
    import subprocess
    import sys
    code = "from pylog import _core; print(_core.crc32c_implementation())"
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert here.stdout.strip() == _core.crc32c_implementation()
    assert here.stdout.strip() in ("fold", "lanes", "portable")
    env = dict(os.environ, PYLOG_CRC32C_NO_FOLD="1")
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert off.stdout.strip() in ("lanes", "portable")
    with pytest.raises(ValueError):
        _core._crc32c_by("nonsense", b"x")
