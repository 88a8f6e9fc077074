"""CRC-32C: pylog's three-lane SSE4.2 implementation vs the ``crc32c`` package.

Target: at least 0.9x the package's speed on 1 MiB.  ``python -m benches.bench_crc``
prints the ratios without asv.
"""

from __future__ import annotations

import random

from benches._data import SEED
from pylog import _core

try:
    import crc32c as crc32c_package
except ImportError:  # pragma: no cover - a test dependency
    crc32c_package = None


class Crc32c:
    params = [1024, 64 * 1024, 1024 * 1024]
    param_names = ["size"]

    def setup(self, size):
        self.data = random.Random(SEED).randbytes(size)

    def time_pylog(self, size):
        _core.crc32c(self.data)

    def time_crc32c_package(self, size):
        crc32c_package.crc32c(self.data)


def _ratios() -> None:  # pragma: no cover - a manual report
    import timeit

    bench = Crc32c()
    for size in Crc32c.params:
        bench.setup(size)
        number = max(10, (64 << 20) // size)
        ours = min(timeit.repeat(lambda: bench.time_pylog(size), number=number, repeat=7)) / number
        theirs = min(timeit.repeat(lambda: bench.time_crc32c_package(size), number=number, repeat=7)) / number
        print(f"{size:8d} B  pylog {size / ours / 1e9:6.2f} GB/s  crc32c {size / theirs / 1e9:6.2f} GB/s"
              f"  ratio {theirs / ours:5.2f}x")


if __name__ == "__main__":  # pragma: no cover
    _ratios()
