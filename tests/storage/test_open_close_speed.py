"""Behaviour of the fast open and close of a broker's data directory (issue #17, #13):
partitions found clean load on first use or in the loader thread, a partition untouched
since the open writes nothing at close, and a SIGKILL anywhere in a close of many
partitions loses no acknowledged record and reports no damage that is not there.

(Speed itself is measured by benches/bench_open_close.py, not asserted here.)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys

import pytest

import pylog
from pylog.broker.core import Broker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPIC = "wide"
MARKER = ".kafka_cleanshutdown"


def _make(path: str, partitions: int) -> None:
    """A cleanly closed data dir: topic ``wide``, record ``first-<i>`` at offset 0 of
    partition i, written by an idempotent producer (one producer snapshot each)."""
    with pylog.open(path, background=False) as client:
        client.create_topic(TOPIC, partitions)
        with client.producer(linger_ms=0, acks="all") as p:
            for i in range(partitions):
                p.send(TOPIC, b"first-%d" % i, partition=i)
            p.flush()


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("open-close") / "base")
    _make(path, 40)
    return path


def _copy(src: str, tmp_path, name: str = "data") -> str:
    dst = str(tmp_path / name)
    shutil.copytree(src, dst)
    return dst


def _snapshot_state(path: str) -> dict[str, tuple[int, int]]:
    """Every file under the partitions' directories: (size, mtime_ns)."""
    out = {}
    for d in os.listdir(path):
        full = os.path.join(path, d)
        if d.startswith(TOPIC + "-") and os.path.isdir(full):
            for f in os.listdir(full):
                st = os.stat(os.path.join(full, f))
                out[f"{d}/{f}"] = (st.st_size, st.st_mtime_ns)
    return out


def test_clean_open_serves_every_partition_and_its_producer_state(clean_dir, tmp_path):
    path = _copy(clean_dir, tmp_path)
    b = Broker(path, background=False)
    try:
        assert b.had_clean_shutdown
        # First use loads a partition (whether or not the loader thread got there first).
        for i in (39, 0, 17):
            assert b.log_offsets(TOPIC, i) == (0, 1)
        assert b.wait_loaded(60)
        assert b.logs.deferred_count == 0
        assert all(part.loaded for part in b._topics[TOPIC].partitions)
        # The producer state came back with the partitions: the producer's ids are known.
        pids = {pid for part in b._topics[TOPIC].partitions for pid in part.producers.producers}
        assert len(pids) == 1
        # A new producer id is above every id the deferred partitions held.
        assert b.init_producer_id().producer_id > max(pids)
    finally:
        b.close()
    with Broker(path, background=False) as b:
        assert b.had_clean_shutdown


def test_loader_started_later_or_never(clean_dir, tmp_path):
    # A server opens its broker with start_loader=False and starts the loads once it
    # listens (#17): until then a partition loads on first use; never started, the broker
    # still closes cleanly with its deferred partitions as they were.
    path = _copy(clean_dir, tmp_path)
    b = Broker(path, background=False, start_loader=False)
    try:
        n = b.logs.deferred_count
        assert n == 40 and not b.wait_loaded(0)
        assert b.log_offsets(TOPIC, 7) == (0, 1) and b.logs.deferred_count == n - 1
        b.start_loading()
        b.start_loading()
        assert b.wait_loaded(60) and b.logs.deferred_count == 0
    finally:
        b.close()
    b = Broker(path, background=False, start_loader=False)
    b.close()
    assert b.wait_loaded(0)
    b.start_loading()                       # closed: nothing starts
    with Broker(path, background=False) as b:
        assert b.had_clean_shutdown and b.wait_loaded(60)
        assert [b.log_offsets(TOPIC, i) for i in range(40)] == [(0, 1)] * 40


def test_a_server_loads_its_deferred_partitions_once_it_listens(clean_dir, tmp_path):
    from pylog.server.config import ServerConfig
    from pylog.server.server import ServerThread

    path = _copy(clean_dir, tmp_path)
    with ServerThread(ServerConfig(log_dirs=path, listeners="127.0.0.1:0")) as st:
        assert st.server.broker.wait_loaded(60) and st.server.broker.logs.deferred_count == 0


def test_producer_ids_stay_unique_when_the_registry_is_behind_deferred_partitions(clean_dir, tmp_path):
    path = _copy(clean_dir, tmp_path)
    import json

    reg_path = os.path.join(path, "topic-metadata.json")
    with open(reg_path, "rb") as f:
        doc = json.loads(f.read())
    doc["producer_id_block_end"] = 0          # as an adopted or damaged registry
    with open(reg_path, "w") as f:
        json.dump(doc, f)
    with Broker(path, background=False) as b:
        held = {pid for part in b._topics[TOPIC].partitions for pid in part.producers.producers}
        assert b.init_producer_id().producer_id > max(held)


def test_unclean_open_loads_every_partition_before_it_returns(clean_dir, tmp_path):
    path = _copy(clean_dir, tmp_path)
    os.unlink(os.path.join(path, MARKER))
    with Broker(path, background=False) as b:
        assert not b.had_clean_shutdown
        assert b.logs.deferred_count == 0
        assert all(part.loaded for part in b._topics[TOPIC].partitions)


def test_close_of_untouched_partitions_writes_nothing_to_them(clean_dir, tmp_path):
    path = _copy(clean_dir, tmp_path)
    before = _snapshot_state(path)
    with Broker(path, background=False) as b:
        b.wait_loaded(60)
    after = _snapshot_state(path)
    # The same files; the producer snapshots and leader-epoch checkpoints untouched
    # (the active segment's files are trimmed back to the same size they had).
    assert sorted(after) == sorted(before)
    for name, (size, mtime) in before.items():
        assert after[name][0] == size, name
        if name.endswith((".snapshot", "leader-epoch-checkpoint")):
            assert after[name][1] == mtime, name


def test_close_of_touched_partitions_snapshots_them(clean_dir, tmp_path):
    path = _copy(clean_dir, tmp_path)
    with pylog.open(path, background=False) as client:
        with client.producer(linger_ms=0, acks="all") as p:
            p.send(TOPIC, b"second", partition=3).result()
    names = os.listdir(os.path.join(path, f"{TOPIC}-3"))
    assert "00000000000000000002.snapshot" in names
    assert not [n for n in names if n.endswith(".tmp")]
    assert "00000000000000000002.snapshot" not in os.listdir(os.path.join(path, f"{TOPIC}-4"))
    with Broker(path, background=False) as b:
        assert b.had_clean_shutdown
        assert b.log_offsets(TOPIC, 3) == (0, 2)


def test_a_topic_deleted_before_its_partitions_load_stays_deleted(clean_dir, tmp_path):
    path = _copy(clean_dir, tmp_path)
    with Broker(path, background=False) as b:
        b.delete_topic(TOPIC)
        assert b.wait_loaded(60)
        assert not b.has_topic(TOPIC)
    assert not [d for d in os.listdir(path) if d.startswith(TOPIC + "-") and not d.endswith("-delete")]
    with Broker(path, background=False) as b:
        assert not b.has_topic(TOPIC)


# -- SIGKILL in the middle of a close -------------------------------------------------------

KILL_POINTS = ["logs:1", "logs:{half}", "syncfs", "rename:{quarter}", "checkpoint"]


def _crash_close(base: str, tmp_path, partitions: int, kill_point: str, caplog) -> None:
    path = _copy(base, tmp_path, "crash")
    point = kill_point.format(half=partitions // 2, quarter=max(1, partitions // 4))
    proc = subprocess.run([sys.executable, "-m", "tests.storage.crash_closer", path, point],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stdout.splitlines()
    assert "closing" in lines, proc.stdout[-2000:]
    acked = {}
    for line in lines:
        if line.startswith("acked "):
            _, p, off, value = line.split()
            acked[int(p)] = (int(off), value.encode())
    assert len(acked) == (partitions + 1) // 2
    assert not os.path.exists(os.path.join(path, MARKER))     # the marker comes last
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pylog"):
        with Broker(path, background=False) as b, _reader(b) as read:
            assert not b.had_clean_shutdown
            for i in range(partitions):
                want = {0: b"first-%d" % i}
                if i in acked:
                    want[acked[i][0]] = acked[i][1]
                got = read(i)
                assert got == want, (i, got, want)
                assert b.log_offsets(TOPIC, i)[1] == max(want) + 1
    damage = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not damage, damage[:5]


class _reader:
    """``read(partition)`` -> {offset: value} of every record, through the embedded client."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def __enter__(self):
        from pylog.client import Client, EmbeddedTransport

        self.client = Client(EmbeddedTransport(self.broker, owns_broker=False))
        return self.read

    def read(self, partition: int) -> dict[int, bytes]:
        with self.client.consumer(enable_auto_commit=False, auto_offset_reset="earliest") as c:
            c.assign([(TOPIC, partition)])
            c.seek((TOPIC, partition), 0)
            end = self.broker.log_offsets(TOPIC, partition)[1]
            out = {}
            while len(out) < end:
                for r in c.poll(timeout_ms=1000):
                    out[r.offset] = r.value
            return out

    def __exit__(self, *exc) -> None:
        self.client.close()


@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_sigkill_in_the_middle_of_a_close_loses_nothing_acknowledged(clean_dir, tmp_path, kill_point, caplog):
    _crash_close(clean_dir, tmp_path, 40, kill_point, caplog)


@pytest.fixture(scope="module")
def clean_dir_1000(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("open-close-1000") / "base")
    _make(path, 1000)
    return path


@pytest.mark.long
@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_sigkill_in_the_middle_of_a_1000_partition_close(clean_dir_1000, tmp_path, kill_point, caplog):
    _crash_close(clean_dir_1000, tmp_path, 1000, kill_point, caplog)


def test_standalone_manager_defers_clean_logs_until_used(clean_dir, tmp_path):
    from pylog.storage import LogManager

    path = _copy(clean_dir, tmp_path)
    with LogManager(path, defer_clean_loads=True) as m:
        n = len(m)
        assert m.deferred_count == n == len(m.topic_partitions())
        assert m.logs() == {}
        assert m.get_log(TOPIC, 5).log_end_offset == 1        # loaded on first use
        assert m.deferred_count == n - 1 and m.load_deferred() == n - 1
        assert m.deferred_count == 0 and len(m.logs()) == n


_SERVE_WITHOUT_NUMPY = r"""
import sys

import pylog.cli, pylog.server.handlers, pylog.server.server   # what `pylog serve` imports
from pylog.broker.core import Broker
from pylog.records import RecordBatchBuilder

b = Broker(sys.argv[1])
opened = "numpy" in sys.modules
assert b.wait_loaded(60)
builder = RecordBatchBuilder()
builder.append(1, None, b"second")
assert b.produce("wide", 3, bytes(builder.build()), acks=1).error_code == 0
fetched = b.fetch("wide", 3, 0)
assert fetched.error_code == 0 and fetched.high_watermark == 2, fetched
b.close()
print(opened, "numpy" in sys.modules)
"""


def test_a_broker_opens_loads_and_serves_without_importing_numpy(clean_dir, tmp_path):
    # numpy's import was a third of `pylog serve`'s start-up (#17): the broker's open,
    # its deferred loads (indexes included), produce and fetch must not need it.
    path = _copy(clean_dir, tmp_path)
    out = subprocess.run([sys.executable, "-c", _SERVE_WITHOUT_NUMPY, path], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.bench
def test_bench_open_close_smoke(monkeypatch, tmp_path):
    import importlib

    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    monkeypatch.syspath_prepend(ROOT)
    sys.modules.pop("benches.bench_open_close", None)
    bench = importlib.import_module("benches.bench_open_close")
    try:
        assert bench.COUNTS == [10]
        figures = bench.measure(10)
        assert set(figures) == {"open_clean", "open_clean_until_served", "open_unclean", "close_untouched",
                                "close_touched"}
        root = bench.OpenClose().setup_cache()
        try:
            for cls in (bench.OpenClose, bench.Close, bench.CloseTouched):
                for name in [n for n in dir(cls) if n.startswith("time_")]:
                    b = cls()
                    b.setup(root, 10)
                    try:
                        getattr(b, name)(root, 10)
                    finally:
                        b.teardown(root, 10)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    finally:
        sys.modules.pop("benches.bench_open_close", None)
