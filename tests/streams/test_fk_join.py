"""Foreign-key table-table joins (KIP-213) through the TopologyTestDriver: inner and left
joins, a foreign key that changes, left rows deleted, right rows updated and deleted,
null foreign keys, stale responses, Kafka's bytes on the internal topics, and a model
check of the final result against a brute-force join of the final tables.

The expected records and bytes were produced by Apache Kafka Streams 4.4's own
TopologyTestDriver for the same programs (tests/streams/kafka_diff compares many more
random cases with Kafka directly).
"""

from __future__ import annotations

import random

import pytest

from pylog.streams import Materialized, Serdes, StreamsBuilder, TableJoined, TopologyError, TopologyTestDriver
from pylog.streams.fk_join import (DELETE_KEY_AND_PROPAGATE, PROPAGATE_ONLY_IF_FK_VAL_AVAILABLE,
                                   SubscriptionResponseWrapper, SubscriptionWrapper, _response_partitioner,
                                   murmur3_hash128,
                                   response_serde, subscription_serde)

from .conftest import CONFIG, driver_for

S = Serdes.string()
SUB = "app-KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000006-topic"
RESP = "app-KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-0000000014-topic"


#: Kafka Streams 4.4's ``describe()`` of ``fk_join`` (inner) below, as Java prints it
KAFKA_DESCRIBE = (
    'Topologies:\n'
    '   Sub-topology: 0\n'
    '    Source: KTABLE-SOURCE-0000000016 (topics: [KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-0000000014-topic])\n'
    '      --> KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER-PROCESSOR-0000000017\n'
    '    Source: KSTREAM-SOURCE-0000000001 (topics: [left])\n'
    '      --> KTABLE-SOURCE-0000000002\n'
    '    Processor: KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER-PROCESSOR-0000000017 (stores: [left-STATE-STORE-0000000000])\n'
    '      --> KTABLE-FK-JOIN-OUTPUT-0000000018\n'
    '      <-- KTABLE-SOURCE-0000000016\n'
    '    Processor: KTABLE-FK-JOIN-OUTPUT-0000000018 (stores: [])\n'
    '      --> KTABLE-TOSTREAM-0000000020\n'
    '      <-- KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER-PROCESSOR-0000000017\n'
    '    Processor: KTABLE-SOURCE-0000000002 (stores: [left-STATE-STORE-0000000000])\n'
    '      --> KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000007\n'
    '      <-- KSTREAM-SOURCE-0000000001\n'
    '    Processor: KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000007 (stores: [])\n'
    '      --> KTABLE-SINK-0000000008\n'
    '      <-- KTABLE-SOURCE-0000000002\n'
    '    Processor: KTABLE-TOSTREAM-0000000020 (stores: [])\n'
    '      --> KSTREAM-SINK-0000000021\n'
    '      <-- KTABLE-FK-JOIN-OUTPUT-0000000018\n'
    '    Sink: KSTREAM-SINK-0000000021 (topic: out)\n'
    '      <-- KTABLE-TOSTREAM-0000000020\n'
    '    Sink: KTABLE-SINK-0000000008 (topic: KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000006-topic)\n'
    '      <-- KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000007\n'
    '\n'
    '  Sub-topology: 1\n'
    '    Source: KSTREAM-SOURCE-0000000004 (topics: [right])\n'
    '      --> KTABLE-SOURCE-0000000005\n'
    '    Source: KTABLE-SOURCE-0000000009 (topics: [KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-0000000006-topic])\n'
    '      --> KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000011\n'
    '    Processor: KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000011 (stores: [KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-0000000010])\n'
    '      --> KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000012\n'
    '      <-- KTABLE-SOURCE-0000000009\n'
    '    Processor: KTABLE-SOURCE-0000000005 (stores: [right-STATE-STORE-0000000003])\n'
    '      --> KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000013\n'
    '      <-- KSTREAM-SOURCE-0000000004\n'
    '    Processor: KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000012 (stores: [right-STATE-STORE-0000000003])\n'
    '      --> KTABLE-SINK-0000000015\n'
    '      <-- KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000011\n'
    '    Processor: KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000013 (stores: [KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-0000000010])\n'
    '      --> KTABLE-SINK-0000000015\n'
    '      <-- KTABLE-SOURCE-0000000005\n'
    '    Sink: KTABLE-SINK-0000000015 (topic: KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-0000000014-topic)\n'
    '      <-- KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000012, KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR-0000000013\n'
    '\n'
)


def j(x, y):
    return f"{x}+{y}"


def fk_of(v):
    """Left rows are ``"<fk>:<anything>"``; ``"-"`` means no foreign key."""
    return None if v.startswith("-") else v.split(":")[0]


def fk_join(builder, kind="inner", **kw):
    left, right = builder.table("left"), builder.table("right")
    result = (left.join if kind == "inner" else left.left_join)(right, fk_of, j, **kw)
    result.to_stream().to("out")
    return result


def run(builder, records):
    """Pipe ``(topic, key, value, ts)`` records; return what reached ``out`` and the
    driver's dropped-records count."""
    with driver_for(builder) as d:
        topics = {t: d.create_input_topic(t, S, S) for t in ("left", "right")}
        for topic, k, v, ts in records:
            topics[topic].pipe_input(k, v, ts)
        out = [(r.key, r.value, r.timestamp) for r in d.create_output_topic("out", S, S).read_records_to_list()]
        return out, d.metrics().get("dropped-records", 0)


def test_murmur3_hash128_is_kafkas():
    # Kafka 4.4's Murmur3.hash128 of the same bytes (the two longs, written big-endian)
    for data, h1, h2 in [(b"", -7122613646888064702, -8341524471658347240),
                         (b"a", 3702349557448790408, -1601067453332442517),
                         (b"hello world", -4798133121895066616, 9029944334911407145),
                         (b"0123456789abcdef", 1904622552327088487, -2893518741649893711),
                         ("0123456789abcdefXYZ\u00ff\u0080".encode(), -5429068164328086148, -6180023354905575983)]:
        assert murmur3_hash128(data) == h1.to_bytes(8, "big", signed=True) + h2.to_bytes(8, "big", signed=True)


def test_inner_join_follows_a_changing_foreign_key_and_a_deleted_left_row(builder):
    fk_join(builder)
    out, dropped = run(builder, [("right", "f1", "R1", 5), ("left", "p1", "f1:x", 10),
                                 ("left", "p1", "f2:x", 11),   # f2 has no row yet: the old result goes
                                 ("right", "f2", "R2", 3),      # f2 arrives: joined at the right row's time
                                 ("left", "p1", None, 12)])
    assert out == [("p1", "f1:x+R1", 10), ("p1", None, 11), ("p1", "f2:x+R2", 3), ("p1", None, 12)]
    assert dropped == 0


def test_describe_is_kafkas(builder):
    fk_join(builder)
    assert str(builder.build().describe()) == KAFKA_DESCRIBE


def test_the_internal_topics_carry_kafkas_bytes(builder):
    fk_join(builder)
    with driver_for(builder) as d:
        left, right = d.create_input_topic("left", S, S), d.create_input_topic("right", S, S)
        right.pipe_input("f1", "R1", 5)
        left.pipe_input("p1", "f1:x", 10)
        left.pipe_input("p1", "f2:x", 11)
        right.pipe_input("f2", "R2", 3)
        left.pipe_input("p1", None, 12)

        def raw(topic):
            return [(r.key.hex(), None if r.value is None else bytes(r.value).hex(), r.timestamp)
                    for r in d.create_output_topic(topic).read_records_to_list()]
        # as Kafka Streams 4.4 writes them for the same input
        assert raw(SUB) == [("6631", "0103ac4119ca2e77b628df9383cf1ca8e004703100000000", 10),
                            ("6631", "0100dec1709df8cf9316bffa5ac9027d4868703100000000", 11),
                            ("6632", "0102dec1709df8cf9316bffa5ac9027d4868703100000000", 11),
                            ("6632", "8101703100000000", 12)]
        assert raw(RESP) == [("7031", "00ac4119ca2e77b628df9383cf1ca8e0045231", 10),
                             ("7031", "00dec1709df8cf9316bffa5ac9027d4868", 11),
                             ("7031", "00dec1709df8cf9316bffa5ac9027d48685232", 3),
                             ("7031", "80", 12)]
        assert raw("app-KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-0000000010-changelog") == [
            ("0000000266317031", "0103ac4119ca2e77b628df9383cf1ca8e004703100000000", 10),
            ("0000000266317031", None, 11),
            ("0000000266327031", "0102dec1709df8cf9316bffa5ac9027d4868703100000000", 11),
            ("0000000266327031", None, 12)]


def test_wrapper_serdes_round_trip_kafkas_bytes():
    sub = subscription_serde(S)
    w = sub.deserialize(bytes.fromhex("0103ac4119ca2e77b628df9383cf1ca8e004703100000000"))
    assert (w.version, w.instruction, w.primary_key, w.primary_partition) == (1, PROPAGATE_ONLY_IF_FK_VAL_AVAILABLE,
                                                                              "p1", 0)
    assert w.hash == bytes.fromhex("ac4119ca2e77b628df9383cf1ca8e004") == murmur3_hash128(b"f1:x")
    assert sub.serialize(w).hex() == "0103ac4119ca2e77b628df9383cf1ca8e004703100000000"
    gone = SubscriptionWrapper(None, DELETE_KEY_AND_PROPAGATE, "p1", 7)
    assert sub.serialize(gone).hex() == "8101703100000007"
    v0 = sub.deserialize(bytes.fromhex("0001") + murmur3_hash128(b"x") + b"pk")   # Kafka < 3.5 wrote v0
    assert (v0.version, v0.primary_key, v0.primary_partition) == (0, "pk", None)
    resp = response_serde(S)
    r = resp.deserialize(bytes.fromhex("00dec1709df8cf9316bffa5ac9027d48685232"))
    assert (r.foreign_value, r.hash.hex()) == ("R2", "dec1709df8cf9316bffa5ac9027d4868")
    assert resp.serialize(SubscriptionResponseWrapper(None, None, 3)) == b"\x80"
    assert resp.deserialize(b"\x80").foreign_value is None
    with pytest.raises(Exception, match="version"):
        sub.deserialize(bytes.fromhex("0203") + bytes(16) + b"pk\x00\x00\x00\x00")
    with pytest.raises(Exception, match="truncated"):
        resp.deserialize(bytes.fromhex("00dec1"))


def test_responses_go_back_to_the_subscribing_partition():
    resp = response_serde(S)
    to_home = _response_partitioner(lambda topic, k, v, n: 1)
    assert to_home("t", b"k", resp.serialize(SubscriptionResponseWrapper(None, "x", 2)), 3) == 2
    # a subscription written without its partition (Kafka < 3.5): the left partitioner decides
    assert to_home("t", b"k", resp.serialize(SubscriptionResponseWrapper(None, "x", None)), 3) == 1
    assert _response_partitioner(None)("t", b"k", resp.serialize(SubscriptionResponseWrapper(None, "x", None)), 3) is None


def test_left_join_keeps_unmatched_rows_and_null_foreign_keys(builder):
    fk_join(builder, "left")
    out, dropped = run(builder, [("left", "p1", "f1:x", 1),      # no right row: joined with None
                                 ("right", "f1", "R1", 2),
                                 ("left", "p2", "-:y", 3),       # no foreign key: joined with None
                                 ("right", "f1", None, 4),       # the right row goes: back to None
                                 ("left", "p2", None, 5),        # a left row goes: tombstone
                                 ("left", "p3", None, 6)])       # deleting nothing: no output
    assert out == [("p1", "f1:x+None", 1), ("p1", "f1:x+R1", 2), ("p2", "-:y+None", 3),
                   ("p1", "f1:x+None", 4), ("p2", None, 5)]
    assert dropped == 0


def test_inner_join_drops_null_foreign_keys_and_retracts_a_row_whose_key_goes_null(builder):
    fk_join(builder)
    out, dropped = run(builder, [("right", "f1", "R1", 1),
                                 ("left", "p1", "-:none", 2),    # dropped (and counted)
                                 ("left", "p2", "f1:x", 3),
                                 ("left", "p2", "-:gone", 4)])   # valid -> null key: result deleted
    assert out == [("p2", "f1:x+R1", 3), ("p2", None, 4)]
    assert dropped == 2


def test_right_updates_reach_every_subscriber_and_right_deletes_retract(builder):
    fk_join(builder)
    out, _ = run(builder, [("left", "p1", "f1:a", 1), ("left", "p2", "f1:b", 2), ("left", "p3", "f2:c", 3),
                           ("right", "f1", "R1", 4),
                           ("right", "f1", "R1'", 5),
                           ("right", "f1", None, 6),
                           ("right", "f1", None, 7)])   # a second delete still answers every subscriber
    assert out == [("p1", "f1:a+R1", 4), ("p2", "f1:b+R1", 4), ("p1", "f1:a+R1'", 5), ("p2", "f1:b+R1'", 5),
                   ("p1", None, 6), ("p2", None, 6), ("p1", None, 7), ("p2", None, 7)]


def test_an_unchanged_foreign_key_sends_no_idempotent_delete(builder):
    fk_join(builder)
    out, _ = run(builder, [("left", "p1", "f1:a", 1), ("left", "p1", "f1:b", 2), ("right", "f1", "R", 3),
                           ("left", "p1", "f1:c", 4)])
    assert out == [("p1", "f1:b+R", 3), ("p1", "f1:c+R", 4)]


def test_a_stale_response_is_dropped(builder):
    """A response whose hash is not that of the left row's current value answered an
    update that has since been overtaken: the resolver drops it."""
    fk_join(builder)
    resp = response_serde(S)
    with driver_for(builder) as d:
        d.create_input_topic("left", S, S).pipe_input("p1", "f1:new", 10)
        out = d.create_output_topic("out", S, S)
        assert out.read_records_to_list() == []   # f1 has no row
        stale = SubscriptionResponseWrapper(murmur3_hash128(b"f1:old"), "R1", 0)
        d.pipe_raw(RESP, b"p1", resp.serialize(stale), 11)
        assert out.read_records_to_list() == []
        assert d.metrics().get("dropped-records", 0) == 1   # Kafka 4 counts it
        fresh = SubscriptionResponseWrapper(murmur3_hash128(b"f1:new"), "R1", 0)
        d.pipe_raw(RESP, b"p1", resp.serialize(fresh), 12)
        assert [(r.key, r.value, r.timestamp) for r in out.read_records_to_list()] == [("p1", "f1:new+R1", 12)]


def test_named_and_materialized_join_is_queryable_and_described_as_kafka_does(builder):
    fk_join(builder, "left", table_joined=TableJoined.as_("orders-customers"), materialized=Materialized.as_("joined"))
    with driver_for(builder) as d:
        d.create_input_topic("right", S, S).pipe_input("c1", "Ann", 1)
        d.create_input_topic("left", S, S).pipe_input("o1", "c1:book", 2)
        assert d.get_key_value_store("joined").get("o1") == "c1:book+Ann"
        assert "orders-customers-subscription-store" in d.get_all_state_stores()
    text = str(builder.build().describe())
    # names as Kafka Streams 4.4 gives them; indexes are spent even for named nodes
    for line in ["Source: orders-customers-subscription-response-source "
                 "(topics: [orders-customers-subscription-response-topic])",
                 "Processor: orders-customers-result (stores: [joined])",
                 "Processor: orders-customers-subscription-receive (stores: [orders-customers-subscription-store])",
                 "Sink: orders-customers-subscription-response-sink (topic: orders-customers-subscription-response-topic)",
                 "      <-- orders-customers-subscription-join-foreign, orders-customers-foreign-join-subscription",
                 "Processor: KTABLE-TOSTREAM-0000000019 (stores: [])"]:   # a named store spends no index
        assert line in text, line


def test_persistent_result_keeps_its_subscriptions_in_a_persistent_store(tmp_path):
    b = StreamsBuilder(CONFIG)
    fk_join(b, materialized=Materialized("joined", store_type="persistent"))
    cfg = dict(CONFIG, **{"state.dir": str(tmp_path)})
    with TopologyTestDriver(b.build(), cfg, initial_wall_clock_time_ms=0) as d:
        d.create_input_topic("right", S, S).pipe_input("f1", "R1", 1)
        d.create_input_topic("left", S, S).pipe_input("p1", "f1:x", 2)
        stores = d.get_all_state_stores()
        assert stores["KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-0000000010"].persistent
        assert stores["joined"].persistent
        assert d.get_key_value_store("joined").get("p1") == "f1:x+R1"


def test_extractor_may_take_the_key(builder):
    left, right = builder.table("left"), builder.table("right")
    left.join(right, lambda k, v: f"{k[0]}{v}", j).to_stream().to("out")
    out, _ = run(builder, [("right", "p1", "R", 1), ("left", "pz", "1", 2)])
    assert out == [("pz", "1+R", 2)]


def test_arguments_are_checked(builder):
    left, right = builder.table("left"), builder.table("right")
    with pytest.raises(TopologyError, match="KTable"):
        left.join(builder.stream("s"), fk_of, j)
    with pytest.raises(TypeError, match="join takes"):
        left.join(right)
    # the equal-key table join still takes (other, joiner, named)
    left.join(right, j, "by-key").to_stream().to("out")
    assert "by-key" in builder.topology.nodes


@pytest.mark.parametrize("kind", ["inner", "left"])
@pytest.mark.parametrize("seed", range(4))
def test_final_result_is_the_join_of_the_final_tables(kind, seed):
    """Model check: whatever the order of updates, once everything is processed the
    result table is the foreign-key join of the final left and right tables."""
    rnd = random.Random(seed)
    b = StreamsBuilder(CONFIG)
    fk_join(b, kind, materialized="result")
    left, right = {}, {}
    with TopologyTestDriver(b.build(), CONFIG, initial_wall_clock_time_ms=0) as d:
        li, ri = d.create_input_topic("left", S, S), d.create_input_topic("right", S, S)
        for i in range(200):
            ts = rnd.randint(0, 1000)
            if rnd.random() < 0.4:
                k, v = rnd.choice("abcd"), rnd.choice([None, f"R{i}"])
                ri.pipe_input(k, v, ts)
                right.pop(k, None) if v is None else right.__setitem__(k, v)
            else:
                k, v = f"p{rnd.randint(0, 9)}", rnd.choice([None, f"{rnd.choice('abcde-')}:{i}"])
                li.pipe_input(k, v, ts)
                left.pop(k, None) if v is None else left.__setitem__(k, v)
        store = dict(d.get_key_value_store("result").all())
        # the output topic, read as a changelog, ends in the same table
        table = {}
        for r in d.create_output_topic("out", S, S).read_records_to_list():
            table.pop(r.key, None) if r.value is None else table.__setitem__(r.key, r.value)
    expected = {}
    for pk, v in left.items():
        fk = fk_of(v)
        if fk in right:
            expected[pk] = j(v, right[fk])
        elif kind == "left":
            expected[pk] = j(v, None)
    assert store == expected
    assert table == expected
