"""What a clustered broker retries until it is done.

A broker whose first registration on a new ZooKeeper session fails (ZooKeeper out of
reach again just after the session opened) keeps trying until it is registered: the
session survives a short disconnection, so no new session would come to retry it, and
an unregistered broker is left out of every ISR while it runs.  An ISR change whose
answer never came is sent again as it was, until the controller answers."""

from __future__ import annotations

import threading

from pylog.cluster.coordination import NodeExistsError
from pylog.cluster.node import ClusterNode
from pylog.errors import CoordinationError
from server.util import wait_for


class FlakyCoordination:
    def __init__(self, failures: list[BaseException], epoch: int = 42) -> None:
        self.failures = list(failures)
        self.epoch = epoch
        self.calls = 0
        self.lock = threading.Lock()

    def register_broker(self, registration) -> int:
        with self.lock:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)
            return self.epoch


def node_with(coordination: FlakyCoordination) -> ClusterNode:
    node = ClusterNode.__new__(ClusterNode)       # only what re-registration reads
    node.coordination = coordination
    node.broker_id = 7
    node.broker_epoch = 1
    node._stopping = False
    node.registration = lambda: "registration of broker 7"
    return node


def test_a_failed_registration_on_a_new_session_is_retried_until_it_is_made():
    c = FlakyCoordination([CoordinationError("connection lost"), CoordinationError("connection lost")])
    node = node_with(c)
    node._reregister()
    wait_for(lambda: node.broker_epoch == 42, "broker 7 registered again")
    assert c.calls == 3


def test_an_id_held_by_another_live_broker_is_not_retried():
    c = FlakyCoordination([NodeExistsError("/brokers/ids/7 is held by session 0x2")])
    node = node_with(c)
    node._reregister()
    assert c.calls == 1 and node.broker_epoch == 1


def test_a_stopping_broker_stops_retrying():
    c = FlakyCoordination([CoordinationError("connection lost")] * 1000)
    node = node_with(c)
    node._reregister()
    wait_for(lambda: c.calls >= 2, "a retry")
    node._stopping = True
    calls = c.calls
    wait_for(lambda: not any(t.name == "pylog-zk-reregister" for t in threading.enumerate()),
             "the retry thread to end")
    assert c.calls <= calls + 1 and node.broker_epoch == 1


# -- an AlterPartition whose answer is lost ---------------------------------------------

def test_an_alter_partition_without_an_answer_is_sent_again_as_it_was():
    """The controller stored the proposal but its answer was lost (one-way loss: a
    Jepsen run stayed for good with the leader's ISR unlike the stored one): the same
    request goes again, and the answer to it (the stored state) is applied."""
    import concurrent.futures
    from types import SimpleNamespace

    from cluster.test_replication_model import _cluster, _fetch
    from pylog.cluster.node import Replica
    from pylog.errors import NetworkError
    from pylog.protocol import messages as m

    parts = _cluster(isr=(0, 1))
    leader = parts[0]
    _fetch(parts[2], leader)
    proposal = leader.poll_alter_partition()
    assert proposal.new_isr == (0, 1, 2)
    r = Replica("t", 0, leader, None)
    sent = []

    def send_to_controller(api_key, body, version):
        sent.append(body)
        f = concurrent.futures.Future()
        if len(sent) == 1:
            f.set_exception(NetworkError("broker 9 closed the connection"))
        else:
            R = m.AlterPartitionResponse
            p = body.topics[0].partitions[0]
            f.set_result(R(error_code=0, topics=[R.TopicData(topic_name="t", partitions=[R.PartitionData(
                partition_index=0, error_code=0, leader_id=0, leader_epoch=p.leader_epoch, isr=list(p.new_isr),
                partition_epoch=p.partition_epoch + 1)])]))
        return f

    node = ClusterNode.__new__(ClusterNode)
    node.broker_id, node.broker_epoch, node._stopping = 0, 5, False
    node.send_to_controller = send_to_controller
    node.replica_manager = SimpleNamespace(high_watermark_moved=lambda r: None, check_waiters=lambda: None)
    node.call_in_loop = lambda fn, *args: fn(*args)
    node.send_alter_partition(r, proposal)
    wait_for(lambda: leader.pending_alter_partition is None, "the answer to the second request")
    assert len(sent) == 2 and sent[0] == sent[1]
    assert leader.isr == (0, 1, 2) and leader.partition_epoch == proposal.partition_epoch + 1
