"""LogManager opens and recovers logs in ``recovery_threads`` threads (Kafka's
``num.recovery.threads.per.data.dir``, issue #17): after an unclean shutdown every log
ends up exactly as a one-thread open leaves it (torn tails cut, zero tails trimmed,
segments after damage dropped), the work runs in the recovery threads, a log that fails
to open fails the whole open with every file released, and the setting reaches the
LogManager from the broker and from ``pylog serve``'s config.

(The speed-up is measured by benches/bench_scale.py ``UncleanOpen``, not asserted here.)
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from pylog.broker.core import Broker
from pylog.errors import InvalidConfigError, KafkaStorageError
from pylog.server._core_adapter import broker_config_for
from pylog.server.config import ServerConfig
from pylog.storage import LogConfig, LogManager
from pylog.storage.log import CLEAN_SHUTDOWN_FILE, Log
from tests.storage.batches import make_batch
from tests.storage.conftest import read_all

PARTITIONS = 12


def _segment_files(path: str) -> list[str]:
    return sorted(f for f in os.listdir(path) if f.endswith(".log"))


@pytest.fixture(scope="module")
def unclean_dir(tmp_path_factory) -> str:
    """PARTITIONS logs of several segments each, closed, then the marker removed (a
    crash), with damage of a different kind in some of them."""
    path = str(tmp_path_factory.mktemp("unclean") / "data")
    with LogManager(path, config=LogConfig(segment_bytes=600)) as m:
        for p in range(PARTITIONS):
            log = m.get_or_create_log("wide", p)
            for i in range(8 + p):
                log.append(make_batch([b"p%d-r%d-%d" % (p, i, j) for j in range(3)]))
    os.unlink(os.path.join(path, CLEAN_SHUTDOWN_FILE))
    for p, damage in ((1, "torn"), (4, "zeros"), (7, "garbage"), (10, "middle")):
        d = os.path.join(path, f"wide-{p}")
        segs = _segment_files(d)
        last = os.path.join(d, segs[-1])
        if damage == "torn":
            size = os.path.getsize(last)
            os.truncate(last, size - 5)
        elif damage == "zeros":
            with open(last, "ab") as f:
                f.write(b"\0" * 4096)
        elif damage == "garbage":
            with open(last, "ab") as f:
                f.write(b"\x07" * 300)
        else:
            # A flipped byte in a sealed segment past the recovery point: recovery cuts
            # there and drops the segments after it.
            first = os.path.join(d, segs[-2])
            with open(first, "r+b") as f:
                f.seek(70)
                b = f.read(1)
                f.seek(70)
                f.write(bytes([b[0] ^ 0xFF]))
    # Recovery points at 0: every segment of every log is rescanned.
    with open(os.path.join(path, "recovery-point-offset-checkpoint"), "w") as f:
        f.write("0\n0\n")
    return path


def _state(m: LogManager) -> dict:
    out = {}
    for (topic, p), log in sorted(m.logs().items()):
        out[(topic, p)] = (log.log_start_offset, log.log_end_offset,
                           [s.base_offset for s in log.segments], read_all(log),
                           sorted((r.base_offset, r.valid_bytes, r.reason is not None) for r in log.recovered))
    return out


def test_parallel_unclean_open_recovers_every_log_as_one_thread_does(unclean_dir, tmp_path, monkeypatch):
    one, many = str(tmp_path / "one"), str(tmp_path / "many")
    shutil.copytree(unclean_dir, one)
    shutil.copytree(unclean_dir, many)
    with LogManager(one, config=LogConfig(segment_bytes=600), recovery_threads=1) as m:
        assert not m.had_clean_shutdown
        expected = _state(m)

    opened_in = set()
    real_open = Log.open.__func__

    def spying_open(cls, path, **kw):
        opened_in.add(threading.current_thread().name)
        return real_open(cls, path, **kw)

    monkeypatch.setattr(Log, "open", classmethod(spying_open))
    with LogManager(many, config=LogConfig(segment_bytes=600), recovery_threads=5) as m:
        got = _state(m)
    assert got == expected
    assert len(got) == PARTITIONS
    # The damage was found and cut in both: a torn tail, garbage, a flipped byte.
    for p in (1, 7, 10):
        assert any(reason for _b, _v, reason in got[("wide", p)][4]), p
    # Partition 10 lost the segments after its flipped byte; the others kept all theirs.
    assert len(got[("wide", 10)][2]) < len(got[("wide", 9)][2])
    # Every log was opened by a recovery thread, none by the caller's.
    assert opened_in and all(name.startswith("pylog-log-recovery") for name in opened_in), opened_in


def test_a_log_that_fails_to_open_fails_the_open_and_releases_everything(unclean_dir, tmp_path, monkeypatch):
    path = str(tmp_path / "data")
    shutil.copytree(unclean_dir, path)
    real_open = Log.open.__func__

    def failing_open(cls, p, **kw):
        if p.endswith("wide-5"):
            raise KafkaStorageError(f"{p}: injected failure")
        return real_open(cls, p, **kw)

    fds = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(Log, "open", classmethod(failing_open))
    with pytest.raises(KafkaStorageError, match="wide-5: injected failure"):
        LogManager(path, recovery_threads=4)
    # The logs opened before the failure were closed, the directory's lock released.
    assert len(os.listdir("/proc/self/fd")) == fds
    monkeypatch.undo()
    with LogManager(path, recovery_threads=4) as m:
        assert len(m) == PARTITIONS


def test_recovery_threads_setting_reaches_the_log_manager(tmp_path):
    with pytest.raises(InvalidConfigError, match="recovery_threads"):
        LogManager(str(tmp_path / "bad"), recovery_threads=0)
    b = Broker(str(tmp_path / "broker"), background=False, num_recovery_threads_per_data_dir=3)
    try:
        assert b.logs.recovery_threads == 3
    finally:
        b.close()
    with pytest.raises(InvalidConfigError, match="num_recovery_threads_per_data_dir"):
        Broker(str(tmp_path / "broker"), background=False, num_recovery_threads_per_data_dir=0)
    cfg = ServerConfig.from_kafka({"num.recovery.threads.per.data.dir": "5"}, warn=False)
    assert broker_config_for(cfg).num_recovery_threads_per_data_dir == 5
    assert ServerConfig().num_recovery_threads_per_data_dir == 8
    with pytest.raises(InvalidConfigError, match="num.recovery.threads.per.data.dir"):
        ServerConfig.from_kafka({"num.recovery.threads.per.data.dir": "0"}, warn=False)
