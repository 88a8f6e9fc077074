"""ListOffsets by timestamp and MAX_TIMESTAMP through the client API, on both transports:
the record's offset and timestamp, as Apache Kafka answers, also for compressed batches
(tests/storage/test_offsets_for_times.py checks the storage answer against a model)."""

import pytest

T0 = 1_700_000_000_000
MAX_TIMESTAMP = -3


@pytest.mark.parametrize("codec", ["gzip", "lz4"])
def test_client_list_offsets_and_offsets_for_times(client, codec):
    """Through the client API, embedded and over the Kafka protocol: the record's offset and
    timestamp, not its compressed batch's."""
    client.create_topic("t", 1)
    producer = client.producer(compression_type=codec, linger_ms=1000, batch_size=1 << 20)
    for i in range(40):
        producer.send("t", b"value-%d" % i, partition=0, timestamp_ms=T0 + 2 * i)
    producer.flush()
    producer.close()
    got = client.list_offsets("t", 0, T0 + 21)
    assert (got.error_code, got.offset, got.timestamp) == (0, 11, T0 + 22)
    got = client.list_offsets("t", 0, MAX_TIMESTAMP)
    assert (got.error_code, got.offset, got.timestamp) == (0, 39, T0 + 78)
    consumer = client.consumer()
    found = consumer.offsets_for_times({("t", 0): T0 + 40})
    assert [(v.offset, v.timestamp) for v in found.values()] == [(20, T0 + 40)]
    consumer.close()
