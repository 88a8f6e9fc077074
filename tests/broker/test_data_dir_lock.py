"""One owner per data directory: a second open, in this process or another, is refused
with a message naming the holder; closing (or a failed open) gives the directory back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

import pylog
from pylog import _core
from pylog.errors import DataDirInUseError, KafkaStorageError
from pylog.storage import LogManager
from pylog.storage.dir_lock import DataDirLock


def _batch(value: bytes) -> bytes:
    b = _core.RecordBatchBuilder()
    b.append(None, None, value)
    return b.build()


def _values(broker, topic="t", partition=0) -> list[bytes]:
    out, offset = [], 0
    while True:
        res = broker.fetch(topic, partition, offset)
        res.raise_for_error()
        if res.records.size == 0:
            return out
        for b in _core.iter_batches(res.records.records):
            out.extend(r.value for r in b)
        offset = res.records.next_offset


def test_second_embedded_open_in_one_process_is_refused_and_loses_nothing(tmp_path):
    d = str(tmp_path / "d")
    first = pylog.Broker.open(d, background=False, offsets_topic_num_partitions=1)
    try:
        first.create_topic("t")
        assert first.produce("t", 0, _batch(b"one")).base_offset == 0
        with pytest.raises(DataDirInUseError, match="already open in this process") as info:
            pylog.Broker.open(d, background=False, offsets_topic_num_partitions=1)
        assert "pylog broker" in str(info.value) and "\n" not in str(info.value)
        assert info.value.error_code == 56          # KAFKA_STORAGE_ERROR
        # The refused open changed nothing: the first broker goes on at the next offset.
        assert first.produce("t", 0, _batch(b"two")).base_offset == 1
    finally:
        first.close()
    with pylog.Broker.open(d, background=False, offsets_topic_num_partitions=1) as again:
        assert _values(again) == [b"one", b"two"]


def test_the_same_directory_by_another_path_is_the_same_directory(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(d, tmp_path / "alias", target_is_directory=True)
    with LogManager(str(d)):
        with pytest.raises(DataDirInUseError):
            LogManager(str(tmp_path / "alias"))
        with pytest.raises(DataDirInUseError):
            LogManager(str(d / "." / ""))
        with pytest.raises(DataDirInUseError):   # a broker and a bare manager conflict too
            pylog.Broker.open(str(d), background=False)


def test_flock_alone_excludes_a_second_descriptor_in_this_process(tmp_path):
    """The registry gives the clear message; the flock underneath holds too (two open()
    calls are two open file descriptions, which flock, unlike lockf, keeps apart)."""
    import fcntl

    lock = DataDirLock.acquire(str(tmp_path), "test")
    try:
        fd = os.open(str(tmp_path / ".lock"), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        lock.release()
    lock.release()                          # idempotent
    DataDirLock.acquire(str(tmp_path), "test").release()


def test_racing_threads_one_wins(tmp_path):
    d = str(tmp_path / "d")
    barrier = threading.Barrier(4)
    won, refused = [], []

    def opener() -> None:
        barrier.wait()
        try:
            won.append(LogManager(d))
        except DataDirInUseError:
            refused.append(1)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 3
    won[0].close()


def test_a_failed_open_gives_the_directory_back(tmp_path):
    d = tmp_path / "d"
    LogManager(str(d), node_id=1).close()
    with pytest.raises(KafkaStorageError, match="belongs to node 1"):
        LogManager(str(d), node_id=2)
    with pytest.raises(KafkaStorageError, match="belongs to node 1"):
        pylog.Broker.open(str(d), node_id=2, background=False)
    LogManager(str(d), node_id=1).close()     # not held by the failed opens


def test_close_releases_even_when_it_fails(tmp_path, monkeypatch):
    d = str(tmp_path / "d")
    mgr = LogManager(d)
    mgr.get_or_create_log("t", 0)

    def fail(self) -> None:
        raise KafkaStorageError("disk gone")

    monkeypatch.setattr(LogManager, "checkpoint", fail)
    with pytest.raises(KafkaStorageError, match="disk gone"):
        mgr.close()
    monkeypatch.undo()
    again = LogManager(d)
    assert not again.had_clean_shutdown       # no marker was written: it recovers
    again.close()


_HOLDER = textwrap.dedent("""
    import sys
    import pylog
    b = pylog.Broker.open(sys.argv[1], background=False, offsets_topic_num_partitions=1)
    print("ready", flush=True)
    sys.stdin.read()
    b.close()
""")


def test_another_process_holding_it_is_named(tmp_path):
    d = str(tmp_path / "d")
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, d], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(DataDirInUseError, match="in use by another process") as info:
            pylog.Broker.open(d, background=False)
        assert f"pid={proc.pid}" in str(info.value)
    finally:
        proc.stdin.close()
        assert proc.wait(60) == 0
        proc.stdout.close()
    with pylog.Broker.open(d, background=False, offsets_topic_num_partitions=1) as b:
        assert b.had_clean_shutdown
