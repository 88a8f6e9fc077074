"""Kafka wire-protocol codec: pylog vs kafka-python's protocol classes, same messages.

Peers (kafka-python 3.x ships two implementations; both are measured where they exist):

- ``kafka_python``: ``kafka.protocol.producer.produce``, ``kafka.protocol.consumer.fetch``,
  ``kafka.protocol.metadata`` - generated from Kafka's JSON schemas, all versions.
- ``kafka_python_legacy``: ``kafka.protocol.old.*`` - the hand-written Struct classes of
  kafka-python 2.x (``kafka.protocol.produce`` / ``kafka.protocol.fetch`` there), which stop
  before the flexible versions (Produce v8, Fetch v11, Metadata v8).

Each case times decode and encode of a message body (no frame, no header) on identical
bytes.  pylog's encoder returns segments (records of 4 KiB and more are not copied);
``time_encode_pylog_joined`` adds the ``b"".join`` a caller writing one buffer would pay.
"""

from __future__ import annotations

import uuid
import warnings

from benches._data import values
from pylog.protocol import messages as m
from pylog.protocol.codec import (
    decode_request_body,
    decode_response_body,
    encode_request_body,
    encode_response_body,
)

# kafka-python's import emits DeprecationWarnings (importlib.resources.read_text); they
# are about the peer, not pylog, and would be errors under the test suite's filters.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.consumer.fetch import FetchRequest as KFetchRequest
    from kafka.protocol.consumer.fetch import FetchResponse as KFetchResponse
    from kafka.protocol.metadata import MetadataResponse as KMetadataResponse
    from kafka.protocol.old import fetch as _old_fetch
    from kafka.protocol.old import metadata as _old_metadata
    from kafka.protocol.old import produce as _old_produce
    from kafka.protocol.producer.produce import ProduceRequest as KProduceRequest

TOPIC = "bench-topic"


def _produce_pylog():
    R = m.ProduceRequest
    return R(acks=-1, timeout_ms=30000, topic_data=[R.TopicProduceData(
        name=TOPIC, partition_data=[R.PartitionProduceData(index=0,
                                                           records=values(1, 16384)[0])])])


def _produce_kafka_python(version):
    K = KProduceRequest[version]
    TD = K.TopicProduceData
    return K(transactional_id=None, acks=-1, timeout_ms=30000, topic_data=[TD(
        name=TOPIC, partition_data=[TD.PartitionProduceData(index=0,
                                                            records=values(1, 16384)[0])])])


def _produce_legacy(version):
    return _old_produce.ProduceRequest[version](
        transactional_id=None, required_acks=-1, timeout=30000,
        topics=[(TOPIC, [(0, values(1, 16384)[0])])])


class _Case:
    """Shared timing methods: subclasses set up ``self.pylog_obj``, ``self.wire``,
    ``self.kp_cls``/``self.kp_obj`` and optionally ``self.legacy_cls``/``self.legacy_obj``."""

    api_key = 0
    version = 0
    kind = "request"

    def _check(self):
        ours = b"".join(self._encode())
        if ours != self.wire:
            raise AssertionError(f"{type(self).__name__}: pylog and kafka-python encode differently")
        if self._decode() != self.pylog_obj:
            raise AssertionError(f"{type(self).__name__}: decode does not round-trip")

    def _decode(self):
        if self.kind == "request":
            return decode_request_body(self.api_key, self.version, self.wire)
        return decode_response_body(self.api_key, self.version, self.wire)

    def _encode(self):
        if self.kind == "request":
            return encode_request_body(self.api_key, self.version, self.pylog_obj)
        return encode_response_body(self.api_key, self.version, self.pylog_obj)

    def time_decode_pylog(self):
        self._decode()

    def time_encode_pylog(self):
        self._encode()

    def time_encode_pylog_joined(self):
        b"".join(self._encode())

    def time_decode_kafka_python(self):
        self.kp_cls.decode(self.wire)

    def time_encode_kafka_python(self):
        self.kp_obj.encode()


class _Legacy:
    def time_decode_kafka_python_legacy(self):
        self.legacy_cls.decode(self.wire)

    def time_encode_kafka_python_legacy(self):
        self.legacy_obj.encode()


class ProduceRequestV9(_Case):
    """Produce request v9 (flexible): one partition, a 16 KiB records blob."""

    api_key, version = 0, 9

    def setup(self):
        self.pylog_obj = _produce_pylog()
        self.kp_cls = KProduceRequest[9]
        self.kp_obj = _produce_kafka_python(9)
        self.wire = bytes(self.kp_obj.encode())
        self._check()


class ProduceRequestV3(_Case, _Legacy):
    """Produce request v3: one partition, a 16 KiB records blob."""

    api_key, version = 0, 3

    def setup(self):
        self.pylog_obj = _produce_pylog()
        self.kp_cls = KProduceRequest[3]
        self.kp_obj = _produce_kafka_python(3)
        self.legacy_cls = _old_produce.ProduceRequest[3]
        self.legacy_obj = _produce_legacy(3)
        self.wire = bytes(self.kp_obj.encode())
        if self.legacy_obj.encode() != self.wire:
            raise AssertionError("the two kafka-python encoders disagree")
        self._check()


def _fetch_request_pylog():
    R = m.FetchRequest
    return R(replica_id=-1, max_wait_ms=500, min_bytes=1, max_bytes=52428800,
             isolation_level=1, session_id=0, session_epoch=-1, topics=[R.FetchTopic(
                 topic=TOPIC, partitions=[R.FetchPartition(
                     partition=p, current_leader_epoch=5, fetch_offset=1000 + p,
                     last_fetched_epoch=-1, log_start_offset=-1,
                     partition_max_bytes=1048576) for p in range(3)])],
             forgotten_topics_data=[], rack_id="")


def _fetch_request_kafka_python(version):
    K = KFetchRequest[version]
    FT = K.FetchTopic
    kw = {}
    if version >= 12:
        kw["cluster_id"] = None
    return K(replica_id=-1, max_wait_ms=500, min_bytes=1, max_bytes=52428800,
             isolation_level=1, session_id=0, session_epoch=-1, topics=[FT(
                 topic=TOPIC, partitions=[FT.FetchPartition(
                     partition=p, current_leader_epoch=5, fetch_offset=1000 + p,
                     last_fetched_epoch=-1, log_start_offset=-1,
                     partition_max_bytes=1048576) for p in range(3)])],
             forgotten_topics_data=[], rack_id="", **kw)


class FetchRequestV12(_Case):
    """Fetch request v12 (flexible): one topic, three partitions."""

    api_key, version = 1, 12

    def setup(self):
        self.pylog_obj = _fetch_request_pylog()
        self.kp_cls = KFetchRequest[12]
        self.kp_obj = _fetch_request_kafka_python(12)
        self.wire = bytes(self.kp_obj.encode())
        self._check()


class FetchRequestV4(_Case, _Legacy):
    """Fetch request v4: one topic, three partitions."""

    api_key, version = 1, 4

    def setup(self):
        obj = _fetch_request_pylog()
        obj.max_bytes, obj.session_epoch = 52428800, -1
        for p in obj.topics[0].partitions:
            p.current_leader_epoch = -1  # not in v4 (ignorable, but keep the check exact)
        self.pylog_obj = obj
        self.kp_cls = KFetchRequest[4]
        self.kp_obj = _fetch_request_kafka_python(4)
        self.wire = bytes(self.kp_obj.encode())
        self.legacy_cls = _old_fetch.FetchRequest[4]
        self.legacy_obj = self.legacy_cls(
            replica_id=-1, max_wait_time=500, min_bytes=1, max_bytes=52428800,
            isolation_level=1, topics=[(TOPIC, [(p, 1000 + p, 1048576) for p in range(3)])])
        if self.legacy_obj.encode() != self.wire:
            raise AssertionError("the two kafka-python encoders disagree")
        obj.session_id, obj.session_epoch = 0, -1
        self._check()


def _fetch_response_pylog(version):
    R = m.FetchResponse
    blobs = values(3, 4096 * 4)
    return R(throttle_time_ms=0, error_code=0, session_id=0, responses=[
        R.FetchableTopicResponse(topic=TOPIC, partitions=[
            R.PartitionData(partition_index=p, error_code=0, high_watermark=5000 + p,
                            last_stable_offset=5000 + p,
                            log_start_offset=0 if version >= 5 else -1,
                            aborted_transactions=None if version >= 12 else [],
                            preferred_read_replica=-1,
                            records=blobs[p]) for p in range(3)])])


def _fetch_response_kafka_python(version):
    K = KFetchResponse[version]
    T = K.FetchableTopicResponse
    P = T.PartitionData
    blobs = values(3, 4096 * 4)
    return K(throttle_time_ms=0, error_code=0, session_id=0, responses=[T(
        topic=TOPIC, partitions=[P(
            partition_index=p, error_code=0, high_watermark=5000 + p,
            last_stable_offset=5000 + p, log_start_offset=0,
            aborted_transactions=None if version >= 12 else [],
            preferred_read_replica=-1, records=blobs[p]) for p in range(3)])])


class FetchResponseV12(_Case):
    """Fetch response v12 (flexible): three partitions, 16 KiB of records each."""

    api_key, version, kind = 1, 12, "response"

    def setup(self):
        self.pylog_obj = _fetch_response_pylog(12)
        self.kp_cls = KFetchResponse[12]
        self.kp_obj = _fetch_response_kafka_python(12)
        self.wire = bytes(self.kp_obj.encode())
        self._check()


class FetchResponseV4(_Case, _Legacy):
    """Fetch response v4: three partitions, 16 KiB of records each."""

    api_key, version, kind = 1, 4, "response"

    def setup(self):
        self.pylog_obj = _fetch_response_pylog(4)
        self.pylog_obj.session_id = 0
        self.kp_cls = KFetchResponse[4]
        self.kp_obj = _fetch_response_kafka_python(4)
        self.wire = bytes(self.kp_obj.encode())
        blobs = values(3, 4096 * 4)
        self.legacy_cls = _old_fetch.FetchResponse[4]
        self.legacy_obj = self.legacy_cls(throttle_time_ms=0, topics=[(TOPIC, [
            (p, 0, 5000 + p, 5000 + p, [], blobs[p]) for p in range(3)])])
        if self.legacy_obj.encode() != self.wire:
            raise AssertionError("the two kafka-python encoders disagree")
        self._check()


_TOPIC_ID = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")


def _metadata_pylog(version):
    R = m.MetadataResponse
    return R(throttle_time_ms=0, brokers=[
        R.MetadataResponseBroker(node_id=i, host=f"broker-{i}.example", port=9092,
                                 rack=f"rack-{i}") for i in range(3)],
        cluster_id="pylog-cluster", controller_id=0, topics=[R.MetadataResponseTopic(
            error_code=0, name=TOPIC, topic_id=_TOPIC_ID if version >= 10 else uuid.UUID(int=0),
            is_internal=False, partitions=[R.MetadataResponsePartition(
                error_code=0, partition_index=p, leader_id=p % 3, leader_epoch=7,
                replica_nodes=[p % 3, (p + 1) % 3, (p + 2) % 3],
                isr_nodes=[p % 3, (p + 1) % 3, (p + 2) % 3], offline_replicas=[])
                for p in range(100)],
            topic_authorized_operations=-2147483648)],
        cluster_authorized_operations=-2147483648)


def _metadata_kafka_python(version):
    K = KMetadataResponse[version]
    B, T = K.MetadataResponseBroker, K.MetadataResponseTopic
    P = T.MetadataResponsePartition
    kw = {}
    if version >= 10:
        kw["topic_id"] = _TOPIC_ID
    top = {}
    if version >= 8 and version <= 10:
        top["authorized_operations"] = None
    return K(throttle_time_ms=0, brokers=[
        B(node_id=i, host=f"broker-{i}.example", port=9092, rack=f"rack-{i}") for i in range(3)],
        cluster_id="pylog-cluster", controller_id=0, topics=[T(
            error_code=0, name=TOPIC, is_internal=False, partitions=[P(
                error_code=0, partition_index=p, leader_id=p % 3, leader_epoch=7,
                replica_nodes=[p % 3, (p + 1) % 3, (p + 2) % 3],
                isr_nodes=[p % 3, (p + 1) % 3, (p + 2) % 3], offline_replicas=[])
                for p in range(100)],
            authorized_operations=None, **kw)], **top)


class MetadataResponseV12(_Case):
    """Metadata response v12 (flexible): 3 brokers, one topic with 100 partitions."""

    api_key, version, kind = 3, 12, "response"

    def setup(self):
        self.pylog_obj = _metadata_pylog(12)
        self.kp_cls = KMetadataResponse[12]
        self.kp_obj = _metadata_kafka_python(12)
        self.wire = bytes(self.kp_obj.encode())
        self._check()


class MetadataResponseV8(_Case, _Legacy):
    """Metadata response v8: 3 brokers, one topic with 100 partitions."""

    api_key, version, kind = 3, 8, "response"

    def setup(self):
        self.pylog_obj = _metadata_pylog(8)
        self.kp_cls = KMetadataResponse[8]
        self.kp_obj = _metadata_kafka_python(8)
        self.wire = bytes(self.kp_obj.encode())
        self.legacy_cls = _old_metadata.MetadataResponse[8]
        self.legacy_obj = self.legacy_cls(
            throttle_time_ms=0,
            brokers=[(i, f"broker-{i}.example", 9092, f"rack-{i}") for i in range(3)],
            cluster_id="pylog-cluster", controller_id=0,
            topics=[(0, TOPIC, False, [
                (0, p, p % 3, 7, [p % 3, (p + 1) % 3, (p + 2) % 3],
                 [p % 3, (p + 1) % 3, (p + 2) % 3], []) for p in range(100)], {31})],
            authorized_operations={31})  # bit 31 alone is INT32_MIN: "not requested"
        if self.legacy_obj.encode() != self.wire:
            raise AssertionError("the two kafka-python encoders disagree")
        self._check()
