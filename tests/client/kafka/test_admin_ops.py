"""AdminOps against a real ``pylog serve``, differentially: every admin call is made on an
embedded client (``pylog.open``) and on AdminOps over the wire with the same arguments,
and must give equal results or raise the same exception class."""

from __future__ import annotations


import pytest

import pylog
from pylog.broker.core import NewTopic, TopicDescription, TopicResult
from pylog.broker.group import CommitOffset, OffsetFetchResult
from pylog.client.kafka.admin_ops import AdminOps
from pylog.client.kafka.group_ops import GroupOps
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from pylog.records import RecordBatchBuilder
from tests.server.util import unique


@pytest.fixture
def pair(kafka_server, make_client, tmp_path):
    """(embedded transport, AdminOps over a network client to pylog serve)."""
    net = make_client(kafka_server.bootstrap)
    ops = AdminOps(net, request_timeout_ms=15000, client_id="admin-test")
    client = pylog.open(tmp_path / "embedded")
    yield client.transport, ops, net
    ops.close()
    client.close()


def _norm(v):
    """Results with the facts that differ between two clusters (random topic ids) blanked
    to whether they are there."""
    if isinstance(v, (TopicDescription, TopicResult)):
        return v._replace(topic_id="<id>" if v.topic_id else v.topic_id,
                          **({"error_message": None} if isinstance(v, TopicResult) else {}))
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_norm(x) for x in v)
    return v


def _outcome(fn, *args, **kw):
    try:
        return "ok", _norm(fn(*args, **kw))
    except Exception as exc:  # noqa: BLE001 - the class is what is compared
        return "raised", type(exc)


def same(pair, name, *args, **kw):
    """Call ``name`` on both sides; assert equal outcomes; return the wire's."""
    emb, ops, _ = pair
    want = _outcome(getattr(emb, name), *args, **kw)
    got = _outcome(getattr(ops, name), *args, **kw)
    assert got == want, f"{name}{args}: wire {got!r} != embedded {want!r}"
    return got[1]


def _create_offsets_topic(pair, kafka_server, topic):
    """__consumer_offsets exists from a group's first write on (FindCoordinator or a
    commit creates it): make it exist on both sides."""
    pair[0].broker.ensure_offsets_topic()
    with pylog.connect(kafka_server.bootstrap) as c:
        assert c.commit_offsets(unique("adm-group"), {topic: {0: 0}}) == {topic: {0: 0}}


def test_topic_admin_matches_embedded(pair, kafka_server):
    t, other, missing = unique("adm"), unique("adm"), unique("nosuch")
    d = same(pair, "create_topic", t, 3, None, {"cleanup.policy": "compact", "retention.ms": 1000,
                                               "unclean.leader.election.enable": False})
    assert d.num_partitions == 3 and d.topic_id == "<id>"
    assert same(pair, "create_topic", t, 2) is pylog.errors.TopicAlreadyExistsError
    assert same(pair, "create_topic", unique("zero"), 0) is pylog.errors.InvalidPartitionsError
    assert same(pair, "create_topic", "bad name!") is pylog.errors.InvalidTopicError
    assert same(pair, "create_topic", unique("rf"), 1, 3) is pylog.errors.InvalidReplicationFactorError
    assert same(pair, "create_topic", unique("cfg"), 1, None, {"retention.mss": 5}) is pylog.errors.InvalidConfigError
    assert same(pair, "create_topic", unique("cfg"), 1, None, {"retention.ms": "soon"}) \
        is pylog.errors.InvalidConfigError
    same(pair, "create_topic", unique("val"), 2, validate_only=True)
    res = same(pair, "create_topics", [NewTopic(other, 2, -1, {"segment.ms": 60000}), t, NewTopic(unique("z"), 0)])
    assert res[other].error_code == 0 and res[other].configs and res[t].error_code == 36
    same(pair, "create_topics", [unique("v")], validate_only=True)
    same(pair, "describe_topic", t)
    assert same(pair, "describe_topic", missing) is pylog.errors.UnknownTopicOrPartitionError
    same(pair, "describe_topics", [t, missing, other])
    emb, ops, _ = pair
    mine = {t, other}
    assert [n for n in ops.list_topics() if n in mine] == [n for n in emb.list_topics() if n in mine] == sorted(mine)
    _create_offsets_topic(pair, kafka_server, t)
    assert "__consumer_offsets" in ops.list_topics(internal=True)
    assert "__consumer_offsets" not in ops.list_topics()
    wire_all = ops.describe_topics()
    assert {n: _norm(v) for n, v in wire_all.items() if n in mine} == _norm(emb.describe_topics())
    assert same(pair, "create_partitions", t, 5) is None
    assert same(pair, "create_partitions", t, 5) is pylog.errors.InvalidPartitionsError
    assert same(pair, "create_partitions", t, 9, validate_only=True) is None
    assert same(pair, "create_partitions", missing, 4) is pylog.errors.UnknownTopicOrPartitionError
    assert same(pair, "describe_topic", t).num_partitions == 5
    assert same(pair, "delete_topic", missing) is pylog.errors.UnknownTopicOrPartitionError
    assert same(pair, "delete_topic", "__consumer_offsets") is pylog.errors.InvalidTopicError
    assert same(pair, "delete_topic", other) is None
    res = same(pair, "delete_topics", [t, other])
    assert res[t].error_code == 0 and res[t].topic_id == "<id>" and res[other].error_code == 3
    assert same(pair, "describe_topic", t) is pylog.errors.UnknownTopicOrPartitionError


def test_config_admin_matches_embedded(pair):
    t, missing = unique("cfg"), unique("nosuch")
    same(pair, "create_topic", t, 1, None, {"cleanup.policy": "compact"})
    same(pair, "describe_configs", t)
    same(pair, "describe_configs", t, ["cleanup.policy", "retention.ms"], include_synonyms=True)
    docs = same(pair, "describe_configs", t, ["segment.ms"], include_documentation=True)
    assert docs[0].documentation
    assert same(pair, "describe_configs", t, ["no.such.config"]) == []    # as Kafka: left out
    assert same(pair, "describe_configs", missing) is pylog.errors.UnknownTopicOrPartitionError
    assert same(pair, "alter_configs", t, {"retention.ms": 5000, "cleanup.policy": ["compact", "delete"]}) is None
    same(pair, "describe_configs", t, ["retention.ms", "cleanup.policy", "segment.ms"], include_synonyms=True)
    assert same(pair, "alter_configs", t, {"retention.mss": 5}) is pylog.errors.InvalidConfigError
    assert same(pair, "alter_configs", t, {"segment.ms": 1}, validate_only=True) is None
    assert same(pair, "alter_configs", missing, {"retention.ms": 5}) is pylog.errors.UnknownTopicOrPartitionError
    for ops in ([("retention.ms", "set", 7000)], [("retention.ms", 1, None)],
                [("cleanup.policy", "subtract", "delete")], [("cleanup.policy", "append", ["delete"])],
                [("segment.ms", "set", 60000), ("max.message.bytes", 0, "2000")]):
        assert same(pair, "incremental_alter_configs", t, ops) is None
        same(pair, "describe_configs", t, ["retention.ms", "cleanup.policy", "segment.ms", "max.message.bytes"])
    assert same(pair, "incremental_alter_configs", t, [("retention.ms", "frobnicate", 1)]) \
        is pylog.errors.InvalidConfigError
    assert same(pair, "incremental_alter_configs", t, [("retention.ms", "append", "1")]) \
        is pylog.errors.InvalidConfigError
    # As Kafka 4.x: the last policy may go (an empty cleanup.policy keeps everything).
    assert same(pair, "incremental_alter_configs", t, [("cleanup.policy", "subtract", ["compact", "delete"])]) \
        is None
    assert same(pair, "incremental_alter_configs", missing, [("no.such.config", "set", 1)]) \
        is pylog.errors.InvalidConfigError
    assert same(pair, "incremental_alter_configs", missing, [("retention.ms", "frobnicate", 1)]) \
        is pylog.errors.UnknownTopicOrPartitionError
    same(pair, "describe_configs", t, include_synonyms=True)


def _batch(n: int) -> bytes:
    b = RecordBatchBuilder()
    for i in range(n):
        b.append(None, None, b"v%d" % i)
    return bytes(b.build())


def test_delete_records_matches_embedded(pair, kafka_server):
    emb, ops, net = pair
    t, missing = unique("delrec"), unique("nosuch")
    same(pair, "create_topic", t, 2)
    emb.produce([(t, 0, [_batch(10)])], acks=-1)
    P = m.ProduceRequest
    resp = net.send(0, ApiKey.PRODUCE, P(acks=-1, timeout_ms=5000, topic_data=[P.TopicProduceData(
        name=t, partition_data=[P.PartitionProduceData(index=0, records=_batch(10))])])).result(30)
    assert resp.responses[0].partition_responses[0].error_code == 0
    assert same(pair, "delete_records", t, 0, 4) == 4
    assert same(pair, "delete_records", t, 0, 2) == 4          # never backwards
    assert same(pair, "delete_records", t, 0, 11) is pylog.errors.OffsetOutOfRangeError
    assert same(pair, "delete_records", t, 0, -5) is pylog.errors.OffsetOutOfRangeError
    assert same(pair, "delete_records", t, 7, 1) is pylog.errors.UnknownTopicOrPartitionError
    assert same(pair, "delete_records", missing, 0, 1) is pylog.errors.UnknownTopicOrPartitionError
    _create_offsets_topic(pair, kafka_server, t)
    assert same(pair, "delete_records", "__consumer_offsets", 0, 0) is pylog.errors.InvalidTopicError
    assert same(pair, "delete_records", t, 1, -1) == 0
    assert same(pair, "delete_records", t, 0, -1) == 10
    d = same(pair, "describe_topic", t)
    assert (d.partitions[0].log_start_offset, d.partitions[0].high_watermark) == (10, 10)


def test_group_admin_matches_embedded(pair, kafka_server, make_client):
    emb, ops, net = pair
    groups = GroupOps(net, request_timeout_ms=15000, client_id="admin-test")
    t = unique("gadm")
    same(pair, "create_topic", t, 2)
    g_empty, g_live, missing = unique("empty"), unique("live"), unique("nogroup")
    # An empty group with offsets (an admin tool's commit), on both sides.
    assert emb.commit_offsets(g_empty, {t: {0: CommitOffset(3)}}) == groups.commit_offsets(
        g_empty, {t: {0: CommitOffset(3)}}) == {t: {0: 0}}
    # A group with a member, on both sides.
    results = []
    for side in (emb, groups):
        p = side.join_group(g_live, "", "consumer", [("range", b"")], session_timeout_ms=30000,
                            rebalance_timeout_ms=10000, client_id="c")
        r = p.wait(30)
        if r.error_code == 79:
            r = side.join_group(g_live, r.member_id, "consumer", [("range", b"")], session_timeout_ms=30000,
                                rebalance_timeout_ms=10000, client_id="c").wait(30)
        assert r.error_code == 0 and r.is_leader
        s = side.sync_group(g_live, r.generation_id, r.member_id, protocol_type="consumer", protocol_name="range",
                            assignments={r.member_id: b"\x00\x01"}).wait(30)
        assert s.error_code == 0
        results.append(r.member_id)
    mine = {g_empty, g_live}
    listed = [sorted((x for x in ops_.list_groups() if x.group_id in mine), key=lambda x: x.group_id)
              for ops_ in (emb, ops)]
    assert listed[0] == listed[1] and len(listed[0]) == 2
    for states, types in ((["Stable"], None), (["empty", "STABLE"], None), (None, ["classic"]),
                          (None, ["consumer"]), (["Dead"], None)):
        want = sorted((x for x in emb.list_groups(states, types) if x.group_id in mine), key=lambda x: x.group_id)
        got = sorted((x for x in ops.list_groups(states, types) if x.group_id in mine), key=lambda x: x.group_id)
        assert got == want, (states, types)
    desc_e, desc_w = emb.describe_groups([g_live, g_empty, missing, g_live]), \
        ops.describe_groups([g_live, g_empty, missing, g_live])
    # Member ids, client ids and hosts are each side's own (the wire's client id is the
    # network client's, in the request header).
    def strip(ds):
        return [(d.group_id, d.error_code, d.state, d.protocol_type, d.protocol_data,
                 [(x.metadata, x.assignment) for x in d.members]) for d in ds]
    assert strip(desc_w) == strip(desc_e)
    assert desc_w[0].members[0].client_id == net.client_id
    assert desc_w[0].members[0].member_id == results[1]
    assert same(pair, "delete_groups", [g_live, g_empty, missing, g_empty]) == {
        g_live: 68, g_empty: 0, missing: 69}                       # NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND
    assert same(pair, "describe_groups", [g_empty])[0].state == "Dead"
    assert emb.fetch_offsets(g_empty) == groups.fetch_offsets(g_empty) == OffsetFetchResult(0)
    groups.close()
