"""LogManager: Kafka's checkpoint files, meta.properties, clean shutdown, many partitions
with bounded descriptors and mappings."""

import os

import pytest

from pylog.errors import InvalidTopicError, KafkaStorageError
from pylog.storage import LogConfig, LogManager
from pylog.storage.checkpoint import CheckpointFile, CorruptCheckpointError, read_properties
from tests.storage.batches import make_batch
from tests.storage.conftest import read_all


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _mapped_files(directory) -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if directory in line)


def test_checkpoint_file_format(tmp_path):
    path = str(tmp_path / "recovery-point-offset-checkpoint")
    cp = CheckpointFile(path)
    assert cp.read() == {}
    cp.write({("orders", 1): 1180, ("orders", 0): 1234, ("a.b_c-d", 7): 0})
    with open(path) as f:
        assert f.read() == "0\n3\na.b_c-d 7 0\norders 0 1234\norders 1 1180\n"
    assert cp.read() == {("orders", 1): 1180, ("orders", 0): 1234, ("a.b_c-d", 7): 0}
    assert not os.path.exists(path + ".tmp")
    for bad in ["1\n0\n", "0\n2\nx 0 1\n", "0\n1\nx zero 1\n", ""]:
        with open(path, "w") as f:
            f.write(bad)
        with pytest.raises(CorruptCheckpointError):
            cp.read()


def test_manager_lifecycle(tmp_path):
    data = str(tmp_path / "data")
    mgr = LogManager(data, config=LogConfig(segment_bytes=1000), node_id=3)
    for p in range(3):
        log = mgr.get_or_create_log("orders", p)
        for i in range(10 * (p + 1)):
            log.append(make_batch([b"%d-%d" % (p, i)]))
    mgr.get_or_create_log("orders", 0).delete_records_before(4)
    assert mgr.get_or_create_log("orders", 0) is mgr.get_log("orders", 0)
    mgr.flush()
    assert CheckpointFile(os.path.join(data, "recovery-point-offset-checkpoint")).read() == {
        ("orders", 0): 10, ("orders", 1): 20, ("orders", 2): 30}
    mgr.close()
    assert os.path.exists(os.path.join(data, ".kafka_cleanshutdown"))
    assert CheckpointFile(os.path.join(data, "log-start-offset-checkpoint")).read()[("orders", 0)] == 4
    meta = read_properties(os.path.join(data, "meta.properties"))
    assert meta["node.id"] == "3" and meta["version"] == "1" and meta["cluster.id"]
    assert sorted(os.listdir(data)) == [".kafka_cleanshutdown", ".lock", "log-start-offset-checkpoint", "meta.properties",
                                        "orders-0", "orders-1", "orders-2", "recovery-point-offset-checkpoint"]
    # Under a manager the offset checkpoints live in the data directory, as Kafka's; the
    # one per-partition file is the leader epoch cache (Kafka's layout too).
    assert [n for n in os.listdir(os.path.join(data, "orders-0")) if n.endswith("checkpoint")] == [
        "leader-epoch-checkpoint"]

    mgr = LogManager(data, config=LogConfig(segment_bytes=1000), node_id=3)
    assert mgr.had_clean_shutdown and not os.path.exists(os.path.join(data, ".kafka_cleanshutdown"))
    assert {tp: log.log_end_offset for tp, log in mgr.logs().items()} == {
        ("orders", 0): 10, ("orders", 1): 20, ("orders", 2): 30}
    assert mgr.get_log("orders", 0).log_start_offset == 4
    assert read_all(mgr.get_log("orders", 2))[-1][3] == b"2-29"
    assert mgr.delete_log("orders", 1) and not mgr.delete_log("orders", 1)
    assert not os.path.exists(os.path.join(data, "orders-1"))
    with pytest.raises(InvalidTopicError):
        mgr.get_or_create_log("bad topic!", 0)
    mgr.close()
    with pytest.raises(KafkaStorageError):
        LogManager(data, node_id=4)


def test_manager_unclean_restart_recovers_from_checkpoints(tmp_path):
    data = str(tmp_path / "data")
    mgr = LogManager(data, config=LogConfig(segment_bytes=600))
    log = mgr.get_or_create_log("t", 0)
    for i in range(40):
        log.append(make_batch([b"%d" % i] * 2))
    mgr.flush()
    for i in range(5):
        log.append(make_batch([b"late"]))
    n_segments = len(log.segments)
    # crash: no close (the lock goes as a dead process's would)
    for lg in mgr.logs().values():
        lg._closed = True
    mgr._dir_lock.release()
    mgr = LogManager(data, config=LogConfig(segment_bytes=600))
    log = mgr.get_log("t", 0)
    assert not mgr.had_clean_shutdown
    assert log.log_end_offset == 85
    assert 1 <= len(log.recovered) < n_segments
    mgr.close()


def test_many_partitions_keep_handles_bounded(tmp_path):
    """Hundreds of segments across many logs: only active segments stay open and mapped,
    sealed ones open on read and are released under the shared LRU limit."""
    data = str(tmp_path / "data")
    cfg = LogConfig(segment_bytes=300, segment_index_bytes=1200)
    mgr = LogManager(data, config=cfg, max_open_segments=8)
    partitions = 40
    for p in range(partitions):
        log = mgr.get_or_create_log("many", p)
        for i in range(60):
            log.append(make_batch([b"%d-%d-" % (p, i) + b"x" * 40]))
    total_segments = sum(len(log.segments) for log in mgr)
    assert total_segments > 1000
    mgr.close()

    fds_before = _open_fds()
    mgr = LogManager(data, config=cfg, max_open_segments=8)
    # Opening: a fixed number of descriptors per log (its active segment), not per segment.
    # (4 per open segment: the .log file, plus the one Python's mmap duplicates for each of
    # the three mappings.)
    per_segment = 4
    assert _open_fds() - fds_before <= per_segment * partitions + 2
    assert _mapped_files(data) <= 3 * partitions
    for log in mgr:
        recs = read_all(log)  # touches every sealed segment: log, index, timeindex
        assert len(recs) == 60
        assert log.offset_for_timestamp(0).offset == 0
    assert len(mgr.cache) <= 8
    open_sealed = sum(1 for log in mgr for s in log.segments[:-1] if s.is_open)
    assert open_sealed <= 8
    assert _open_fds() - fds_before <= per_segment * (partitions + 8) + 2
    assert _mapped_files(data) <= 3 * partitions + 3 * 8
    mgr.close()
    assert _open_fds() <= fds_before + 1
