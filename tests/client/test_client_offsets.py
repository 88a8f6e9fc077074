"""The client's offset look-ups, on both transports: ``log_offsets`` asks for the log
start and the high watermark of one partition at once (over the network: never one
ListOffsets naming the partition twice, which brokers refuse as INVALID_REQUEST)."""

from __future__ import annotations

import pytest

from pylog.errors import UnknownTopicOrPartitionError


def test_log_offsets_follow_appends_and_delete_records(client):
    client.create_topic("t", 2)
    assert client.log_offsets("t", 0) == (0, 0)
    producer = client.producer()
    for i in range(10):
        producer.send("t", b"v%d" % i, partition=0)
    producer.flush()
    assert client.log_offsets("t", 0) == (0, 10)
    assert client.log_offsets("t", 1) == (0, 0)
    assert client.delete_records("t", 0, 4) == 4
    assert client.log_offsets("t", 0) == (4, 10)
    assert client.high_watermark("t", 0) == 10
    producer.close()


def test_log_offsets_of_a_missing_partition_raise(client):
    client.create_topic("t", 1)
    with pytest.raises(UnknownTopicOrPartitionError):
        client.log_offsets("t", 5)
    with pytest.raises(UnknownTopicOrPartitionError):
        client.log_offsets("nope", 0)
