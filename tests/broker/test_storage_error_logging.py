"""A full disk is answered with KAFKA_STORAGE_ERROR and logged once, then once more
when it clears, never per request.

The failure is real, not simulated in Python: a child process lowers its file size limit
(RLIMIT_FSIZE, with SIGXFSZ ignored) below the end of the active segment, so the
segment's ``pwritev`` fails in C exactly where a full disk fails it (EFBIG instead of
ENOSPC), then raises the limit again.  A second test covers a bare OSError raised in
Python (ENOSPC while a roll creates the next segment file).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from pylog import _core
from pylog.broker.core import Broker

resource = pytest.importorskip("resource")

CHILD = textwrap.dedent('''
    import json, logging, resource, signal, sys
    from pylog import _core
    from pylog.broker.core import Broker

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def batch(i):
        b = _core.RecordBatchBuilder()
        b.append(None, None, b"%04d" % i + b"x" * 4096)   # above the memcpy threshold: pwritev
        return b.build()

    codes = []
    with Broker(sys.argv[1], background=False, offsets_topic_num_partitions=1) as broker:
        broker.create_topic("t")
        codes.append(broker.produce("t", 0, batch(0)).error_code)
        log = broker.logs.get_log("t", 0)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (log.active_segment.size, hard))
        for i in range(1, 6):
            codes.append(broker.produce("t", 0, batch(i)).error_code)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        for i in range(6, 9):
            codes.append(broker.produce("t", 0, batch(i)).error_code)
        hw = broker.high_watermark("t", 0)
    print(json.dumps({"codes": codes, "hw": hw}))
''')


def test_a_disk_full_is_logged_once_and_once_more_when_it_clears(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["codes"] == [0, 56, 56, 56, 56, 56, 0, 0, 0]   # KAFKA_STORAGE_ERROR while full
    assert out["hw"] == 4
    lines = proc.stderr.splitlines()
    failing = [x for x in lines if "appends to" in x and " fail " in x]
    cleared = [x for x in lines if "succeed again" in x]
    assert len(failing) == 1, proc.stderr
    assert failing[0].startswith("ERROR pylog.broker ") and "t-0" in failing[0]
    assert os.path.join(str(data), "t-0") in failing[0] and "File too large" in failing[0]
    assert len(cleared) == 1 and cleared[0].startswith("WARNING pylog.broker ") and "t-0" in cleared[0]
    assert "offset 1" in cleared[0]
    # What was refused is not in the log; what was acknowledged is.
    with Broker(data, background=False, offsets_topic_num_partitions=1) as broker:
        res = broker.fetch("t", 0, 0, 1 << 20)
        values = [r.value[:4] for b in _core.iter_batches(res.records.records) for r in b]
    assert values == [b"0000", b"0006", b"0007", b"0008"]


def test_a_failed_roll_is_a_storage_error_with_its_errno_logged_once(tmp_path, monkeypatch, caplog):
    import pylog.storage.log as logmod

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    caplog.set_level(logging.INFO, logger="pylog")
    with Broker(tmp_path / "d", background=False, offsets_topic_num_partitions=1) as broker:
        broker.create_topic("t", config={"segment.bytes": 2048})
        b = _core.RecordBatchBuilder()
        b.append(None, None, b"x" * 1200)
        big = b.build()
        assert broker.produce("t", 0, big).error_code == 0
        monkeypatch.setattr(logmod.LogSegment, "create", no_space)
        results = [broker.produce("t", 0, big) for _ in range(4)]
        monkeypatch.undo()
    assert [r.error_code for r in results] == [56] * 4
    assert "No space left on device" in results[0].error_message
    failing = [r for r in caplog.records if "fail" in r.getMessage() and "appends to" in r.getMessage()]
    assert len(failing) == 1 and failing[0].levelno == logging.ERROR
    assert "errno ENOSPC" in failing[0].getMessage() and "t-0" in failing[0].getMessage()
