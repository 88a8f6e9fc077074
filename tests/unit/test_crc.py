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
