"""The controller's requests and answers as Kafka's wire messages, through pylog's codec:
what it sends brokers survives encode/decode at the newest version, and the requests
brokers and admins send it are answered as Kafka's controller answers them."""

from __future__ import annotations

import pytest

from cluster.test_controller import Cluster
from pylog import protocol
from pylog.cluster.channel import (LeaderAndIsrRequest, MetadataCache, StopReplicaRequest, UpdateMetadataRequest,
                                   leader_and_isr_from_wire, leader_and_isr_to_wire, stop_replica_from_wire,
                                   stop_replica_to_wire, topic_uuid, update_metadata_from_wire,
                                   update_metadata_to_wire)
from pylog.cluster.controller import (answer_alter_partition, answer_alter_partition_reassignments,
                                      answer_controlled_shutdown, answer_elect_leaders,
                                      answer_list_partition_reassignments)
from pylog.cluster.replication import AlterPartition
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey, supported_versions


def over_the_wire(key, kind, msg, version=None):
    version = supported_versions()[key][1] if version is None else version
    enc = protocol.encode_request_body if kind == "request" else protocol.encode_response_body
    dec = protocol.decode_request_body if kind == "request" else protocol.decode_response_body
    return dec(key, version, b"".join(enc(key, version, msg)))


@pytest.fixture
def cluster():
    c = Cluster(brokers=(1, 2, 3))
    yield c
    c.close()


def test_what_brokers_are_told_survives_the_codec(cluster):
    c = cluster
    c.admin.create_topic("t", 2, 3, assignment={0: [1, 2, 3], 1: [2, 3, 1]})
    c.admin.create_topic("gone", 1, 2, assignment={0: [2, 3]})
    with c.paused():
        c.admin.delete_topic("gone")
    c.kill(3)
    seen = set()
    cache = MetadataCache()
    for request in c.channel.requests(2):
        if isinstance(request, LeaderAndIsrRequest):
            got = leader_and_isr_from_wire(over_the_wire(ApiKey.LEADER_AND_ISR, "request",
                                                         leader_and_isr_to_wire(request)))
            assert got.partition_states == request.partition_states
            assert (got.controller_id, got.controller_epoch, got.broker_epoch) == \
                (request.controller_id, request.controller_epoch, request.broker_epoch)
            assert got.topic_ids == {s.topic: request.topic_ids[s.topic] for s in request.partition_states}
            assert [(b.broker_id, b.endpoints[0].port) for b in got.live_leaders] == \
                [(b.broker_id, b.endpoints[0].port) for b in request.live_leaders]
        elif isinstance(request, UpdateMetadataRequest):
            got = update_metadata_from_wire(over_the_wire(ApiKey.UPDATE_METADATA, "request",
                                                          update_metadata_to_wire(request)))
            assert got.partition_states == request.partition_states and got.live_brokers == request.live_brokers
            assert got.deleted == request.deleted
            cache.update(got)
        else:
            got = stop_replica_from_wire(over_the_wire(ApiKey.STOP_REPLICA, "request", stop_replica_to_wire(request)))
            assert got == request
        seen.add(type(request))
    assert seen == {LeaderAndIsrRequest, UpdateMetadataRequest, StopReplicaRequest}
    assert cache.topics() == ["t"] and sorted(cache.brokers) == [1, 2]
    assert cache.partitions[("t", 1)].offline_replicas == (3,)


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_alter_partition_over_the_wire(cluster, version):
    c = cluster
    created = c.admin.create_topic("t", 1, 3, assignment={0: [1, 2, 3]})
    s = c.state("t")
    P = m.AlterPartitionRequest.PartitionData
    part = P(partition_index=0, leader_epoch=s.leader_epoch, partition_epoch=s.zk_version)
    if version < 3:
        part.new_isr = [1, 2]
    else:
        part.new_isr_with_epochs = [m.AlterPartitionRequest.BrokerState(broker_id=b, broker_epoch=-1) for b in (1, 2)]
    req = m.AlterPartitionRequest(broker_id=1, broker_epoch=c.sessions[1].get_broker(1).broker_epoch, topics=[
        m.AlterPartitionRequest.TopicData(topic_name="t", topic_id=topic_uuid(created.topic_id), partitions=[part])])
    req = over_the_wire(ApiKey.ALTER_PARTITION, "request", req, version)
    resp = over_the_wire(ApiKey.ALTER_PARTITION, "response", answer_alter_partition(c.active, req, version), version)
    (p,) = resp.topics[0].partitions
    assert (resp.error_code, p.error_code, p.leader_id, p.isr, p.partition_epoch) == (0, 0, 1, [1, 2], s.zk_version + 1)
    # The same request again is a retry of what is stored: the same answer.
    again = answer_alter_partition(c.active, req, version).topics[0].partitions[0]
    assert (again.error_code, again.isr, again.partition_epoch) == (0, [1, 2], s.zk_version + 1)
    req.topics[0].partitions[0].leader_epoch = 9
    assert answer_alter_partition(c.active, req, version).topics[0].partitions[0].error_code == 74  # FENCED_LEADER_EPOCH
    assert answer_alter_partition(c.controllers[2], req, version).error_code == 41  # NOT_CONTROLLER


def test_admin_and_shutdown_requests_over_the_wire(cluster):
    c = cluster
    c.admin.create_topic("t", 2, 2, assignment={0: [1, 2], 1: [2, 1]})
    resp = answer_controlled_shutdown(c.active, over_the_wire(
        ApiKey.CONTROLLED_SHUTDOWN, "request", m.ControlledShutdownRequest(broker_id=2, broker_epoch=-1)))
    assert resp.error_code == 0 and resp.remaining_partitions == []
    assert c.state("t", 1).leader == 1
    assert answer_controlled_shutdown(c.controllers[2], m.ControlledShutdownRequest(broker_id=2)).error_code == 41
    c.kill(2)
    c.start(2)
    s = c.state("t", 1)
    c.active.alter_partition(1, -1, "t", 1, AlterPartition(1, s.leader_epoch, (1, 2), s.zk_version))
    elect = m.ElectLeadersRequest(election_type=0, topic_partitions=[
        m.ElectLeadersRequest.TopicPartitions(topic="t", partitions=[0, 1])])
    resp = over_the_wire(ApiKey.ELECT_LEADERS, "response",
                         answer_elect_leaders(c.active, over_the_wire(ApiKey.ELECT_LEADERS, "request", elect)))
    codes = {r.partition_id: r.error_code for r in resp.replica_election_results[0].partition_result}
    assert codes == {0: 84, 1: 0}  # ELECTION_NOT_NEEDED; elected
    assert c.state("t", 1).leader == 2
    alter = m.AlterPartitionReassignmentsRequest(topics=[m.AlterPartitionReassignmentsRequest.ReassignableTopic(
        name="t", partitions=[m.AlterPartitionReassignmentsRequest.ReassignablePartition(partition_index=0,
                                                                                          replicas=[1, 3]),
                              m.AlterPartitionReassignmentsRequest.ReassignablePartition(partition_index=1,
                                                                                          replicas=None)])])
    resp = answer_alter_partition_reassignments(c.active, over_the_wire(
        ApiKey.ALTER_PARTITION_REASSIGNMENTS, "request", alter))
    assert {p.partition_index: p.error_code for p in resp.responses[0].partitions} == {0: 0, 1: 85}
    resp = over_the_wire(ApiKey.LIST_PARTITION_REASSIGNMENTS, "response", answer_list_partition_reassignments(
        c.active, over_the_wire(ApiKey.LIST_PARTITION_REASSIGNMENTS, "request",
                                m.ListPartitionReassignmentsRequest(topics=None))))
    (p,) = resp.topics[0].partitions
    assert (resp.topics[0].name, p.partition_index, p.replicas, p.adding_replicas, p.removing_replicas) == \
        ("t", 0, [1, 3, 2], [3], [2])
