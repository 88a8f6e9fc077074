"""pylog._core loads numpy on first use, not at import (a broker needs it on none of its
paths, and its import was a third of ``pylog serve``'s start-up, #17): the numpy
columns and numpy inputs work the same in a fresh process whichever comes first, numpy
imported by the caller or a column made by pylog."""

import subprocess
import sys

_COLUMNS_FIRST = r"""
import sys
from pylog.records import RecordBatch, RecordBatchBuilder

assert "numpy" not in sys.modules, "imported by pylog._core"
b = RecordBatchBuilder(base_offset=10)
b.append(5, b"k", b"v")
b.append(6, None, b"w")
cols = RecordBatch(bytes(b.build())).columns()
import numpy as np

assert isinstance(cols.offsets, np.ndarray) and cols.offsets.dtype == np.int64
assert cols.offsets.tolist() == [10, 11] and cols.timestamps.tolist() == [5, 6]
assert not cols.offsets.flags.writeable and cols.key_lengths.dtype == np.int32
assert cols.keys() == [b"k", None] and cols.values() == [b"v", b"w"] and cols.value(-1) == b"w"
print("ok")
"""

_NUMPY_FIRST = r"""
import numpy as np
from pylog.records import RecordBatch, RecordBatchBuilder

# An array handed to _core before it made any column of its own: taken as an array.
b = RecordBatchBuilder()
b.append_many([b"a", b"b", b"c"], timestamps=np.array([7, 8, 9], dtype=np.int64))
assert RecordBatch(bytes(b.build())).columns().timestamps.tolist() == [7, 8, 9]
b = RecordBatchBuilder()
try:
    b.append_many([b"a"], timestamps=np.array([1.5]))
except (TypeError, ValueError):
    pass
else:
    raise AssertionError("float timestamps accepted")
print("ok")
"""


def _run(script: str) -> None:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_columns_made_before_numpy_is_imported():
    _run(_COLUMNS_FIRST)


def test_numpy_arrays_given_before_any_column_is_made():
    _run(_NUMPY_FIRST)
