"""A record without a key on a compacted topic is rejected, as Kafka rejects it.

``cleanup.policy=compact`` (alone or with ``delete``) keeps the last record per key, so a
record without one has no meaning there: Kafka answers INVALID_RECORD (87) with one
record error per keyless record (Produce v8+ ``record_errors``) and appends nothing of
the batch.  The check runs in C over the records (``RecordBatch.null_key_indexes``), for
compressed batches too, and only on compacted topics.
"""

from __future__ import annotations

import pytest

from pylog import _core
from pylog.broker.core import Broker
from pylog.errors import InvalidRecordError

COMPACT = {"cleanup.policy": "compact"}


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", background=False, offsets_topic_num_partitions=1)
    yield b
    b.close()


def batch(keys, *, compression="none", pid=-1, epoch=-1, seq=-1):
    b = _core.RecordBatchBuilder(compression=compression, producer_id=pid, producer_epoch=epoch,
                                 base_sequence=seq)
    for i, k in enumerate(keys):
        b.append(None, k, b"v%d" % i)
    return bytes(b.build())


def log_bytes(broker, topic):
    res = broker.fetch(topic, 0, 0, 1 << 20)
    res.raise_for_error()
    return bytes(res.records.records)


@pytest.mark.parametrize("compression", ["none", "gzip", "lz4", "zstd"])
def test_null_key_indexes_in_c_match_the_records(compression):
    keys = [b"a", None, b"", None, b"e", None, None]
    b = _core.RecordBatch(batch(keys, compression=compression))
    assert b.null_key_indexes() == [i for i, r in enumerate(b.records()) if r.key is None] == [1, 3, 5, 6]
    assert _core.RecordBatch(batch([b"k"] * 3, compression=compression)).null_key_indexes() == []


@pytest.mark.parametrize("policy", ["compact", "compact,delete", "delete,compact"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_a_keyless_record_fails_the_whole_batch_on_a_compacted_topic(broker, policy, compression):
    broker.create_topic("c", config={"cleanup.policy": policy})
    assert broker.produce("c", 0, batch([b"k0"])).error_code == 0
    before = log_bytes(broker, "c")
    res = broker.produce("c", 0, batch([b"k1", None, b"k3", None, None, None], compression=compression))
    assert res.error_code == 87 and res.base_offset == -1
    assert [i for i, _ in res.record_errors] == [1, 3, 4, 5]
    assert all("c-0" in m and "without a key" in m for _, m in res.record_errors)
    assert "4 record(s)" in res.error_message and "1, 3, 4, ..." in res.error_message
    assert log_bytes(broker, "c") == before and broker.high_watermark("c", 0) == 1
    with pytest.raises(InvalidRecordError, match="without a key"):
        broker.append("c", 0, batch([None]))
    assert broker.produce("c", 0, batch([b"k1", b"k2"], compression=compression)).base_offset == 1


def test_keyless_records_are_fine_on_a_delete_topic(broker):
    broker.create_topic("d")
    assert broker.produce("d", 0, batch([None, None])).error_code == 0


def test_a_topic_altered_to_compact_starts_refusing_them(broker):
    broker.create_topic("t")
    assert broker.produce("t", 0, batch([None])).error_code == 0
    broker.incremental_alter_configs("t", [("cleanup.policy", "set", "compact")])
    assert broker.produce("t", 0, batch([None])).error_code == 87
    broker.incremental_alter_configs("t", [("cleanup.policy", "delete", None)])
    assert broker.produce("t", 0, batch([None])).error_code == 0


def test_one_keyless_batch_in_a_request_rejects_the_request(broker):
    """Several batches in one produce request (one partition): none is appended."""
    broker.create_topic("c", config=COMPACT)
    pid = broker.init_producer_id().producer_id
    records = batch([b"a"], pid=pid, epoch=0, seq=0) + batch([None], pid=pid, epoch=0, seq=1)
    res = broker.produce("c", 0, records)
    assert res.error_code == 87 and [i for i, _ in res.record_errors] == [0]
    assert broker.high_watermark("c", 0) == 0
    assert broker.describe_producers("c", 0) == []
    assert broker.produce("c", 0, batch([b"a"], pid=pid, epoch=0, seq=0)).base_offset == 0


def test_a_damaged_batch_is_reported_as_corrupt_before_its_keys(broker):
    broker.create_topic("c", config=COMPACT)
    raw = bytearray(batch([None, b"k"]))
    raw[-1] ^= 0x01                          # inside the last record's value
    assert broker.produce("c", 0, bytes(raw)).error_code == 2


def test_the_embedded_producer_counts_them_as_failed(broker):
    broker.create_topic("c", config=COMPACT)
    from pylog.client import Client, EmbeddedTransport
    with Client(EmbeddedTransport(broker), owns_transport=False).producer(linger_ms=0) as p:
        bad = p.send("c", value=b"no key")
        p.flush()
        with pytest.raises(InvalidRecordError, match="without a key"):
            bad.result(timeout=10)
        good = p.send("c", value=b"keyed", key=b"k")
        p.flush()
        assert good.result(timeout=10).offset == 0
    assert broker.high_watermark("c", 0) == 1
