"""__consumer_offsets records: exact bytes, kafka-python's generic codec as an oracle, bounded
decoding, partition_for_group, replay."""

import io
import struct
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylog.broker.group_offsets import (
    GroupMetadataKey,
    GroupMetadataValue,
    InMemoryOffsetStore,
    MemberMetadata,
    OffsetCommitKey,
    OffsetCommitValue,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_key,
    encode_group_metadata_value,
    encode_offset_commit_key,
    encode_offset_commit_value,
    group_metadata_record,
    group_metadata_tombstone,
    java_string_hash,
    offset_commit_record,
    offset_commit_tombstone,
    partition_for_group,
    replay,
)
from pylog.errors import (
    CorruptRecordError,
    InvalidRequestError,
    NotLeaderError,
    UnsupportedVersionError,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.data_container import DataContainer
    from kafka.protocol.schemas import StructField


# --------------------------------------------------------------------------- an independent codec
# kafka-python's generic schema codec, driven by the record layouts declared here.

def _codec(declaration):
    struct_field = StructField(declaration)
    cls = type(declaration["name"], (DataContainer,), {"_struct": struct_field})
    struct_field.set_data_class(cls)
    return cls


OffsetCommitValueOracle = _codec({
    "name": "OffsetCommitValue", "type": "data", "validVersions": "0-4", "flexibleVersions": "4+",
    "fields": [
        {"name": "offset", "type": "int64", "versions": "0+"},
        {"name": "leaderEpoch", "type": "int32", "versions": "3+", "default": -1},
        {"name": "metadata", "type": "string", "versions": "0+"},
        {"name": "commitTimestamp", "type": "int64", "versions": "0+"},
        {"name": "expireTimestamp", "type": "int64", "versions": "1", "default": -1},
    ]})

GroupMetadataValueOracle = _codec({
    "name": "GroupMetadataValue", "type": "data", "validVersions": "0-4", "flexibleVersions": "4+",
    "fields": [
        {"name": "protocolType", "type": "string", "versions": "0+"},
        {"name": "generation", "type": "int32", "versions": "0+"},
        {"name": "protocol", "type": "string", "versions": "0+", "nullableVersions": "0+"},
        {"name": "leader", "type": "string", "versions": "0+", "nullableVersions": "0+"},
        {"name": "currentStateTimestamp", "type": "int64", "versions": "2+", "default": -1},
        {"name": "members", "type": "[]MemberMetadata", "versions": "0+", "fields": [
            {"name": "memberId", "type": "string", "versions": "0+"},
            {"name": "groupInstanceId", "type": "string", "versions": "3+",
             "nullableVersions": "3+", "default": "null"},
            {"name": "clientId", "type": "string", "versions": "0+"},
            {"name": "clientHost", "type": "string", "versions": "0+"},
            {"name": "rebalanceTimeout", "type": "int32", "versions": "1+", "default": -1},
            {"name": "sessionTimeout", "type": "int32", "versions": "0+"},
            {"name": "subscription", "type": "bytes", "versions": "0+"},
            {"name": "assignment", "type": "bytes", "versions": "0+"},
        ]},
    ]})


def oracle_encode(cls, obj, version):
    flexible = version >= 4
    return struct.pack(">h", version) + cls._struct.encode(obj, version=version, compact=flexible,
                                                           tagged=flexible)


def oracle_decode(cls, data, version):
    flexible = version >= 4
    return cls._struct.decode(io.BytesIO(data[2:]), version=version, compact=flexible, tagged=flexible)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)

offset_values = st.builds(OffsetCommitValue, offset=int64, metadata=text, commit_timestamp=int64,
                          leader_epoch=int32, expire_timestamp=st.just(-1))
members = st.builds(MemberMetadata, member_id=text, client_id=text, client_host=text,
                    session_timeout=int32, subscription=st.binary(max_size=20),
                    assignment=st.binary(max_size=20), rebalance_timeout=int32,
                    group_instance_id=st.one_of(st.none(), text))
group_values = st.builds(GroupMetadataValue, protocol_type=text, generation=int32,
                         protocol=st.one_of(st.none(), text), leader=st.one_of(st.none(), text),
                         current_state_timestamp=int64, members=st.lists(members, max_size=3))


def offset_value_at(v: OffsetCommitValue, version: int) -> OffsetCommitValue:
    return OffsetCommitValue(v.offset, v.metadata, v.commit_timestamp,
                             v.leader_epoch if version >= 3 else -1,
                             v.expire_timestamp if version == 1 else -1)


def group_value_at(v: GroupMetadataValue, version: int) -> GroupMetadataValue:
    return GroupMetadataValue(
        v.protocol_type, v.generation, v.protocol, v.leader,
        v.current_state_timestamp if version >= 2 else -1,
        [MemberMetadata(m.member_id, m.client_id, m.client_host, m.session_timeout, m.subscription,
                        m.assignment, m.rebalance_timeout if version >= 1 else -1,
                        m.group_instance_id if version >= 3 else None) for m in v.members])


@given(offset_values, st.sampled_from([0, 2, 3, 4]))
def test_offset_commit_value_matches_oracle(value, version):
    ours = encode_offset_commit_value(value, version)
    theirs = oracle_encode(OffsetCommitValueOracle, OffsetCommitValueOracle(
        version=version, offset=value.offset, leader_epoch=value.leader_epoch, metadata=value.metadata,
        commit_timestamp=value.commit_timestamp), version)
    assert ours == theirs
    assert decode_offset_commit_value(theirs) == offset_value_at(value, version)


@given(int64, text, int64, int64)
def test_offset_commit_value_v1_holds_the_expire_timestamp(offset, metadata, commit_ts, expire_ts):
    value = OffsetCommitValue(offset, metadata, commit_ts, expire_timestamp=expire_ts)
    data = encode_offset_commit_value(value)        # default version: what Kafka writes
    if expire_ts == -1:
        assert data[:2] == b"\x00\x03"
        return
    assert data[:2] == b"\x00\x01"
    back = oracle_decode(OffsetCommitValueOracle, data, 1)
    assert (back.offset, back.metadata, back.commit_timestamp, back.expire_timestamp) == \
        (offset, metadata, commit_ts, expire_ts)
    assert decode_offset_commit_value(data) == value


@given(group_values, st.integers(0, 4))
def test_group_metadata_value_matches_oracle(value, version):
    M = GroupMetadataValueOracle.MemberMetadata
    oracle_value = GroupMetadataValueOracle(
        version=version, protocol_type=value.protocol_type, generation=value.generation,
        protocol=value.protocol, leader=value.leader,
        current_state_timestamp=value.current_state_timestamp,
        members=[M(version=version, member_id=m.member_id, group_instance_id=m.group_instance_id,
                   client_id=m.client_id, client_host=m.client_host,
                   rebalance_timeout=m.rebalance_timeout, session_timeout=m.session_timeout,
                   subscription=m.subscription, assignment=m.assignment) for m in value.members])
    theirs = oracle_encode(GroupMetadataValueOracle, oracle_value, version)
    assert encode_group_metadata_value(value, version) == theirs
    assert decode_group_metadata_value(theirs) == group_value_at(value, version)


def test_exact_key_bytes():
    assert encode_offset_commit_key("g", "topic", 7) == (
        struct.pack(">hh", 1, 1) + b"g" + struct.pack(">h", 5) + b"topic" + struct.pack(">i", 7))
    assert encode_group_metadata_key("my-group") == struct.pack(">hh", 2, 8) + b"my-group"
    assert decode_key(encode_offset_commit_key("g", "topic", 7)) == OffsetCommitKey("g", "topic", 7)
    assert decode_key(encode_group_metadata_key("g")) == GroupMetadataKey("g")
    # Version 0 offset keys (older brokers) read the same.
    assert decode_key(struct.pack(">hh", 0, 1) + b"g" + struct.pack(">h", 1) + b"t"
                      + struct.pack(">i", 3)) == OffsetCommitKey("g", "t", 3)


def test_default_value_versions_are_what_kafka_writes():
    assert encode_offset_commit_value(OffsetCommitValue(1, "", 2))[:2] == struct.pack(">h", 3)
    assert encode_group_metadata_value(GroupMetadataValue("consumer", 1))[:2] == struct.pack(">h", 3)


def test_newer_value_versions_read_as_v4():
    data = encode_offset_commit_value(OffsetCommitValue(9, "m", 5, 2), 4)
    assert decode_offset_commit_value(struct.pack(">h", 6) + data[2:]) == OffsetCommitValue(9, "m", 5, 2)


def test_tagged_fields_are_skipped():
    data = encode_offset_commit_value(OffsetCommitValue(9, "m", 5, 2), 4)
    # one tagged field: tag 3, 2 bytes of data
    tagged = data[:-1] + b"\x01\x03\x02xy"
    assert decode_offset_commit_value(tagged) == OffsetCommitValue(9, "m", 5, 2)


# --------------------------------------------------------------------------- bad bytes

def test_every_truncation_is_a_corrupt_record():
    samples = [
        (decode_key, encode_offset_commit_key("group", "topic", 3)),
        (decode_key, encode_group_metadata_key("group")),
        (decode_offset_commit_value, encode_offset_commit_value(OffsetCommitValue(5, "meta", 7, 1))),
        (decode_offset_commit_value, encode_offset_commit_value(OffsetCommitValue(5, "meta", 7, 1), 4)),
    ]
    for version in range(5):
        samples.append((decode_group_metadata_value, encode_group_metadata_value(GroupMetadataValue(
            "consumer", 3, "range", "m", 11,
            [MemberMetadata("m", "c", "h", 10, b"s", b"a", 20, "i")]), version)))
    for decode, data in samples:
        for cut in range(len(data)):
            with pytest.raises(CorruptRecordError):
                decode(data[:cut])


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_corrupt_record(raw):
    for decode in (decode_offset_commit_value, decode_group_metadata_value):
        try:
            decode(raw)
        except CorruptRecordError:
            pass
    try:
        decode_key(raw)
    except (CorruptRecordError, UnsupportedVersionError):
        pass


def test_key_errors():
    with pytest.raises(UnsupportedVersionError):
        decode_key(struct.pack(">h", 3) + b"whatever")            # KIP-848 record types
    with pytest.raises(CorruptRecordError):
        decode_key(struct.pack(">h", -2))
    with pytest.raises(CorruptRecordError):
        decode_key(encode_group_metadata_key("g") + b"extra")
    with pytest.raises(CorruptRecordError):
        decode_group_metadata_value(struct.pack(">hh", 3, 0) + struct.pack(">i", 0) + b"\xff\xff\xff\xff"
                                    + struct.pack(">q", 0) + struct.pack(">i", 10**8))


def test_encode_rejects_bad_values():
    with pytest.raises(InvalidRequestError):
        encode_offset_commit_value(OffsetCommitValue(2**63, "", 0))
    with pytest.raises(InvalidRequestError):
        encode_offset_commit_value(OffsetCommitValue(1, "", 0, expire_timestamp=5), 3)
    with pytest.raises(InvalidRequestError):
        encode_offset_commit_value(OffsetCommitValue(1, None, 0))
    with pytest.raises(InvalidRequestError):
        encode_group_metadata_value(GroupMetadataValue("consumer", 1), 5)
    with pytest.raises(InvalidRequestError):
        encode_offset_commit_key("g", "t" * 40000, 0)


# --------------------------------------------------------------------------- partition_for_group

def java_hash_oracle(s: str) -> int:
    units = [int.from_bytes(s.encode("utf-16-be", "surrogatepass")[i:i + 2], "big")
             for i in range(0, len(s.encode("utf-16-be", "surrogatepass")), 2)]
    h = sum(u * 31 ** (len(units) - 1 - i) for i, u in enumerate(units)) % 2**32
    return h - 2**32 if h >= 2**31 else h


@given(st.text(max_size=30))
def test_java_string_hash(s):
    assert java_string_hash(s) == java_hash_oracle(s)


def test_partition_for_group_known_values():
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    # The classic string whose hashCode is Integer.MIN_VALUE: Utils.abs maps it to 0.
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert partition_for_group("polygenelubricants") == 0
    assert partition_for_group("hello") == 99162322 % 50


@given(st.text(max_size=30), st.integers(1, 200))
def test_partition_for_group_uses_abs_not_to_positive(group, n):
    h = java_hash_oracle(group)
    expected = (0 if h == -(2**31) else abs(h)) % n
    assert partition_for_group(group, n) == expected


def test_partition_for_group_bad_arguments():
    with pytest.raises(InvalidRequestError):
        partition_for_group("g", 0)
    with pytest.raises(InvalidRequestError):
        partition_for_group(None)


# --------------------------------------------------------------------------- replay and store

def test_replay_applies_records_in_order_with_tombstones():
    v = lambda o: OffsetCommitValue(o, f"m{o}", 1000 + o)   # noqa: E731
    g = GroupMetadataValue("consumer", 4, "range", "m1", 77,
                           [MemberMetadata("m1", "c", "/h", 10000, b"sub", b"asg", 30000, None)])
    records = [
        offset_commit_record("g1", "t", 0, v(5)),
        offset_commit_record("g1", "t", 0, v(9)),
        offset_commit_record("g1", "t", 1, v(3)),
        offset_commit_record("g2", "u", 0, v(1)),
        group_metadata_record("g1", g),
        offset_commit_tombstone("g1", "t", 1),
        offset_commit_tombstone("g2", "u", 0),
        group_metadata_record("g3", GroupMetadataValue("consumer", 1)),
        group_metadata_tombstone("g3"),
        (struct.pack(">h", 5) + b"some newer record type", b"value"),
    ]
    state = replay(records)
    assert state.offsets == {"g1": {("t", 0): v(9)}}
    assert state.groups == {"g1": g}
    assert state.skipped == 1
    # Feeding in two pieces gives the same state.
    again = replay(records[4:], replay(records[:4]))
    assert again == state


def test_replay_rejects_corrupt_records():
    with pytest.raises(CorruptRecordError):
        replay([(b"\x00", b"")])
    with pytest.raises(CorruptRecordError):
        replay([(encode_offset_commit_key("g", "t", 0), b"\x00\x03\x00")])
    with pytest.raises(CorruptRecordError):
        replay([(None, b"")])


def test_in_memory_store():
    store = InMemoryOffsetStore(4)
    store.append(2, [(b"k", b"v")])
    store.append(0, [(b"a", None)])
    assert store.records(2) == [(b"k", b"v")]
    assert store.records() == [(b"a", None), (b"k", b"v")]
    with pytest.raises(InvalidRequestError):
        store.append(4, [])
    store.fail_with = NotLeaderError("moved")
    with pytest.raises(NotLeaderError):
        store.append(1, [(b"x", b"y")])
    assert store.records(1) == []
    with pytest.raises(InvalidRequestError):
        InMemoryOffsetStore(0)
