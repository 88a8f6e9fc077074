import os

import pytest

from pylog.storage import Log
from tests.storage.batches import decode


def snapshot(directory) -> dict[str, bytes]:
    """Every file of a directory, name -> bytes."""
    out = {}
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        if os.path.isfile(full):
            with open(full, "rb") as f:
                out[name] = f.read()
    return out


def read_all(log: Log, start: int | None = None, max_bytes: int = 1 << 16):
    """Every record from ``start`` (default: the log start) via read(), decoded."""
    out = []
    offset = log.log_start_offset if start is None else start
    while offset < log.log_end_offset:
        r = log.read(offset, max_bytes)
        assert r.size > 0, (offset, log)
        out.extend(rec for rec in decode(r.records) if rec[0] >= offset)
        offset = r.next_offset
        r.release()
    return out


@pytest.fixture
def log_dir(tmp_path):
    return str(tmp_path / "topic-0")
