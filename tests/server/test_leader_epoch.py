"""OffsetForLeaderEpoch over the wire, every advertised version: the end offset of the
epoch asked, Kafka's -1/-1 for an unknown one, and the current-leader-epoch checks.  The
server runs in-process on a free loopback port."""

from __future__ import annotations

import pytest

from pylog.protocol import messages as m
from pylog.records import RecordBatchBuilder
from tests.wire import WireClient
from server.util import unique

R = m.OffsetForLeaderEpochRequest


def ask(conn, version, topic, partitions):
    """``partitions``: (partition, leader_epoch, current_leader_epoch) triples."""
    body = R(replica_id=-1, topics=[R.OffsetForLeaderTopic(topic=topic, partitions=[
        R.OffsetForLeaderPartition(partition=p, leader_epoch=e, current_leader_epoch=c)
        for p, e, c in partitions])])
    resp = conn.request(23, body, version=version)
    assert [t.topic for t in resp.topics] == [topic]
    return [(p.partition, p.error_code, p.leader_epoch, p.end_offset) for p in resp.topics[0].partitions]


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_offset_for_leader_epoch_every_version(inproc, version):
    topic = unique("ofle")
    inproc.server.broker.create_topic(topic, 2)
    b = RecordBatchBuilder()
    for v in (b"a", b"b", b"c"):
        b.append(None, None, v)
    inproc.server.broker.append(topic, 0, b.build())
    host, port = inproc.address
    with WireClient(f"{host}:{port}") as c:
        conn = c.leader(topic, 0)
        got = ask(conn, version, topic, [(0, 0, -1), (1, 0, -1), (0, 5, -1), (7, 0, -1)])
        # v0 has no leader_epoch field in the response: it decodes as the default, -1.
        e0 = 0 if version >= 1 else -1
        assert got == [(0, 0, e0, 3), (1, 0, e0, 0), (0, 0, -1, -1), (7, 3, -1, -1)]
        if version >= 2:
            assert ask(conn, version, topic, [(0, 0, 0), (0, 0, 1)]) == [(0, 0, 0, 3), (0, 75, -1, -1)]
        missing = unique("missing")
        assert ask(conn, version, missing, [(0, 0, -1)]) == [(0, 3, -1, -1)]
