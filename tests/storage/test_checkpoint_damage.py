"""Outside damage to the small files of a data directory: the checkpoints, the leader
epoch cache, producer snapshots, ``meta.properties`` and the topic registry.

For each file kind x {flip a byte, truncate, append garbage, replace with non-UTF-8
bytes, delete} x {closed cleanly, crashed}: reopen and check that no acknowledged record
is lost, nothing corrupt is read, the log says what happened (a WARN naming the file), and
the broker either works (and keeps what it is given next) or refuses to open with a
one-line KafkaStorageError naming the file.
"""

from __future__ import annotations

import glob
import logging
import os

import pytest

import pylog
from pylog import _core
from pylog.errors import KafkaStorageError
from pylog.storage import LogConfig, LogManager
from pylog.storage.checkpoint import (CheckpointFile, CorruptCheckpointError, read_properties,
                                      write_properties)
from tests.storage.batches import make_batch
from tests.storage.conftest import read_all

T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        return self.t


def _batch(values, *, pid=-1, epoch=-1, seq=-1, keys=None) -> bytes:
    b = _core.RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    for i, v in enumerate(values):
        b.append(T0, None if keys is None else keys[i], v)   # the fake clock's time
    return b.build()


def _read(broker, topic, partition) -> dict[int, bytes]:
    """Every record readable, by offset; iter_batches checks each batch's CRC."""
    out, offset = {}, broker.log_offsets(topic, partition)[0]
    while True:
        res = broker.fetch(topic, partition, offset)
        res.raise_for_error()
        if res.records.size == 0:
            return out
        for b in _core.iter_batches(res.records.records):
            for r in b:
                out[r.offset] = (r.key, r.value)
        offset = res.records.next_offset


def _open(d, clock):
    return pylog.Broker.open(d, background=False, offsets_topic_num_partitions=1, clock=clock)


class Written:
    """What a filled data directory holds: acknowledged records, the last idempotent batch."""

    def __init__(self) -> None:
        self.acked: dict[tuple[str, int], dict[int, tuple]] = {}
        self.log_start: dict[tuple[str, int], int] = {}
        self.last_batch: bytes = b""
        self.cluster_id = ""


def _fill(d: str, clock: Clock, clean: bool) -> Written:
    w = Written()
    b = _open(d, clock)
    w.cluster_id = b.cluster_id
    b.create_topic("t", 2, config={"segment.bytes": "1024"})
    b.create_topic("c", 1, config={"cleanup.policy": "compact", "segment.bytes": "1024",
                                   "min.cleanable.dirty.ratio": "0.01"})
    pid = b.init_producer_id().producer_id
    seqs = {0: 0, 1: 0}
    for i in range(60):
        p = i % 2
        raw = _batch([b"v%03d-%d" % (i, j) for j in range(3)], pid=pid, epoch=0, seq=seqs[p])
        seqs[p] += 3
        res = b.produce("t", p, raw)
        res.raise_for_error()
        for j in range(3):
            w.acked.setdefault(("t", p), {})[res.base_offset + j] = (None, b"v%03d-%d" % (i, j))
        if p == 0:
            w.last_batch = raw
    assert b.delete_records("t", 1, 6) == 6
    for i in range(120):
        res = b.produce("c", 0, _batch([b"c%03d" % i], keys=[b"k%d" % (i % 5)]))
        res.raise_for_error()
    clock.t += 10_000
    b.cleaner.clean_once(clock.t)
    w.log_start[("t", 1)] = b.log_offsets("t", 1)[0]
    b._snapshot_rolled()          # what the background thread does after a roll
    b.logs.flush()
    assert glob.glob(os.path.join(d, "t-0", "*.snapshot")), "a rolled segment leaves a producer snapshot"
    assert os.path.exists(os.path.join(d, "cleaner-offset-checkpoint"))
    if clean:
        b.close()
    else:
        # A crash: nothing more is written, the lock goes with the "process".
        for log in b.logs.logs().values():
            log._closed = True
        b.logs._dir_lock.release()
    return w


def _latest_by_key(records: dict[int, tuple]) -> dict[bytes, bytes]:
    out = {}
    for off in sorted(records):
        k, v = records[off]
        out[k] = v
    return out


FILES = ["recovery-point-offset-checkpoint", "log-start-offset-checkpoint", "cleaner-offset-checkpoint",
         "leader-epoch-checkpoint", "producer-snapshot", "meta.properties", "topic-metadata.json"]
DAMAGE = ["flip", "truncate", "append", "non_utf8", "delete"]


def _path(d: str, kind: str) -> str:
    if kind == "leader-epoch-checkpoint":
        return os.path.join(d, "t-0", kind)
    if kind == "producer-snapshot":
        return sorted(glob.glob(os.path.join(d, "t-0", "*.snapshot")))[-1]
    return os.path.join(d, kind)


def _damage(path: str, how: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    if how == "flip":
        i = len(data) // 2
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    elif how == "truncate":
        data = data[:len(data) // 2]
    elif how == "append":
        data = data + b"\x00garbage\xff\n"
    elif how == "non_utf8":
        data = bytes([0xFF, 0xFE, 0x80, 0xC3]) * max(1, len(data) // 4)
    elif how == "delete":
        os.unlink(path)
        return
    with open(path, "wb") as f:
        f.write(data)


def _expect(kind: str, how: str, clean: bool) -> str:
    """'refuse', 'warn' (works, and a WARN names the file) or 'quiet' (works; the loss
    of this file is indistinguishable from a state that needs no warning)."""
    if kind == "topic-metadata.json":
        return "refuse"
    if kind == "meta.properties":
        return "warn" if how == "delete" else "refuse"
    if how != "delete":
        return "warn"
    if kind in ("recovery-point-offset-checkpoint", "log-start-offset-checkpoint"):
        return "warn" if clean else "quiet"
    if kind == "leader-epoch-checkpoint":
        return "warn"
    return "quiet"          # a snapshot or the cleaner checkpoint: legitimately absent too


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "crashed"])
@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", FILES)
def test_damaged_file_is_detected_and_nothing_acknowledged_is_lost(tmp_path, caplog, kind, how, clean):
    d = str(tmp_path / "d")
    clock = Clock()
    w = _fill(d, clock, clean)
    path = _path(d, kind)
    _damage(path, how)
    expect = _expect(kind, how, clean)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pylog"):
        if expect == "refuse":
            with pytest.raises(KafkaStorageError) as info:
                _open(d, clock)
            msg = str(info.value)
            assert os.path.basename(path) in msg and "\n" not in msg, msg
            assert "restore" in msg, msg
            return
        b = _open(d, clock)
        try:
            b.wait_loaded()   # partitions found clean load after the open returns
            clock.t += 10_000
            b.cleaner.clean_once(clock.t)
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            named = [m for m in warnings if os.path.basename(path) in m]
            if expect == "warn":
                assert named, warnings
            else:
                assert not [m for m in warnings if "checkpoint" in m or "snapshot" in m], warnings
            # No acknowledged record lost, none corrupt (CRCs checked), none changed.
            for p in (0, 1):
                got = _read(b, "t", p)
                for off, rec in w.acked[("t", p)].items():
                    if off >= w.log_start.get(("t", p), 0):
                        assert got.get(off) == rec, (p, off)
                assert set(got) <= set(w.acked[("t", p)])
            assert _latest_by_key(_read(b, "c", 0)) == {b"k%d" % k: b"c%03d" % (115 + k) for k in range(5)}
            if kind == "meta.properties":
                assert b.cluster_id == w.cluster_id          # restored from the registry
            # Producer state holds: the last batch retried is a duplicate, and the next one fits.
            assert b.produce("t", 0, w.last_batch).duplicate
            leo = b.log_offsets("t", 0)[1]
            assert b.produce("t", 0, _batch([b"after"])).base_offset == leo
        finally:
            b.close()
    with _open(d, clock) as b:
        assert _read(b, "t", 0)[leo] == (None, b"after")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- every single-byte change of the recovery point keeps every record --------------------

def test_no_flip_of_the_recovery_point_loses_a_record(tmp_path, caplog):
    """A flip the parser cannot see (a digit for a digit) may move the recovery point,
    but a crashed log is then recovered from a segment boundary at or below the true
    end, never beyond the data: every appended and flushed record stays readable."""
    d = str(tmp_path / "d")
    mgr = LogManager(d, config=LogConfig(segment_bytes=600))
    log = mgr.get_or_create_log("t", 0)
    for i in range(40):
        log.append(make_batch([b"%d" % i] * 2))
    mgr.flush()
    for lg in mgr.logs().values():
        lg._closed = True
    mgr._dir_lock.release()
    path = os.path.join(d, "recovery-point-offset-checkpoint")
    with open(path, "rb") as f:
        original = f.read()
    for i in range(len(original)):
        for mask in (0x01, 0x10, 0x80):
            with open(path, "wb") as f:
                f.write(original[:i] + bytes([original[i] ^ mask]) + original[i + 1:])
            mgr = LogManager(d, config=LogConfig(segment_bytes=600))
            try:
                assert [r[3] for r in read_all(mgr.get_log("t", 0))] == [b"%d" % (k // 2) for k in range(80)]
            finally:
                for lg in mgr.logs().values():
                    lg._closed = True
                mgr._dir_lock.release()


# -- the strict parsers ---------------------------------------------------------------------

@pytest.mark.parametrize("text, why", [
    (b"0\n1\nt 0 5", "no newline"),
    (b"0\n1\nt 0 05\n", "legal topic name"),
    (b"0\n1\nt 0 -5\n", "legal topic name"),
    (b"0\n1\nt -1 5\n", "legal topic name"),
    (b"0\n1\nbad/topic 0 5\n", "legal topic name"),
    (b"0\n1\n.. 0 5\n", "legal topic name"),
    (b"0\n1\nt 0 5 \n", "legal topic name"),
    (b"0\n1\nt 0 \xd9\xa1\n", "legal topic name"),          # an Arabic-Indic digit
    (b"0\n1\nt 0 1_000\n", "legal topic name"),
    (b"0\n1\nt 0 99999999999999999999\n", "legal topic name"),
    (b"0\n1\nt 2147483648 5\n", "out of range"),
    (b"0\n1\nt 0 9223372036854775808\n", "out of range"),
    (b"0\n2\nt 0 5\nt 0 6\n", "a second time"),
    (b"0\n3\nt 0 5\n", "header says 3"),
    (b"0\n99999999999\n", "header says"),
    (b"0\n-1\n", "bad entry count"),
    (b"1\n0\n", "version"),
    (b"\xff\xfe\n", "UTF-8"),
    (b"0\n0\n\x00", "NUL"),
    (b"", "empty"),
])
def test_checkpoint_parser_rejects(tmp_path, text, why):
    path = str(tmp_path / "cp")
    with open(path, "wb") as f:
        f.write(text)
    with pytest.raises(CorruptCheckpointError, match=why) as info:
        CheckpointFile(path).read()
    assert path in str(info.value)


def test_checkpoint_read_is_bounded(tmp_path, monkeypatch):
    from pylog.storage import checkpoint

    path = str(tmp_path / "cp")
    CheckpointFile(path).write({("t", p): p for p in range(100)})
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 64)
    with pytest.raises(CorruptCheckpointError, match="larger than 64 bytes"):
        CheckpointFile(path).read()


def test_properties_parser(tmp_path):
    path = str(tmp_path / "meta.properties")
    write_properties(path, {"version": "1", "node.id": "0"}, comment="c")
    assert read_properties(path) == {"version": "1", "node.id": "0"}
    for bad, why in [(b"version=1\nversion=1\n", "a second time"), (b"junk\n", "not key=value"),
                     (b"version=1", "no newline"), (b"v=\xff\n", "UTF-8"), (b"v=1\x00\n", "NUL"),
                     (b"v=a\x1bb\n", "control")]:
        with open(path, "wb") as f:
            f.write(bad)
        with pytest.raises(CorruptCheckpointError, match=why):
            read_properties(path)


@pytest.mark.parametrize("props, why", [
    ({"version": "1", "cluster.id": "abc", "node.id": "x"}, "node.id"),
    ({"version": "1", "cluster.id": "abc"}, "node.id"),
    ({"version": "7", "cluster.id": "abc", "node.id": "0"}, "version"),
    ({"version": "1", "cluster.id": "", "node.id": "0"}, "cluster.id"),
    ({"version": "1", "cluster.id": "a b", "node.id": "0"}, "cluster.id"),
    ({"version": "1", "cluster.id": "abc", "node.id": "0", "directory.id": "short"}, "directory.id"),
    ({"version": "1", "cluster.id": "abc", "node.id": "0", "surprise": "1"}, "unknown key"),
])
def test_meta_properties_that_parse_but_are_wrong_refuse_the_open(tmp_path, props, why):
    d = str(tmp_path / "d")
    os.makedirs(d)
    write_properties(os.path.join(d, "meta.properties"), props)
    with pytest.raises(KafkaStorageError, match=why) as info:
        LogManager(d)
    assert "meta.properties" in str(info.value) and "\n" not in str(info.value)


def test_producer_snapshot_with_a_valid_crc_but_impossible_entries_is_rebuilt(tmp_path, caplog):
    """A snapshot can be consistent with its CRC and still wrong (written over by another
    file of the same format): an entry past the snapshot's own offset is refused."""
    from pylog.broker.producer_state import _COUNT, _ENTRY, _HEADER, ProducerStateManager

    psm = ProducerStateManager(str(tmp_path))
    body = _COUNT.pack(1) + _ENTRY.pack(7, 0, 4, 500, 4, T0, -1, -1)
    data = _HEADER.pack(1, _core.crc32c(body)) + body
    path = psm.snapshot_path(100)
    with open(path, "wb") as f:
        f.write(data)
    with caplog.at_level(logging.WARNING, logger="pylog"):
        assert psm.load_snapshot(1000) == 0
    assert psm.producers == {} and not os.path.exists(path)
    assert any("outside the snapshot's offsets" in r.getMessage() and path in r.getMessage()
               for r in caplog.records)
