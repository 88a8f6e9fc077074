"""The hand-written Produce response encoder writes the generic encoder's bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.protocol import messages as m
from pylog.protocol.codec import decode_response, encode_response
from pylog.protocol.produce_reply import PRODUCE_VERSIONS, produce_response_frame
from pylog.protocol.segments import segments_to_bytes

i32 = st.integers(-2**31, 2**31 - 1)
i64 = st.integers(-2**63, 2**63 - 1)
text = st.one_of(st.none(), st.text(max_size=300))
record_errors = st.one_of(st.none(), st.lists(st.tuples(i32, text), max_size=4))
partition = st.one_of(
    st.tuples(i32, st.integers(-2**15, 2**15 - 1), i64, i64, i64, text),
    st.tuples(i32, st.integers(-2**15, 2**15 - 1), i64, i64, i64, text, record_errors))
topics = st.lists(st.tuples(st.text(max_size=300), st.lists(partition, max_size=4)), max_size=4)


def generic(version, corr, answer, throttle):
    R = m.ProduceResponse
    PR = R.PartitionProduceResponse
    E = R.BatchIndexAndErrorMessage

    def errors(p):
        if version < 8 or len(p) < 7 or not p[6]:
            return []
        return [E(batch_index=i, batch_index_error_message=m) for i, m in p[6]]

    body = R(throttle_time_ms=throttle, responses=[R.TopicProduceResponse(name=name, partition_responses=[
        PR(index=p[0], error_code=p[1], base_offset=p[2], log_append_time_ms=p[3], log_start_offset=p[4],
           error_message=p[5] if version >= 8 else None, record_errors=errors(p))
        for p in parts]) for name, parts in answer])
    return segments_to_bytes(encode_response(0, version, corr, body))


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from(list(PRODUCE_VERSIONS)), corr=i32, answer=topics, throttle=i32)
def test_same_bytes_as_the_generic_encoder(version, corr, answer, throttle):
    fast = produce_response_frame(version, corr, answer, throttle)
    assert fast == generic(version, corr, answer, throttle)
    got_corr, resp = decode_response(0, version, fast[4:])
    assert got_corr == corr and len(resp.responses) == len(answer)


def test_long_strings_take_multi_byte_lengths_and_other_versions_are_refused():
    answer = [("t" * 200, [(0, 0, 1, -1, 0, None), (1, 6, -1, -1, -1, "e" * 20000)])]
    for version in PRODUCE_VERSIONS:
        assert produce_response_frame(version, 7, answer) == generic(version, 7, answer, 0)
    for version in (2, 10):
        with pytest.raises(ValueError, match="not encoded here"):
            produce_response_frame(version, 7, answer)


def test_record_errors_reach_the_client():
    answer = [("t", [(0, 87, -1, -1, -1, "2 records rejected", [(1, "no key"), (3, None)])])]
    for version in (8, 9):
        frame = produce_response_frame(version, 5, answer)
        assert frame == generic(version, 5, answer, 0)
        p = decode_response(0, version, frame[4:])[1].responses[0].partition_responses[0]
        assert p.error_code == 87 and p.error_message == "2 records rejected"
        assert [(e.batch_index, e.batch_index_error_message) for e in p.record_errors] == [(1, "no key"), (3, None)]


@settings(max_examples=200, deadline=None)
@given(version=st.sampled_from(list(PRODUCE_VERSIONS)), corr=i32, name=st.text(max_size=300), index=i32,
       base=i64, append_time=i64, start=i64)
def test_one_partition_ok_is_the_general_frame(version, corr, name, index, base, append_time, start):
    from pylog.protocol.produce_reply import produce_response_ok

    fast = produce_response_ok(version, corr, name, index, base, append_time, start)
    assert fast == produce_response_frame(version, corr, [(name, ((index, 0, base, append_time, start, None),))])
