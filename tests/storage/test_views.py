"""Zero-copy views outliving the segment state they were read from.

A read hands out views of a memory-mapped ``.log`` file.  Touching a mapped page past
the end of the file is SIGBUS, so the file must never shrink under a live view: not when
a truncation (a replica diverging from its leader) reopens a sealed segment, nor when
the segment is then rolled and trimmed.  Each scenario runs in a child process, so a
regression fails the test with the signal instead of killing the test run.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRELUDE = """
import os, sys
from pylog.storage import Log
from tests.storage.batches import sized_batch
log = Log.open(os.path.join(sys.argv[1], "t-0"), segment_bytes=64 * 1024)
while len(log.segments) < 3:
    log.append(sized_batch(10, 200))
first_end = log.segments[1].base_offset
"""

SCENARIOS = {
    # A view near the end of a sealed segment; truncation inside that segment makes it
    # active again, and a roll seals and trims it.
    "sealed": """
r = log.read(first_end - 5, 1 << 20)
assert r.segment_base_offset == 0 and r.size
log.truncate_to(10)
log.roll()
assert len(bytes(r.records)) == r.size        # readable: zeros or new data, not SIGBUS
log.append(sized_batch(10, 200))
assert len(bytes(r.records)) == r.size
""",
    # A view of the active segment; truncation below it, then a roll.
    "active": """
active = log.segments[-1]
while log.segments[-1] is active and active.size < 40000:
    log.append(sized_batch(10, 200))
r = log.read(log.log_end_offset - 5, 1 << 20)
assert r.segment_base_offset == active.base_offset
log.truncate_to(active.base_offset + 10)
log.roll()
assert len(bytes(r.records)) == r.size
""",
    # A cache small enough to evict sealed segments while their views are alive.
    "evicted": """
views = [log.read(o, 1 << 20) for o in (0, first_end - 5)]
for seg in log.segments[:-1]:
    seg.release()
log.truncate_to(10)
log.roll()
log.append(sized_batch(10, 200))
assert all(len(bytes(v.records)) == v.size for v in views)
""",
}

EPILOGUE = """
# Once the views are gone the trim completes: a sealed segment is exactly its batches.
import gc
for name in [n for n in dir() if n in ("r", "views")]:
    del globals()[name]
gc.collect()
log.segments[0].release()
seg0 = log.segments[0]
assert os.path.getsize(seg0.path) == seg0.size, (os.path.getsize(seg0.path), seg0.size)
log.close()
for seg in log.segments:
    assert os.path.getsize(seg.path) == seg.size
print("ok")
"""


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_views_survive_truncation_and_roll(tmp_path, scenario):
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(SCENARIOS[scenario]) + textwrap.dedent(EPILOGUE)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode < 0:
        pytest.fail(f"child died of {signal.Signals(-proc.returncode).name}: {proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
