"""GroupOps over the wire: a two-member group driven with pylog's assignors against
``pylog serve``, coordinator moves (a fake answering NOT_COORDINATOR and
COORDINATOR_LOAD_IN_PROGRESS, a real server restart), offsets round trips compared with
the embedded broker, and offsets read back by librdkafka (confluent-kafka)."""

from __future__ import annotations

import threading

import pytest

import pylog
from pylog.broker.assignors import RangeAssignor
from pylog.broker.consumer_protocol import (Assignment, Subscription, decode_assignment, decode_subscription,
                                            encode_assignment, encode_subscription)
from pylog.broker.group import CommitOffset, MemberIdentity
from pylog.client.kafka.cluster import coordinator_node_id, extra_connection_id
from pylog.client.kafka.group_ops import GroupOps
from pylog.errors import InvalidRequestError
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from tests.client.kafka.fakes import FakeBroker
from tests.server.conftest import ServeProcess, _check_stopped, wait_until
from tests.server.util import unique

REBALANCE_IN_PROGRESS, MEMBER_ID_REQUIRED = 27, 79


def create_topic(net, name: str, partitions: int) -> None:
    T = m.CreateTopicsRequest
    resp = net.send_to_any(ApiKey.CREATE_TOPICS, T(topics=[T.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=1)], timeout_ms=10000)).result(30)
    assert resp.topics[0].error_code == 0, resp


def join(ops: GroupOps, group: str, member_id: str, topics: list[str], **kw):
    """JoinGroup as the consumer does it: again with the id MEMBER_ID_REQUIRED hands out."""
    meta = encode_subscription(Subscription(topics=topics))
    p = ops.join_group(group, member_id, "consumer", [("range", meta)], session_timeout_ms=30000,
                       rebalance_timeout_ms=20000, client_id="t", **kw)
    r = p.wait(60)
    if r.error_code == MEMBER_ID_REQUIRED:
        assert r.member_id
        return join(ops, group, r.member_id, topics, **kw)
    return r


def lead(ops: GroupOps, group: str, res, counts: dict[str, int], **kw):
    """The leader's SyncGroup with RangeAssignor's plan, as the consumer builds it."""
    subs = {x.member_id: decode_subscription(x.metadata) for x in res.members}
    plan = RangeAssignor().assign(counts, subs)
    assignments = {mid: encode_assignment(Assignment(dict(parts))) for mid, parts in plan.items()}
    return ops.sync_group(group, res.generation_id, res.member_id, protocol_type="consumer",
                          protocol_name=res.protocol_name, assignments=assignments, **kw)


@pytest.fixture
def ops_for(make_client):
    made: list[GroupOps] = []

    def factory(bootstrap: str, **kw) -> GroupOps:
        net = make_client(bootstrap, **kw)
        ops = GroupOps(net, request_timeout_ms=kw.get("request_timeout_ms", 20000), client_id="group-test")
        made.append(ops)
        return ops

    yield factory
    for ops in made:
        ops.close()


def test_two_members_join_assign_heartbeat_and_leave(kafka_server, ops_for):
    a, b = ops_for(kafka_server.bootstrap), ops_for(kafka_server.bootstrap)
    topic, group = unique("grp"), unique("g")
    create_topic(a.net, topic, 4)
    r1 = join(a, group, "", [topic])
    assert r1.is_leader and r1.generation_id == 1 and len(r1.members) == 1
    s1 = lead(a, group, r1, {topic: 4}).wait(30)
    assert s1.error_code == 0 and decode_assignment(s1.assignment).partitions == {topic: [0, 1, 2, 3]}
    assert a.heartbeat(group, r1.generation_id, r1.member_id) == 0 and not a.group_rebalancing(group)

    # A second member: its JoinGroup waits on the broker for the first member to rejoin,
    # and join_group returns at once all the same.
    meta = encode_subscription(Subscription(topics=[topic]))
    first = b.join_group(group, "", "consumer", [("range", meta)], session_timeout_ms=30000,
                         rebalance_timeout_ms=20000, client_id="t").wait(30)
    assert first.error_code == MEMBER_ID_REQUIRED
    p2 = b.join_group(group, first.member_id, "consumer", [("range", meta)], session_timeout_ms=30000,
                      rebalance_timeout_ms=20000, client_id="t")
    assert not p2.done()
    woken = threading.Event()
    p2.add_done_callback(lambda _p: woken.set())
    # The first member learns of the rebalance from its heartbeat (once the second
    # member's JoinGroup has reached the coordinator); the hint says so too.
    wait_until(lambda: a.heartbeat(group, r1.generation_id, r1.member_id) == REBALANCE_IN_PROGRESS,
               what="the coordinator to start the rebalance")
    assert a.group_rebalancing(group)
    p1 = a.join_group(group, r1.member_id, "consumer", [("range", meta)], session_timeout_ms=30000,
                      rebalance_timeout_ms=20000, client_id="t")
    assert not a.group_rebalancing(group)       # the join answers the hint
    j1, j2 = p1.wait(30), p2.wait(30)
    assert woken.wait(30)
    assert (j1.error_code, j2.error_code) == (0, 0) and j1.generation_id == j2.generation_id == 2
    leader, follower = (a, j1), (b, j2)
    if j2.is_leader:
        leader, follower = follower, leader
    assert len(leader[1].members) == 2 and not follower[1].members
    pf = follower[0].sync_group(group, 2, follower[1].member_id, protocol_type="consumer", protocol_name="range")
    sl = lead(leader[0], group, leader[1], {topic: 4}).wait(30)
    sf = pf.wait(30)
    got = {sl.error_code, sf.error_code}
    assert got == {0}
    parts = [decode_assignment(s.assignment).partitions[topic] for s in (sl, sf)]
    assert sorted(parts[0] + parts[1]) == [0, 1, 2, 3] and len(parts[0]) == len(parts[1]) == 2
    for ops, res in ((a, j1), (b, j2)):
        assert ops.heartbeat(group, 2, res.member_id) == 0
    # A stale generation is refused; leaving ends the member.
    assert a.heartbeat(group, 1, j1.member_id) == 22          # ILLEGAL_GENERATION
    left = b.leave_group(group, [MemberIdentity(j2.member_id, None, "test done")])
    assert left.error_code == 0 and [x.error_code for x in left.members] == [0]
    assert a.heartbeat(group, 2, j1.member_id) == REBALANCE_IN_PROGRESS
    assert a.group_rebalancing(group)
    assert b.leave_group(group, [MemberIdentity("nobody")]).members[0].error_code == 25   # UNKNOWN_MEMBER_ID


def test_static_member_and_sync_errors(kafka_server, ops_for):
    a = ops_for(kafka_server.bootstrap)
    topic, group = unique("static"), unique("g")
    create_topic(a.net, topic, 2)
    r = join(a, group, "", [topic], group_instance_id="inst-1")
    assert r.error_code == 0 and r.is_leader          # static members get their id at once
    assert lead(a, group, r, {topic: 2}).wait(30).error_code == 0
    assert a.heartbeat(group, r.generation_id, r.member_id, group_instance_id="inst-1") == 0
    # The same instance id with another member id is fenced.
    assert a.heartbeat(group, r.generation_id, "other", group_instance_id="inst-1") == 82   # FENCED_INSTANCE_ID
    bad = a.sync_group(group, r.generation_id + 5, r.member_id, group_instance_id="inst-1").wait(30)
    assert bad.error_code == 22
    with pytest.raises(InvalidRequestError):
        a.join_group(group, "", "consumer", [("range", 5)], session_timeout_ms=30000,
                     rebalance_timeout_ms=1000, client_id="t")
    left = a.leave_group(group, [MemberIdentity(r.member_id, "inst-1")])
    assert left.error_code == 0 and left.members[0].error_code == 0


def test_offsets_round_trip_matches_embedded(kafka_server, ops_for, tmp_path):
    ops = ops_for(kafka_server.bootstrap)
    emb = pylog.open(tmp_path / "emb")
    try:
        topic, group, nosuch = unique("off"), unique("g"), unique("nosuch")
        create_topic(ops.net, topic, 3)
        emb.create_topic(topic, 3)
        offsets = {topic: {0: CommitOffset(10, "meta-0", 4), 2: CommitOffset(7), 9: CommitOffset(1)},
                   nosuch: {0: CommitOffset(1)}}
        for side in (emb.transport, ops):
            assert side.commit_offsets(group, offsets) == {topic: {0: 0, 2: 0, 9: 3}, nosuch: {0: 3}}
        want = emb.transport.fetch_offsets(group, {topic: [0, 1, 2]})
        got = ops.fetch_offsets(group, {topic: [0, 1, 2]})
        assert got == want
        assert got.topics[topic][0].offset == 10 and got.topics[topic][0].metadata == "meta-0" \
            and got.topics[topic][0].leader_epoch == 4 and got.topics[topic][1].offset == -1
        assert ops.fetch_offsets(group) == emb.transport.fetch_offsets(group)
        assert ops.fetch_offsets(unique("empty")) == emb.transport.fetch_offsets(unique("empty"))
        for bad in ({topic: {0: CommitOffset(-1)}}, {topic: {0: "ten"}}, [1, 2],
                    {topic: {0: CommitOffset(1, 5)}}):
            for side in (emb.transport, ops):
                with pytest.raises(InvalidRequestError):
                    side.commit_offsets(group, bad)
        # A commit with a retention (OffsetCommit v2-4) is stored too.
        assert ops.commit_offsets(group, {topic: {1: CommitOffset(5)}}, retention_time_ms=3_600_000) == {topic: {1: 0}}
        assert ops.fetch_offsets(group, {topic: [1]}).topics[topic][1].offset == 5
        # A group with a member takes commits from that member, at its generation.
        g2 = unique("g")
        r = join(ops, g2, "", [topic])
        assert lead(ops, g2, r, {topic: 3}).wait(30).error_code == 0
        assert ops.commit_offsets(g2, {topic: {0: 1}}) == {topic: {0: 25}}                      # UNKNOWN_MEMBER_ID
        assert ops.commit_offsets(g2, {topic: {0: 1}}, generation_id=9, member_id=r.member_id) == {topic: {0: 22}}
        assert ops.commit_offsets(g2, {topic: {0: 1}}, generation_id=r.generation_id,
                                  member_id=r.member_id) == {topic: {0: 0}}
    finally:
        emb.close()


def test_offsets_committed_by_groupops_are_what_librdkafka_reads(kafka_server, ops_for):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    ops = ops_for(kafka_server.bootstrap)
    topic, group = unique("rdk"), unique("g")
    create_topic(ops.net, topic, 2)
    assert ops.commit_offsets(group, {topic: {0: CommitOffset(42, "from pylog"), 1: CommitOffset(7)}}) == \
        {topic: {0: 0, 1: 0}}
    c = confluent_kafka.Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": group,
                                  "enable.auto.commit": False})
    try:
        got = c.committed([confluent_kafka.TopicPartition(topic, 0), confluent_kafka.TopicPartition(topic, 1)],
                          timeout=30)
        assert [(tp.partition, tp.offset, tp.error) for tp in got] == [(0, 42, None), (1, 7, None)]
        assert got[0].metadata in ("from pylog", b"from pylog")
        # And the reverse: librdkafka's commit is what GroupOps fetches.
        c.commit(offsets=[confluent_kafka.TopicPartition(topic, 1, 99)], asynchronous=False)
    finally:
        c.close()
    assert ops.fetch_offsets(group, {topic: [0, 1]}).topics[topic][1].offset == 99


class ScriptedCoordinator(FakeBroker):
    """A fake coordinator: group APIs answer the error codes of ``script[api_key]`` in turn,
    then success."""

    def __init__(self, script: dict[int, list[int]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        super().__init__("ok")

    def _body(self, key, req):
        code = self.script.get(key, [])
        code = code.pop(0) if code else 0
        if key == ApiKey.HEARTBEAT:
            return m.HeartbeatResponse(error_code=code)
        if key == ApiKey.JOIN_GROUP:
            return m.JoinGroupResponse(error_code=code, generation_id=1 if not code else -1, protocol_name="range",
                                       leader="m-1", member_id="m-1", members=[])
        if key == ApiKey.OFFSET_COMMIT:
            R = m.OffsetCommitResponse
            return R(topics=[R.OffsetCommitResponseTopic(name=t.name, partitions=[
                R.OffsetCommitResponsePartition(partition_index=p.partition_index, error_code=code)
                for p in t.partitions]) for t in req.topics])
        return super()._body(key, req)


def test_coordinator_errors_rediscover_and_retry(ops_for):
    fake = ScriptedCoordinator({ApiKey.HEARTBEAT: [16, 15], ApiKey.JOIN_GROUP: [14, 16],
                                ApiKey.OFFSET_COMMIT: [16]})
    try:
        ops = ops_for(fake.bootstrap, retry_backoff_ms=10)
        finds = len(fake.api_requests(ApiKey.FIND_COORDINATOR))
        assert ops.heartbeat("g", 1, "m-1") == 0
        assert fake.api_requests(ApiKey.HEARTBEAT).__len__() == 3
        # NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE each forgot the coordinator.
        assert len(fake.api_requests(ApiKey.FIND_COORDINATOR)) - finds == 3
        r = ops.join_group("g", "", "consumer", [("range", b"")], session_timeout_ms=10000,
                           rebalance_timeout_ms=10000, client_id="t").wait(30)
        assert (r.error_code, r.member_id, r.generation_id) == (0, "m-1", 1)
        assert len(fake.api_requests(ApiKey.JOIN_GROUP)) == 3
        assert ops.commit_offsets("g", {"t": {0: 5}}) == {"t": {0: 0}}
        assert len(fake.api_requests(ApiKey.OFFSET_COMMIT)) == 2
    finally:
        fake.stop()


def test_coordinator_errors_past_the_timeout_are_the_result(ops_for):
    fake = ScriptedCoordinator({ApiKey.HEARTBEAT: [16] * 1000, ApiKey.JOIN_GROUP: [15] * 1000})
    try:
        ops = ops_for(fake.bootstrap, retry_backoff_ms=50, request_timeout_ms=600)
        assert ops.heartbeat("g", 1, "m-1") == 16
        r = ops.join_group("g", "", "consumer", [("range", b"")], session_timeout_ms=10000,
                           rebalance_timeout_ms=10000, client_id="t").wait(30)
        assert r.error_code == 15
        assert len(fake.api_requests(ApiKey.HEARTBEAT)) > 1 and len(fake.api_requests(ApiKey.JOIN_GROUP)) > 1
    finally:
        fake.stop()


def test_commit_retries_across_a_coordinator_restart(tmp_path, ops_for):
    sp = ServeProcess(str(tmp_path / "serve")).start()
    try:
        ops = ops_for(sp.bootstrap, retry_backoff_ms=20, request_timeout_ms=60000)
        topic, group = unique("restart"), unique("g")
        create_topic(ops.net, topic, 1)
        assert ops.commit_offsets(group, {topic: {0: 1}}) == {topic: {0: 0}}
        coordinator = ops.net.cluster.coordinator_for(group)
        connects = ops.net.connection(coordinator).connects
        sp.stop()
        out: list = []
        t = threading.Thread(target=lambda: out.append(ops.commit_offsets(group, {topic: {0: 2}})))
        t.start()
        sp.start()
        t.join(90)
        assert not t.is_alive() and out == [{topic: {0: 0}}]
        assert ops.fetch_offsets(group, {topic: [0]}).topics[topic][0].offset == 2
        new = ops.net.cluster.coordinator_for(group)
        assert ops.net.connection(new).connects > (connects if new == coordinator else 0)
    finally:
        _check_stopped(sp)


# ----------------------------------------------------------------------------- one connection per member

def test_a_held_join_holds_up_no_other_member_of_the_client(kafka_server, ops_for):
    """Two members over one network client: while the coordinator holds the second
    member's JoinGroup (waiting for the first to rejoin), the first member's Heartbeat,
    OffsetFetch and JoinGroup go through.  On one shared coordinator connection they
    would queue behind the held JoinGroup (the broker answers a connection's requests in
    order) and time out after request_timeout_ms, well before the rebalance timeout."""
    ops = ops_for(kafka_server.bootstrap, request_timeout_ms=5000)
    topic, group = unique("held"), unique("g")
    create_topic(ops.net, topic, 2)
    ra = join(ops, group, "", [topic], member_key="a")
    assert lead(ops, group, ra, {topic: 2}, member_key="a").wait(30).error_code == 0
    assert ops.commit_offsets(group, {topic: {0: 7}}, generation_id=ra.generation_id,
                              member_id=ra.member_id) == {topic: {0: 0}}

    meta = encode_subscription(Subscription(topics=[topic]))

    def join_b(member_id: str):
        return ops.join_group(group, member_id, "consumer", [("range", meta)], session_timeout_ms=30000,
                              rebalance_timeout_ms=20000, client_id="t", member_key="b")

    first = join_b("").wait(30)
    assert first.error_code == MEMBER_ID_REQUIRED
    pb = join_b(first.member_id)
    # The coordinator has B's JoinGroup and holds it: A hears of the rebalance.
    wait_until(lambda: ops.heartbeat(group, ra.generation_id, ra.member_id) == REBALANCE_IN_PROGRESS,
               what="the coordinator to hold B's JoinGroup")
    assert not pb.done()
    fetched = ops.fetch_offsets(group, {topic: [0]})
    assert fetched.error_code == 0 and fetched.topics[topic][0].offset == 7
    assert not pb.done()
    pa = ops.join_group(group, ra.member_id, "consumer", [("range", meta)], session_timeout_ms=30000,
                        rebalance_timeout_ms=20000, client_id="t", member_key="a")
    ja, jb = pa.wait(30), pb.wait(30)
    assert (ja.error_code, jb.error_code) == (0, 0) and ja.generation_id == jb.generation_id == 2

    # Each member's JoinGroup and SyncGroup went on a connection of its own.
    coordinator = ops.net.cluster.coordinator_for(group)
    conns = ops.member_connections()
    assert conns == {"a": {extra_connection_id(coordinator, 1)}, "b": {extra_connection_id(coordinator, 2)}}
    (leader, lkey), (follower, fkey) = sorted([(ja, "a"), (jb, "b")], key=lambda x: not x[0].is_leader)
    pf = ops.sync_group(group, 2, follower.member_id, protocol_type="consumer", protocol_name="range",
                        member_key=fkey)
    sl = lead(ops, group, leader, {topic: 2}, member_key=lkey).wait(30)
    sf = pf.wait(30)
    assert (sl.error_code, sf.error_code) == (0, 0)
    parts = [decode_assignment(x.assignment).partitions[topic] for x in (sl, sf)]
    assert sorted(parts[0] + parts[1]) == [0, 1]
    ids = conns["a"] | conns["b"]
    assert ids <= set(ops.net._conns) and coordinator not in ids

    # Leaving and releasing closes and forgets each member's connection.
    assert ops.leave_group(group, [MemberIdentity(jb.member_id)]).error_code == 0
    ops.release_member("b")
    ops.release_member("a")
    assert ops.member_connections() == {}
    wait_until(lambda: not ids & set(ops.net._conns), what="the members' connections to be released")
    assert coordinator in ops.net._conns          # the shared one stays
    # A released member's key starts afresh, on the lowest free slot.
    again = join(ops, group, ja.member_id, [topic], member_key="c")
    assert again.error_code == 0
    assert ops.member_connections() == {"c": {extra_connection_id(coordinator, 1)}}


def _member_connection_ids(net) -> set[int]:
    return {i for i in list(net._conns) if i > 2**32 and net.cluster.is_coordinator_connection(i)}


def test_consumers_coming_and_going_leave_no_member_connection_behind(kafka_server):
    """Consumers of one client join, consume and close, three rounds of three: each has
    its own coordinator connection while it lives, and none is left after it closed
    (slots are reused, so the ids stay few)."""
    client = pylog.connect(kafka_server.bootstrap, client_id="churn")
    try:
        topic, group = unique("churn"), unique("g")
        client.create_topic(topic, 4)
        transport = client._transport
        net = transport.net
        for _ in range(3):
            cs = [client.consumer(topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
                  for _ in range(3)]

            def settled() -> bool:
                for c in cs:
                    c.poll(timeout_ms=0)
                owned = [tp for c in cs for tp in c.assignment()]
                return (len(owned) == len(set(owned)) == 4 and len({c.generation() for c in cs}) == 1
                        and all(c._state == "stable" for c in cs))

            wait_until(settled, timeout=60, what="three consumers to share the four partitions")
            live = _member_connection_ids(net)
            assert len(live) == 3 and len(transport._groups.member_connections()) == 3
            for c in cs:
                c.close()
            assert transport._groups.member_connections() == {}
            wait_until(lambda: not _member_connection_ids(net), what="the members' connections to be released")
        assert transport._groups._member_slot_count == 3
        assert client.describe_groups([group])[0].state == "Empty"
    finally:
        client.close()


class MovingCoordinator(ScriptedCoordinator):
    """A scripted coordinator in a two-broker fake cluster: both fakes name brokers 0
    and 1 and answer FindCoordinator with ``where["node"]``."""

    def __init__(self, script: dict[int, list[int]], cluster: dict) -> None:
        self.cluster = cluster
        super().__init__(script)

    def _body(self, key, req):
        nodes = self.cluster["ports"]
        if key == ApiKey.METADATA:
            R = m.MetadataResponse
            return R(brokers=[R.MetadataResponseBroker(node_id=i, host="127.0.0.1", port=p) for i, p in nodes.items()],
                     cluster_id="fake-cluster", controller_id=0, topics=[])
        if key == ApiKey.FIND_COORDINATOR:
            R = m.FindCoordinatorResponse
            node = self.cluster["coordinator"]
            return R(coordinators=[R.Coordinator(key=k, node_id=node, host="127.0.0.1", port=nodes[node])
                                   for k in req.coordinator_keys])
        return super()._body(key, req)


def test_a_members_connection_follows_the_coordinator_when_it_moves(ops_for):
    cluster: dict = {"coordinator": 0, "ports": {}}
    old = MovingCoordinator({ApiKey.JOIN_GROUP: [0, 16]}, cluster)
    new = MovingCoordinator({}, cluster)
    try:
        cluster["ports"].update({0: old.port, 1: new.port})
        ops = ops_for(old.bootstrap, retry_backoff_ms=10)

        def join_m():
            return ops.join_group("g", "m-1", "consumer", [("range", b"")], session_timeout_ms=10000,
                                  rebalance_timeout_ms=10000, client_id="t", member_key="m").wait(30)

        assert join_m().error_code == 0
        on_old = extra_connection_id(coordinator_node_id(0), 1)
        assert ops.member_connections() == {"m": {on_old}} and len(old.api_requests(ApiKey.JOIN_GROUP)) == 1
        # The group moves to broker 1: the old coordinator answers NOT_COORDINATOR, the
        # member's JoinGroup goes to the new one on a new connection of its own, and the
        # connection to the old one is released.
        cluster["coordinator"] = 1
        assert join_m().error_code == 0
        on_new = extra_connection_id(coordinator_node_id(1), 1)
        assert ops.member_connections() == {"m": {on_new}}
        assert len(old.api_requests(ApiKey.JOIN_GROUP)) == 2 and len(new.api_requests(ApiKey.JOIN_GROUP)) == 1
        wait_until(lambda: on_old not in ops.net._conns, what="the connection to the old coordinator to go")
        assert on_new in ops.net._conns
        ops.release_member("m")
        wait_until(lambda: on_new not in ops.net._conns, what="the member's connection to be released")
    finally:
        old.stop()
        new.stop()
