"""``Broker.produce_partitions``: a Produce request's topic in one broker call.

Each partition gets the result :meth:`Broker.produce` would have given it alone, in
the order asked, and a partition's failure leaves the others' appends in place.
"""

from __future__ import annotations

import time

import pytest

from pylog import _core
from pylog.broker.core import Broker


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", background=False, offsets_topic_num_partitions=1)
    b.create_topic("t", 4)
    yield b
    b.close()


def batch(values, *, pid=-1, epoch=-1, seq=-1):
    b = _core.RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    now = int(time.time() * 1000)
    for v in values:
        b.append(now, None, v)
    return bytes(b.build())


def values(broker, partition):
    res = broker.fetch("t", partition, 0, 1 << 20)
    res.raise_for_error()
    return [r.value for b in _core.iter_batches(res.records.records) for r in b]


def test_each_partition_gets_its_own_result_in_order(broker):
    broker.append("t", 2, batch([b"old"]))
    res = broker.produce_partitions("t", [(2, batch([b"a", b"b"])), (9, batch([b"x"])), (0, b"\x00" * 5),
                                          (1, batch([b"c"]) + batch([b"d"]))], acks=1)
    assert [r.error_code for r in res] == [0, 3, 2, 0]   # UNKNOWN_TOPIC_OR_PARTITION, CORRUPT_MESSAGE
    assert (res[0].base_offset, res[3].base_offset) == (1, 0)
    assert values(broker, 2) == [b"old", b"a", b"b"]
    assert values(broker, 1) == [b"c", b"d"]
    assert values(broker, 0) == []


def test_the_same_results_as_one_produce_per_partition(tmp_path, broker):
    other = Broker(tmp_path / "other", background=False, offsets_topic_num_partitions=1)
    try:
        other.create_topic("t", 4)
        pid = broker.init_producer_id().producer_id
        assert other.init_producer_id().producer_id == pid
        requests = [[(0, batch([b"a"], pid=pid, epoch=0, seq=0)), (1, batch([b"b"]))],
                    [(0, batch([b"a"], pid=pid, epoch=0, seq=0)), (3, batch([b"c"]))],   # a retry: duplicate
                    [(0, batch([b"z"], pid=pid, epoch=0, seq=7)), (-1, batch([b"d"]))]]  # out of order, bad index
        for request in requests:
            together = broker.produce_partitions("t", request, acks=-1)
            alone = [other.produce("t", p, records, acks=-1) for p, records in request]
            assert [(r.error_code, r.base_offset, r.duplicate) for r in together] == \
                   [(r.error_code, r.base_offset, r.duplicate) for r in alone]
        assert [r.error_code for r in together] == [45, 3]   # OUT_OF_ORDER_SEQUENCE_NUMBER
        assert values(broker, 0) == [b"a"]
    finally:
        other.close()


def test_unmet_acks_and_bad_acks_fail_every_partition(broker):
    broker.create_topic("strict", 2, config={"min.insync.replicas": 2})
    res = broker.produce_partitions("strict", [(0, batch([b"a"])), (1, batch([b"b"]))], acks=-1)
    assert [r.error_code for r in res] == [19, 19]           # NOT_ENOUGH_REPLICAS
    assert "strict-1" in res[1].error_message
    res = broker.produce_partitions("strict", [(0, batch([b"a"])), (1, batch([b"b"]))], acks=1)
    assert [r.error_code for r in res] == [0, 0]
    res = broker.produce_partitions("t", [(0, batch([b"a"]))], acks=2)
    assert [r.error_code for r in res] == [21]               # INVALID_REQUIRED_ACKS
    assert values(broker, 0) == []
