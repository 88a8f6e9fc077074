"""A nearly full disk: appends that fit are taken, the first that does not is refused
with KafkaStorageError, and everything acknowledged reads back.

Runs on a real small file system: a 6 MiB tmpfs mounted in a private mount namespace of
a child process (``unshare --mount``, so nothing is mounted outside it, and the mount is
gone with the child).  Segments allocate their blocks 4 MiB ahead; a disk with less than
that left used to refuse every append, even ones that fit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent("""
    import json, sys
    from pylog.errors import KafkaStorageError
    from pylog.storage import Log
    from tests.storage.batches import make_batch

    path = sys.argv[1] + "/t-0"
    log = Log.open(path, segment_bytes=64 << 20)
    value = b"v" * 100_000
    acked, error = 0, None
    while True:
        try:
            log.append(make_batch([value]))
        except KafkaStorageError as exc:
            error = str(exc)
            break
        acked += 1
    read, offset = 0, log.log_start_offset
    while offset < log.log_end_offset:
        r = log.read(offset, max_bytes=1 << 20)
        from pylog import _core
        for b in _core.iter_batches(r.records):   # checks each batch's CRC
            read += sum(1 for rec in b if rec.value == value)
            offset = b.base_offset + b.last_offset_delta + 1
    print(json.dumps({"acked": acked, "read": read, "error": error,
                      "log_end_offset": log.log_end_offset}))
""")


def _can_mount_privately() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


def _run_on_a_small_disk(child: str, tmp_path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``child`` (its argument: the mount point) over a 6 MiB tmpfs of its own;
    returns the process and the JSON of its last output line."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=6m tmpfs {mnt} && cd {ROOT} && "
              f"{sys.executable} -c {_quote(child)} {mnt}")
    out = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    return out, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _can_mount_privately(), reason="needs root and unshare --mount for a private tmpfs")
def test_a_nearly_full_disk_takes_what_fits_and_refuses_the_rest(tmp_path):
    _, got = _run_on_a_small_disk(CHILD, tmp_path)
    assert got["error"] and "no space left" in got["error"]
    # 6 MiB of file system: more than one 4 MiB allocation chunk's worth is taken ...
    assert got["acked"] * 100_000 > 5 * 1024 * 1024, got
    # ... and every acknowledged record reads back, CRC-checked.
    assert got["read"] == got["acked"] == got["log_end_offset"]


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


INDEX_CHILD = textwrap.dedent("""
    import json, logging, os, sys
    from pylog import _core
    from pylog.storage import Log
    from tests.storage.batches import make_batch

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    mnt = sys.argv[1]
    log = Log.open(mnt + "/t-0", segment_bytes=64 << 20)
    log.append(make_batch([b"x" * 100]))         # the segment's first 4 MiB of blocks
    fd = os.open(mnt + "/filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:                               # the disk is full from here on
            os.write(fd, b"f" * 4096)
    except OSError:
        pass
    os.close(fd)
    value = b"v" * 1000
    for _ in range(3000):                         # each a batch; an index entry every ~4 KiB
        log.append(make_batch([value]))
    read = [b.base_offset for b in _core.iter_batches(log.read(1500, max_bytes=1000).records)]
    os.unlink(mnt + "/filler")
    for _ in range(500):
        log.append(make_batch([value]))
    log.close()
    log = Log.open(mnt + "/t-0", segment_bytes=64 << 20)
    n, offset = 0, 0
    while offset < log.log_end_offset:
        for b in _core.iter_batches(log.read(offset, max_bytes=1 << 20).records):
            n += b.records_count
            offset = b.base_offset + b.last_offset_delta + 1
    print(json.dumps({"read_at_1500": read[:1], "records": n, "log_end_offset": log.log_end_offset,
                      "index_entries": len(log.segments[-1].offset_index)}))
""")


@pytest.mark.skipif(not _can_mount_privately(), reason="needs root and unshare --mount for a private tmpfs")
def test_index_entries_on_a_full_disk_are_left_out_not_a_sigbus(tmp_path):
    # The indexes are sparse files written through a mapping: the first write into a page
    # the disk has no block for used to kill the process with SIGBUS.
    out, got = _run_on_a_small_disk(INDEX_CHILD, tmp_path)
    assert got["read_at_1500"] == [1500]
    assert got["records"] == got["log_end_offset"] == 3501
    # Entries came back once there was room again (about one per 4 KiB of the last 500 KB).
    assert 100 <= got["index_entries"] <= 140, got
    assert "index entries were left out for lack of disk space" in out.stderr
