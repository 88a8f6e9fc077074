"""Consumer protocol bytes: round trips, kafka-python as an independent codec, bad input."""

import struct

import pytest
from _kafka_python import (
    ConsumerProtocolAssignment,
    ConsumerProtocolMemberAssignment_v0,
    ConsumerProtocolMemberMetadata_v0,
    ConsumerProtocolSubscription,
)
from hypothesis import given
from hypothesis import strategies as st

from pylog.broker.consumer_protocol import (
    Assignment,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from pylog.errors import InconsistentGroupProtocolError, InvalidRequestError

names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
partitions = st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6)
topic_partitions = st.dictionaries(names, partitions, max_size=4)
user_data = st.one_of(st.none(), st.binary(max_size=40))

subscriptions = st.builds(
    Subscription,
    topics=st.lists(names, max_size=5),
    user_data=user_data,
    owned_partitions=topic_partitions,
    generation_id=st.integers(-(2**31), 2**31 - 1),
    rack_id=st.one_of(st.none(), names),
)
assignments = st.builds(Assignment, partitions=topic_partitions, user_data=user_data)


def expected_at(sub: Subscription, version: int) -> Subscription:
    return Subscription(
        topics=list(sub.topics), user_data=sub.user_data,
        owned_partitions=sub.owned_partitions if version >= 1 else {},
        generation_id=sub.generation_id if version >= 2 else -1,
        rack_id=sub.rack_id if version >= 3 else None)


@given(subscriptions, st.integers(0, 3))
def test_subscription_round_trip(sub, version):
    data = encode_subscription(sub, version)
    assert struct.unpack(">h", data[:2])[0] == version
    assert decode_subscription(data) == expected_at(sub, version)


@given(assignments, st.integers(0, 3))
def test_assignment_round_trip(a, version):
    assert decode_assignment(encode_assignment(a, version)) == a


# --------------------------------------------------------------------------- differential

def to_kafka_python_subscription(sub: Subscription, version: int):
    tp = ConsumerProtocolSubscription.TopicPartition
    return ConsumerProtocolSubscription(
        version=version, topics=list(sub.topics), user_data=sub.user_data,
        owned_partitions=[tp(topic=t, partitions=ps) for t, ps in sub.owned_partitions.items()],
        generation_id=sub.generation_id, rack_id=sub.rack_id)


@given(subscriptions, st.integers(0, 3))
def test_subscription_bytes_equal_kafka_python(sub, version):
    theirs = to_kafka_python_subscription(sub, version).encode()
    assert encode_subscription(sub, version) == theirs
    assert decode_subscription(theirs) == expected_at(sub, version)


@given(subscriptions, st.integers(0, 3))
def test_kafka_python_decodes_our_subscription(sub, version):
    decoded = ConsumerProtocolSubscription.decode(encode_subscription(sub, version))
    assert decoded.topics == sub.topics
    assert decoded.user_data == sub.user_data
    if version >= 1:
        assert {tp.topic: tp.partitions for tp in decoded.owned_partitions} == sub.owned_partitions
    if version >= 2:
        assert decoded.generation_id == sub.generation_id
    if version >= 3:
        assert decoded.rack_id == sub.rack_id


@given(assignments, st.integers(0, 3))
def test_assignment_bytes_equal_kafka_python(a, version):
    tp = ConsumerProtocolAssignment.TopicPartition
    theirs = ConsumerProtocolAssignment(
        version=version, user_data=a.user_data,
        assigned_partitions=[tp(topic=t, partitions=ps) for t, ps in a.partitions.items()]).encode()
    assert encode_assignment(a, version) == theirs
    assert decode_assignment(theirs) == a


@given(st.lists(names, max_size=5), st.binary(max_size=30))
def test_v0_metadata_against_kafka_python_old_structs(topics, data):
    theirs = ConsumerProtocolMemberMetadata_v0(0, topics, data).encode()
    assert encode_subscription(Subscription(topics, data), 0) == theirs
    assert decode_subscription(theirs) == Subscription(topics, data)
    back = ConsumerProtocolMemberMetadata_v0.decode(encode_subscription(Subscription(topics, data), 0))
    assert (back.topics, back.user_data) == (topics, data)


@given(topic_partitions, st.binary(max_size=30))
def test_v0_assignment_against_kafka_python_old_structs(tps, data):
    theirs = ConsumerProtocolMemberAssignment_v0(0, list(tps.items()), data).encode()
    assert encode_assignment(Assignment(tps, data), 0) == theirs
    assert decode_assignment(theirs) == Assignment(tps, data)
    back = ConsumerProtocolMemberAssignment_v0.decode(encode_assignment(Assignment(tps, data), 0))
    assert dict(back.assigned_partitions) == tps


# --------------------------------------------------------------------------- versions

def test_newer_versions_read_as_newest_known_and_trailing_bytes_ignored():
    sub = Subscription(["a"], b"u", {"a": [1]}, 9, "rack-1")
    body = encode_subscription(sub, 3)[2:]
    assert decode_subscription(struct.pack(">h", 7) + body + b"future fields") == sub
    a = Assignment({"t": [0, 3]}, None)
    assert decode_assignment(struct.pack(">h", 5) + encode_assignment(a)[2:] + b"\x00\x01") == a


def test_empty_assignment_bytes_mean_no_partitions():
    assert decode_assignment(b"") == Assignment()


def test_repeated_topic_entries_merge():
    raw = (struct.pack(">hi", 0, 2) + struct.pack(">h", 1) + b"t" + struct.pack(">ii", 1, 0)
           + struct.pack(">h", 1) + b"t" + struct.pack(">ii", 1, 5) + struct.pack(">i", -1))
    assert decode_assignment(raw).partitions == {"t": [0, 5]}


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_every_truncation_of_a_subscription_is_rejected_cleanly(version):
    data = encode_subscription(Subscription(["alpha", "beta"], b"xyz", {"alpha": [0, 1]}, 4, "r"), version)
    for cut in range(len(data)):
        with pytest.raises(InconsistentGroupProtocolError):
            decode_subscription(data[:cut])


def test_every_truncation_of_an_assignment_is_rejected_cleanly():
    data = encode_assignment(Assignment({"alpha": [0, 1], "b": [7]}, b"ud"))
    for cut in range(1, len(data)):
        with pytest.raises(InconsistentGroupProtocolError):
            decode_assignment(data[:cut])


@pytest.mark.parametrize("raw", [
    struct.pack(">h", -1) + b"\x00" * 10,                       # negative version
    struct.pack(">hi", 0, 2**31 - 1),                           # absurd topic count
    struct.pack(">hih", 0, 1, -5),                              # negative string length
    struct.pack(">hih", 0, 1, 2) + b"\xff\xfe" + b"\xff" * 4,   # topic name not UTF-8
    struct.pack(">hii", 0, 0, -7),                              # bad user_data length
])
def test_malformed_subscriptions(raw):
    with pytest.raises(InconsistentGroupProtocolError):
        decode_subscription(raw)


@given(st.binary(max_size=80))
def test_random_bytes_only_raise_the_protocol_error(raw):
    for decode in (decode_subscription, decode_assignment):
        try:
            decode(raw)
        except InconsistentGroupProtocolError:
            pass


def test_decoding_non_bytes_is_a_protocol_error():
    with pytest.raises(InconsistentGroupProtocolError):
        decode_subscription(12345)


@pytest.mark.parametrize("sub", [
    Subscription("topic-as-a-string"),
    Subscription([1, 2]),
    Subscription(["t"], user_data="not bytes"),
    Subscription(["t"], owned_partitions={"t": ["x"]}),
    Subscription(["t"], owned_partitions={"t": [2**31]}),
    Subscription(["t"], owned_partitions=[("t", [0])]),
    Subscription(["t"], generation_id=2**40),
    Subscription(["t"], rack_id=5),
    Subscription(["x" * 40000]),
])
def test_encoding_bad_subscriptions_raises_invalid_request(sub):
    with pytest.raises(InvalidRequestError):
        encode_subscription(sub, 3)


def test_encoding_bad_versions_raises_invalid_request():
    with pytest.raises(InvalidRequestError):
        encode_subscription(Subscription(["t"]), 4)
    with pytest.raises(InvalidRequestError):
        encode_assignment(Assignment(), -1)
    with pytest.raises(InvalidRequestError):
        encode_assignment(Assignment({"t": None}))
