"""lz4.frame is imported on first use, not by ``import pylog`` (#17: it was ~1.4 ms of
``pylog serve``'s start-up, for a codec a server may never see): in a fresh interpreter,
a first lz4 compress and decompress from several threads at once work, and give what
lz4.frame itself reads."""

import subprocess
import sys

_FRESH = r"""
import sys
import threading

import pylog.records
from pylog import codecs

assert not [m for m in sys.modules if m == "lz4" or m.startswith("lz4.")], "imported by pylog"
data = b"pylog " * 50_000
out = [None] * 4
barrier = threading.Barrier(4)

def first_use(i):
    barrier.wait()
    packed = codecs.compress("lz4", data)
    out[i] = (packed, codecs.decompress(codecs.LZ4, packed))

threads = [threading.Thread(target=first_use, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
import lz4.frame

for packed, unpacked in out:
    assert unpacked == data and lz4.frame.decompress(packed) == data
print("ok")
"""


def test_lz4_loads_on_first_use_from_any_thread():
    out = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
