"""The handlers a clustered broker adds or replaces (``zookeeper.connect`` set).

Inter-broker APIs: LeaderAndIsr, UpdateMetadata and StopReplica from the controller
(handed to :class:`pylog.cluster.node.ClusterNode`); ControlledShutdown and AlterPartition
to the controller (answered by the active one, NOT_CONTROLLER elsewhere); Fetch with a
``replica_id`` from followers (answered by the leader's replication state machine, records
as file regions: the same zero-copy write as a consumer's fetch, held up to its
``max_wait_ms`` when there is nothing new).

Client APIs answered from the cluster: Metadata and DescribeCluster (every live broker,
leaders, replicas, ISR, offline replicas, leader epochs, from the controller's
UpdateMetadata), CreateTopics and CreatePartitions (placed and written to ZooKeeper; the
controller elects the leaders; answered once this broker's metadata knows every new
partition's leader, REQUEST_TIMED_OUT when the request's timeout passed first),
DeleteTopics (marked in ZooKeeper; the controller stops and deletes every replica;
answered once this broker's metadata no longer has the topic), ElectLeaders (decided by
the active controller), FindCoordinator (the leader of the group's
``__consumer_offsets`` partition; the first one creates that topic), OffsetCommit and
SyncGroup (answered once the coordinator's write is replicated:
:mod:`pylog.cluster.coordinators`), Produce (acks=all answered when the high
watermark passes the batch), and AlterConfigs / IncrementalAlterConfigs of topics and
of the brokers' replication throttle rates (written to ZooKeeper, where every broker
takes them, as Kafka's brokers in ZooKeeper mode did).

Handlers run on the loop's thread; ZooKeeper and file work is sent off it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Callable

from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.cluster import replication
from pylog.cluster.channel import leader_and_isr_from_wire, stop_replica_from_wire, update_metadata_from_wire
from pylog.errors import (CoordinatorNotAvailableError, InvalidReplicaAssignmentError, InvalidRequestError,
                          InvalidTopicError, NotControllerError, PylogError)
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from pylog.protocol.produce_reply import produce_response_frame
from pylog.protocol.segments import FileRegion
from pylog.server._core_adapter import topic_uuid
from pylog.server.connection import NO_RESPONSE

__all__ = ["cluster_handler_table"]

_log = logging.getLogger("pylog.server.cluster_handlers")

NONE = 0
OFFSET_OUT_OF_RANGE = 1
LEADER_NOT_AVAILABLE = 5
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_RECORD = 87
INVALID_REQUEST = 42
REQUEST_TIMED_OUT = 7
TOPIC_DELETION_DISABLED = 73
_NOT_REQUESTED = -2147483648
_EMPTY = b""


def _node(conn: Any) -> Any:
    return conn.server.cluster


# -- from the controller ----------------------------------------------------------------


def handle_leader_and_isr(conn: Any, header: Any, req: Any) -> Any:
    node = _node(conn)
    request = leader_and_isr_from_wire(req)
    version = header.api_version
    R: Any = m.LeaderAndIsrResponse

    def respond(errors: dict) -> Any:
        if version >= 5:
            by_topic: dict[str, list] = {}
            for (t, p), e in errors.items():
                by_topic.setdefault(t, []).append(R.LeaderAndIsrPartitionError(
                    partition_index=p, error_code=0 if e is None else e.error_code))
            return R(error_code=NONE, topics=[R.LeaderAndIsrTopicError(
                topic_id=topic_uuid(request.topic_ids.get(t)), partition_errors=ps) for t, ps in by_topic.items()])
        return R(error_code=NONE, partition_errors=[R.LeaderAndIsrPartitionError(
            topic_name=t, partition_index=p, error_code=0 if e is None else e.error_code)
            for (t, p), e in errors.items()])

    if node.leader_and_isr_metadata(request):
        _metadata_updated(node)
    fut = node.replica_thread.submit(node.replica_manager.become, request)
    return _then(conn, fut, respond)


def _then(conn: Any, fut: Any, convert: Callable[[Any], Any]) -> Any:
    """An asyncio future of ``convert(fut.result())`` for a concurrent future."""
    loop = conn.server.loop
    out = loop.create_future()

    def done(f: Any) -> None:
        def finish() -> None:
            if out.done():
                return
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
            else:
                try:
                    out.set_result(convert(f.result()))
                except Exception as e:  # noqa: BLE001 - surfaces as an error response
                    out.set_exception(e)
        conn.server.call_in_loop(finish)

    fut.add_done_callback(done)
    return out


def handle_update_metadata(conn: Any, header: Any, req: Any) -> Any:
    node = _node(conn)
    node.update_metadata(update_metadata_from_wire(req))
    _metadata_updated(node)
    return m.UpdateMetadataResponse(error_code=NONE)


def handle_stop_replica(conn: Any, header: Any, req: Any) -> Any:
    node = _node(conn)
    request = stop_replica_from_wire(req)
    R: Any = m.StopReplicaResponse

    def respond(errors: dict) -> Any:
        return R(error_code=NONE, partition_errors=[R.StopReplicaPartitionError(
            topic_name=t, partition_index=p, error_code=0 if e is None else e.error_code)
            for (t, p), e in errors.items()])

    return _then(conn, node.replica_thread.submit(node.replica_manager.stop, request), respond)


# -- to the controller ------------------------------------------------------------------


def _on_controller(conn: Any, response_cls: Any, fn: Callable, *args: Any) -> Any:
    """``fn(controller, *args)`` on the controller's thread; NOT_CONTROLLER from a broker
    that is not (or no longer) the active controller."""
    node = _node(conn)
    controller = node.controller
    if controller is None or not controller.is_active:
        return response_cls(error_code=NotControllerError.error_code)
    try:
        fut = node.controller_thread.submit(fn, controller, *args)
    except RuntimeError:    # the broker is stopping
        return response_cls(error_code=NotControllerError.error_code)
    return _then(conn, fut, lambda r: r)


def handle_controlled_shutdown(conn: Any, header: Any, req: Any) -> Any:
    from pylog.cluster.controller import answer_controlled_shutdown
    return _on_controller(conn, m.ControlledShutdownResponse, answer_controlled_shutdown, req)


def handle_alter_partition(conn: Any, header: Any, req: Any) -> Any:
    from pylog.cluster.controller import answer_alter_partition
    return _on_controller(conn, m.AlterPartitionResponse, answer_alter_partition, req, header.api_version)


def handle_alter_partition_reassignments(conn: Any, header: Any, req: Any) -> Any:
    """AlterPartitionReassignments (KIP-455), on the active controller."""
    from pylog.cluster.controller import answer_alter_partition_reassignments
    return _on_controller(conn, m.AlterPartitionReassignmentsResponse, answer_alter_partition_reassignments, req)


def handle_list_partition_reassignments(conn: Any, header: Any, req: Any) -> Any:
    """ListPartitionReassignments (KIP-455), on the active controller."""
    from pylog.cluster.controller import answer_list_partition_reassignments
    return _on_controller(conn, m.ListPartitionReassignmentsResponse, answer_list_partition_reassignments, req)


# -- Fetch from followers -----------------------------------------------------------------


def _replica_fetch_answer(conn: Any, req: Any) -> tuple[Any, int]:
    manager = _node(conn).replica_manager
    R: Any = m.FetchResponse
    PD = R.PartitionData
    topics = []
    total = 0
    for t in req.topics:
        out = []
        for p in t.partitions:
            got = manager.fetch_for_follower(t.topic, p.partition, replication.FetchRequest(
                req.replica_id, p.current_leader_epoch, p.fetch_offset, p.last_fetched_epoch,
                p.partition_max_bytes))
            records: Any = _EMPTY
            if got.records is not None:
                rr = got.records
                records = FileRegion(rr.file, rr.position, rr.size)
                total += rr.size
                rr.release()
            de = got.diverging_epoch
            out.append(PD(partition_index=p.partition,
                          error_code=0 if got.error is None else got.error.error_code,
                          high_watermark=got.high_watermark, last_stable_offset=got.high_watermark,
                          log_start_offset=got.log_start_offset,
                          diverging_epoch=R.EpochEndOffset(epoch=de.leader_epoch, end_offset=de.end_offset)
                          if de is not None else R.EpochEndOffset(epoch=-1, end_offset=-1),
                          aborted_transactions=None, preferred_read_replica=-1, records=records))
            if got.error is not None or de is not None:
                total += 1
        topics.append(R.FetchableTopicResponse(topic=t.topic, partitions=out))
    return R(throttle_time_ms=0, error_code=NONE, session_id=0, responses=topics), total


def _handle_replica_fetch(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    appends_seen = st.fetch_waiters.appends
    resp, total = _replica_fetch_answer(conn, req)
    if total or req.max_wait_ms <= 0 or conn.server.stopping:
        return resp
    # Nothing new: wait for an append to one of its partitions, or max_wait_ms.
    loop = conn.server.loop
    fut = loop.create_future()
    keys = {(t.topic, p.partition) for t in req.topics for p in t.partitions}

    def answer() -> None:
        if fut.done():
            return
        try:
            fut.set_result(_replica_fetch_answer(conn, req)[0])
        except Exception as exc:  # noqa: BLE001 - surfaces as an error response
            fut.set_exception(exc)
        st.broker.remove_append_listener(on_append)
        timer.cancel()

    def on_append(topic: str, partition: int, _hw: int) -> None:
        if (topic, partition) in keys:
            conn.server.call_in_loop(answer)

    timer = loop.call_later(req.max_wait_ms / 1000, answer)
    st.broker.add_append_listener(on_append)
    if st.fetch_waiters.appends != appends_seen:
        # An append in another thread since the read above found no listener to call.
        resp, total = _replica_fetch_answer(conn, req)
        if total:
            answer()
    return fut


def handle_fetch(conn: Any, header: Any, req: Any) -> Any:
    from pylog.server.handlers import handle_fetch as consumer_fetch
    if req.replica_id >= 0:
        return _handle_replica_fetch(conn, header, req)
    return consumer_fetch(conn, header, req)


# -- Produce ---------------------------------------------------------------------------


def handle_produce(conn: Any, header: Any, req: Any) -> Any:
    """Append on the leader (the broker core asks the replica manager whether this broker
    leads, and min.insync.replicas); acks=all waits for the high watermark.  A
    transactional batch that opens a transaction on its partition waits for the
    transaction coordinator's word first (KIP-890, :mod:`pylog.cluster.txn_verification`)."""
    verification = getattr(_node(conn).coordinators, "txn_verification", None)   # (set when the node starts)
    verifying = None if verification is None else verification.start(req)
    if verifying is None:
        return _produce(conn, header, req, {})
    loop = conn.server.loop
    done = loop.create_future()

    async def verified() -> None:
        try:
            answer = _produce(conn, header, req, await verifying)
            if hasattr(answer, "add_done_callback"):
                answer = await answer
        except Exception as exc:  # noqa: BLE001 - answered as any failed handler
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():       # (the connection closed meanwhile)
            done.set_result(answer)

    loop.create_task(verified())
    return done


def _produce(conn: Any, header: Any, req: Any, refused: dict) -> Any:
    """:func:`handle_produce` with the partitions ``refused`` by the transaction
    coordinator answered with their error codes instead of appended."""
    st = conn.server.state
    node = _node(conn)
    manager = node.replica_manager
    broker = st.broker
    version = header.api_version
    acks = req.acks
    with_messages = version >= 8
    answer: list = []
    waits: list = []
    for t in req.topic_data:
        name = t.name if t.name is not None else ""
        out: list = []
        for p in t.partition_data:
            records = p.records
            if records is None or len(records) == 0:
                out.append((p.index, INVALID_RECORD, -1, -1, -1,
                            "the produce request carries no record batch" if with_messages else None))
                continue
            if refused and (name, p.index) in refused:
                out.append((p.index, refused[(name, p.index)], -1, -1, -1,
                            "the transaction coordinator did not verify the partition in the transaction"
                            if with_messages else None))
                continue
            res = broker.produce(name, p.index, records, acks=acks)
            if res.error_code:
                out.append((p.index, res.error_code, -1, -1, -1, res.error_message if with_messages else None)
                           + ((res.record_errors,) if with_messages else ()))
                continue
            manager.after_leader_append(name, p.index)
            if acks == -1:
                r = manager.replicas.get((name, p.index))
                if r is not None:
                    append = replication.AppendInfo(res.base_offset, r.log.log_end_offset - 1, r.state.leader_epoch)
                    waits.append((len(answer), len(out),
                                  manager.wait_for_acks(name, p.index, append, req.timeout_ms)))
            out.append((p.index, NONE, res.base_offset, res.log_append_time, res.log_start_offset, None))
        answer.append((name, out))
    if acks == 0:
        return NO_RESPONSE
    if not waits:
        return produce_response_frame(version, header.correlation_id, answer)
    loop = conn.server.loop
    done = loop.create_future()

    async def finish() -> None:
        for ti, pi, fut in waits:
            error = await fut
            if error is not None:
                entry = answer[ti][1][pi]
                answer[ti][1][pi] = (entry[0], error.error_code, -1, -1, -1, str(error) if with_messages else None)
        # The connection may have closed meanwhile (the client gave up, a fault cut it):
        # its pending answer is cancelled, and nobody is left to answer.
        if not done.done():
            done.set_result(produce_response_frame(version, header.correlation_id, answer))

    loop.create_task(finish())
    return done


# -- Metadata, DescribeCluster, FindCoordinator, CreateTopics -------------------------------


def _brokers(node: Any) -> list:
    """The live brokers; before the controller's first UpdateMetadata, this one alone
    (a Metadata answer always names at least the broker that answers)."""
    if not node.metadata.brokers:
        from pylog.cluster.channel import LiveBroker
        reg = node.registration()
        return [LiveBroker(reg.broker_id, reg.endpoints, reg.rack)]
    return sorted(node.metadata.brokers.values(), key=lambda b: b.broker_id)


def _metadata_topic(cache: Any, name: str, topic_id: str | None) -> Any:
    MR: Any = m.MetadataResponse
    parts = []
    for s in cache.partitions_of(name):
        live = s.leader in cache.brokers
        parts.append(MR.MetadataResponsePartition(
            error_code=NONE if live else LEADER_NOT_AVAILABLE, partition_index=s.partition,
            leader_id=s.leader if live else -1, leader_epoch=s.leader_epoch, replica_nodes=list(s.replicas),
            isr_nodes=list(s.isr), offline_replicas=list(s.offline_replicas)))
    return MR.MetadataResponseTopic(error_code=NONE, name=name, topic_id=topic_uuid(topic_id),
                                    is_internal=name.startswith("__"), partitions=parts,
                                    topic_authorized_operations=_NOT_REQUESTED)


def handle_metadata(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    node = _node(conn)
    cache = node.metadata
    version = header.api_version
    MR: Any = m.MetadataResponse
    topics_out = []
    if req.topics is None or (version == 0 and not req.topics):
        names = cache.topics()
    else:
        names = [t.name for t in req.topics if t.name is not None]
    create = []
    for name in dict.fromkeys(names):
        if name in cache.topic_ids or cache.partitions_of(name):
            topics_out.append(_metadata_topic(cache, name, cache.topic_ids.get(name)))
            continue
        allow = (req.allow_auto_topic_creation if version >= 4 else True) and st.config.auto_create_topics_enable
        if allow and not name.startswith("__"):
            create.append(name)
            topics_out.append(MR.MetadataResponseTopic(error_code=LEADER_NOT_AVAILABLE, name=name, partitions=[]))
        else:
            topics_out.append(MR.MetadataResponseTopic(error_code=UNKNOWN_TOPIC_OR_PARTITION, name=name,
                                                       partitions=[]))
    if create:
        conn.server.call_off_loop(_auto_create, node, create)
    controller = cache.controller_id if cache.controller_id is not None else -1
    return MR(throttle_time_ms=0,
              brokers=[MR.MetadataResponseBroker(node_id=b.broker_id, host=b.endpoints[0].host,
                                                 port=b.endpoints[0].port, rack=b.rack) for b in _brokers(node)],
              cluster_id=st.cluster_id, controller_id=controller, topics=topics_out,
              cluster_authorized_operations=_NOT_REQUESTED)


def _admin(node: Any) -> Any:
    from pylog.cluster.controller import ZkAdmin
    return ZkAdmin(node.coordination)


def _auto_create(node: Any, names: list) -> None:
    cfg = node.config
    for name in names:
        try:
            _admin(node).create_topic(name, cfg.num_partitions, cfg.default_replication_factor)
        except PylogError:
            pass   # created meanwhile by another broker, or not placeable: Metadata says so next time


def handle_describe_cluster(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    node = _node(conn)
    R: Any = m.DescribeClusterResponse
    controller = node.metadata.controller_id
    return R(throttle_time_ms=0, error_code=NONE, error_message=None, cluster_id=st.cluster_id,
             controller_id=-1 if controller is None else controller,
             brokers=[R.DescribeClusterBroker(broker_id=b.broker_id, host=b.endpoints[0].host,
                                              port=b.endpoints[0].port, rack=b.rack) for b in _brokers(node)],
             cluster_authorized_operations=_NOT_REQUESTED)


def handle_find_coordinator(conn: Any, header: Any, req: Any) -> Any:
    """The leader of the key's partition of ``__consumer_offsets`` (groups) or
    ``__transaction_state`` (transactional ids); the first request creates the topic
    (pylog.cluster.coordinators) and is answered COORDINATOR_NOT_AVAILABLE, as Kafka
    answers it while the leaders are elected."""
    from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC, partition_for_transactional_id
    from pylog.server.handlers import handle_find_coordinator as local
    node = _node(conn)
    cache = node.metadata
    if req.key_type == 0:
        topic, partition_for = CONSUMER_OFFSETS_TOPIC, partition_for_group
    elif req.key_type == 1:
        topic, partition_for = TRANSACTION_STATE_TOPIC, partition_for_transactional_id
    else:
        return local(conn, header, req)
    parts = cache.partitions_of(topic)
    R: Any = m.FindCoordinatorResponse
    not_available = CoordinatorNotAvailableError.error_code
    if not parts:
        conn.server.call_off_loop(_ensure_internal_topic, node, topic)

    def one(key: str) -> tuple[int, int, str, int]:
        if not key:     # as the single node answers: INVALID_GROUP_ID, INVALID_REQUEST
            return (24 if req.key_type == 0 else INVALID_REQUEST), -1, "", -1
        if not parts:
            return not_available, -1, "", -1
        leader = cache.leader(topic, partition_for(key, len(parts)))
        if leader is None:
            return not_available, -1, "", -1
        return NONE, leader.broker_id, leader.endpoints[0].host, leader.endpoints[0].port

    if header.api_version >= 4:
        out = []
        for key in req.coordinator_keys:
            code, nid, host, port = one(key)
            out.append(R.Coordinator(key=key, node_id=nid, host=host, port=port, error_code=code, error_message=None))
        return R(throttle_time_ms=0, coordinators=out)
    code, nid, host, port = one(req.key)
    return R(throttle_time_ms=0, error_code=code, error_message=None, node_id=nid, host=host, port=port)


def _ensure_internal_topic(node: Any, topic: str) -> None:
    try:
        node.coordinators.ensure_topic(topic)
    except PylogError as exc:
        _log.info("%s is not created yet: %s", topic, exc)


# -- the group coordinator's replicated writes ----------------------------------------------


def _after_replication(conn: Any, answer: Any, group_id: str, appended: Callable[[Any], bool],
                       fail: Callable[[Any, int], Any]) -> Any:
    """``answer`` (a response or a future of one) held until the high watermark of the
    group's ``__consumer_offsets`` partition passes what its leader holds now, when
    ``appended(response)`` says the coordinator wrote; ``fail(response, code)`` makes it
    the error answer when the ISR did not take the write."""
    from pylog.cluster.coordinators import commit_error_code
    node = _node(conn)

    async def run() -> Any:
        resp = (await answer) if hasattr(answer, "add_done_callback") else answer
        if not appended(resp):
            return resp
        waiting = node.coordinators.wait_group_replicated(group_id)
        if waiting is None:
            return resp
        error = await waiting
        return resp if error is None else fail(resp, commit_error_code(error))

    return conn.server.loop.create_task(run())


def _commit_appended(resp: Any) -> bool:
    return any(p.error_code == NONE for t in resp.topics for p in t.partitions)


def _commit_failed(resp: Any, code: int) -> Any:
    for t in resp.topics:
        for p in t.partitions:
            if p.error_code == NONE:
                p.error_code = code
    return resp


def handle_offset_commit(conn: Any, header: Any, req: Any) -> Any:
    """OffsetCommit answered once the commit is replicated (Kafka's
    ``offsets.commit.required.acks`` = -1)."""
    from pylog.server.handlers import handle_offset_commit as plain
    return _after_replication(conn, plain(conn, header, req), req.group_id, _commit_appended, _commit_failed)


def handle_txn_offset_commit(conn: Any, header: Any, req: Any) -> Any:
    """TxnOffsetCommit answered once the transactional commit is replicated.  The group's
    coordinator first asks the transaction coordinator of the id, on whichever broker it
    is, whether the group's offsets partition is in the ongoing transaction (KIP-890,
    :meth:`pylog.cluster.txn_verification.TxnVerification.start_offset_commit`); a
    broker that does not lead that partition answers NOT_COORDINATOR without asking."""
    from pylog.server.handlers import handle_txn_offset_commit as plain
    coordinators = _node(conn).coordinators
    verification = getattr(coordinators, "txn_verification", None)   # (set when the node starts)
    partition = None
    if verification is not None and isinstance(req.group_id, str) and req.group_id \
            and any(p.committed_offset >= 0 for t in req.topics for p in t.partitions):
        partition = coordinators.group_partition_led(req.group_id)
    if partition is None:
        return _after_replication(conn, plain(conn, header, req), req.group_id, _commit_appended, _commit_failed)
    verifying = verification.start_offset_commit(req.transactional_id, req.producer_id, req.producer_epoch,
                                                 partition)

    async def run() -> Any:
        code = await verifying
        if code:
            R = m.TxnOffsetCommitResponse
            return R(throttle_time_ms=0, topics=[R.TxnOffsetCommitResponseTopic(name=t.name, partitions=[
                R.TxnOffsetCommitResponsePartition(partition_index=p.partition_index,
                                                   error_code=code if p.committed_offset >= 0 else OFFSET_OUT_OF_RANGE)
                for p in t.partitions]) for t in req.topics])
        return await _after_replication(conn, plain(conn, header, req), req.group_id, _commit_appended,
                                        _commit_failed)

    return conn.server.loop.create_task(run())


def handle_write_txn_markers(conn: Any, header: Any, req: Any) -> Any:
    """WriteTxnMarkers from a transaction coordinator, answered once every marker
    written here is replicated (Kafka appends markers with acks=-1)."""
    from pylog.server.handlers import handle_write_txn_markers as plain
    node = _node(conn)
    answer = plain(conn, header, req)

    async def run() -> Any:
        resp = (await answer) if hasattr(answer, "add_done_callback") else answer
        waits = []
        for mk in resp.markers:
            for t in mk.topics:
                for p in t.partitions:
                    if p.error_code == NONE:
                        w = node.coordinators.wait_replicated(t.name, p.partition_index)
                        if w is not None:
                            waits.append((p, w))
        for p, w in waits:
            error = await w
            if error is not None:
                p.error_code = error.error_code
        return resp

    return conn.server.loop.create_task(run())


def _off_loop(plain: Callable) -> Callable:
    """``plain`` run in the I/O pool: the transaction coordinator's lock may be held
    while it waits for the loop (a replicated write), so the loop must never wait for
    that lock (DescribeTransactions, ListTransactions)."""
    def handler(conn: Any, header: Any, req: Any) -> Any:
        return conn.server.call_off_loop(plain, conn, header, req)
    return handler


def _sync_failed(resp: Any, code: int) -> Any:
    resp.error_code = code
    resp.assignment = _EMPTY
    return resp


def handle_sync_group(conn: Any, header: Any, req: Any) -> Any:
    """SyncGroup of the leader (which stored the group's assignment) answered once that
    write is replicated; followers' answers wait the same way, for the same write."""
    from pylog.server.handlers import handle_sync_group as plain
    return _after_replication(conn, plain(conn, header, req), req.group_id,
                              lambda r: r.error_code == NONE, _sync_failed)


def _offset_delete_appended(resp: Any) -> bool:
    return resp.error_code == NONE and any(p.error_code == NONE for t in resp.topics for p in t.partitions)


def handle_offset_delete(conn: Any, header: Any, req: Any) -> Any:
    """OffsetDelete answered once its tombstones are replicated."""
    from pylog.server.handlers import handle_offset_delete as plain
    return _after_replication(conn, plain(conn, header, req), req.group_id, _offset_delete_appended,
                              _commit_failed)


def handle_delete_groups(conn: Any, header: Any, req: Any) -> Any:
    """DeleteGroups answered once each deleted group's tombstones are replicated; a
    group whose tombstones the ISR did not take is answered with the error."""
    from pylog.cluster.coordinators import commit_error_code
    from pylog.server.handlers import handle_delete_groups as plain
    node = _node(conn)
    resp = plain(conn, header, req)
    deleted = [r.group_id for r in resp.results if r.error_code == NONE]
    if not deleted:
        return resp

    async def run() -> Any:
        failed = await node.coordinators.wait_groups_replicated(deleted)
        for r in resp.results:
            if r.error_code == NONE and r.group_id in failed:
                r.error_code = commit_error_code(failed[r.group_id])
        return resp

    return conn.server.loop.create_task(run())


# -- configs in ZooKeeper ---------------------------------------------------------------------

_RESOURCE_TOPIC, _RESOURCE_BROKER = 2, 4


#: The throttle of moves between a broker's log dirs, which kafka-reassign-partitions
#: sets with ``--replica-alter-log-dirs-throttle`` and deletes with the replication
#: rates when it clears its throttles.  Kept in ZooKeeper beside them; it throttles
#: nothing here, since a pylog broker has one log dir and moves no replica between dirs.
LOG_DIR_THROTTLE = "replica.alter.log.dirs.io.max.bytes.per.second"


def _throttle_rates() -> tuple[str, str, str]:
    from pylog.cluster.controller import FOLLOWER_REPLICATION_THROTTLED_RATE, LEADER_REPLICATION_THROTTLED_RATE
    return LEADER_REPLICATION_THROTTLED_RATE, FOLLOWER_REPLICATION_THROTTLED_RATE, LOG_DIR_THROTTLE


def _in_zookeeper(rtype: int, ops: list, incremental: bool) -> bool:
    """Whether a config resource lives in ZooKeeper on a cluster: a topic, or (by
    IncrementalAlterConfigs, as kafka-reassign-partitions sets and clears them) a
    broker's throttle rates alone."""
    if rtype == _RESOURCE_TOPIC:
        return True
    return rtype == _RESOURCE_BROKER and incremental and bool(ops) and \
        all(name in _throttle_rates() for name, _op, _v in ops)


def _alter_in_zookeeper(node: Any, rtype: int, rname: str, ops: list, incremental: bool,
                        validate_only: bool) -> None:
    """(Off the loop.)  Check and write one resource's configs in ZooKeeper.

    Raises
    ------
    PylogError
        UNKNOWN_TOPIC_OR_PARTITION, INVALID_CONFIG, INVALID_REQUEST (a broker resource
        that is not one broker's id, an operation other than SET or DELETE on a rate).
    """
    from pylog.broker.topic_config import apply_config_ops, normalize_all
    from pylog.cluster.coordinators import INTERNAL_TOPICS
    from pylog.cluster.quota import ReplicationQuota
    from pylog.errors import InvalidConfigError, InvalidRequestError, UnknownTopicOrPartitionError
    coordination = node.coordination
    if rtype == _RESOURCE_TOPIC:
        if incremental:
            new = apply_config_ops(coordination.get_entity_config("topics", rname), ops,
                                   node.broker.config.topic_defaults)
        else:
            new = normalize_all({n: v for n, _op, v in ops if v is not None})
        if coordination.get_topic_assignment(rname) is None:
            raise UnknownTopicOrPartitionError(f"topic {rname!r} does not exist")
        if rname in INTERNAL_TOPICS and new.get("cleanup.policy", "compact") != "compact":
            raise InvalidConfigError(f"{rname} must stay compacted")
        if not validate_only:
            coordination.set_entity_config("topics", rname, new)
        return
    from pylog.cluster.quota import DEFAULT_ENTITY
    if rname != "" and not rname.isdigit():
        raise InvalidRequestError(f"replication throttle rates are set per broker or as the default (\"\"), "
                                  f"not for {rname!r}")
    entity = DEFAULT_ENTITY if rname == "" else str(int(rname))
    config = coordination.get_entity_config("brokers", entity)
    for name, op, value in ops:
        if op == 0:
            ReplicationQuota().set_rate_config(value)      # the check: an integer
            config[name] = str(int(str(value).strip()))
        elif op == 1:
            config.pop(name, None)
        else:
            raise InvalidRequestError(f"{name} takes SET or DELETE, not operation {op}")
    if not validate_only:
        coordination.set_entity_config("brokers", entity, config)


def _alter_configs(conn: Any, header: Any, req: Any, incremental: bool) -> Any:
    """The resources that live in ZooKeeper are written there (off the loop); the others
    go to the single node's handler; the answers keep the request's order."""
    from pylog.server import handlers
    node = _node(conn)
    if incremental:
        resources = [(r.resource_type, r.resource_name, [(c.name, c.config_operation, c.value) for c in r.configs])
                     for r in req.resources]
        plain, R, Req = handlers.handle_incremental_alter_configs, m.IncrementalAlterConfigsResponse, \
            m.IncrementalAlterConfigsRequest
    else:
        resources = [(r.resource_type, r.resource_name, [(c.name, 0, c.value) for c in r.configs])
                     for r in req.resources]
        plain, R, Req = handlers.handle_alter_configs, m.AlterConfigsResponse, m.AlterConfigsRequest
    ours = [i for i, (rtype, _n, ops) in enumerate(resources) if _in_zookeeper(rtype, ops, incremental)]
    if not ours:
        return plain(conn, header, req)
    others = [r for i, r in enumerate(req.resources) if i not in ours]
    local = plain(conn, header, Req(resources=others, validate_only=req.validate_only)) if others else None

    def write() -> dict[int, tuple[int, str | None]]:
        out = {}
        for i in ours:
            rtype, rname, ops = resources[i]
            try:
                _alter_in_zookeeper(node, rtype, rname, ops, incremental, req.validate_only)
            except PylogError as exc:
                out[i] = (exc.error_code, str(exc))
                continue
            out[i] = (NONE, None)
            if not req.validate_only:
                _log.info("altered configs of %s %s in ZooKeeper for %s", "topic" if rtype == _RESOURCE_TOPIC
                          else "broker", rname, conn.peer)
        return out

    written = conn.server.call_off_loop(write)

    async def answer() -> Any:
        done = await written
        plain_resp = (await local) if hasattr(local, "add_done_callback") else local
        rest = iter(plain_resp.responses if plain_resp is not None else ())
        responses = []
        for i, (rtype, rname, _ops) in enumerate(resources):
            if i in done:
                code, message = done[i]
                responses.append(R.AlterConfigsResourceResponse(error_code=code, error_message=message,
                                                                resource_type=rtype, resource_name=rname))
            else:
                responses.append(next(rest))
        return R(throttle_time_ms=0, responses=responses)

    return conn.server.loop.create_task(answer())


def handle_alter_configs(conn: Any, header: Any, req: Any) -> Any:
    return _alter_configs(conn, header, req, incremental=False)


def handle_describe_configs(conn: Any, header: Any, req: Any) -> Any:
    """DescribeConfigs with what the cluster keeps in ZooKeeper, read there (off the
    loop) so an answer follows the AlterConfigs before it: a broker resource adds the
    replication throttle rates of ``/config/brokers/<id>`` and ``<default>``
    (:func:`pylog.cluster.quota.describe_rates`); a topic resource shows its
    ``/config/topics/<t>`` values of ``*.replication.throttled.replicas`` as
    DYNAMIC_TOPIC_CONFIG.  A topic this broker holds no replica of, but which exists in
    ``/brokers/topics``, is answered as Kafka's broker does, from ``/config/topics/<t>``
    over this broker's defaults (the sources a replica's broker gives).  The rest is the
    single node's answer."""
    from pylog.broker.topic_config import ConfigSource
    from pylog.cluster.controller import FOLLOWER_REPLICATION_THROTTLED_REPLICAS, LEADER_REPLICATION_THROTTLED_REPLICAS
    from pylog.cluster.quota import DEFAULT_ENTITY, describe_rates
    from pylog.server import handlers
    node = _node(conn)
    resp = handlers.handle_describe_configs(conn, header, req)
    asked = [(res, r) for res, r in zip(req.resources, resp.results)
             if r.resource_type in (_RESOURCE_BROKER, _RESOURCE_TOPIC) and (
                 r.error_code == NONE or (r.error_code == UNKNOWN_TOPIC_OR_PARTITION
                                          and r.resource_type == _RESOURCE_TOPIC))]
    if not asked or node.coordination is None:
        return resp
    synonyms = header.api_version >= 1 and req.include_synonyms
    docs = header.api_version >= 3 and req.include_documentation
    replicas = (LEADER_REPLICATION_THROTTLED_REPLICAS, FOLLOWER_REPLICATION_THROTTLED_REPLICAS)
    R = m.DescribeConfigsResponse

    def read() -> list:
        c = node.coordination
        out = []
        for res, r in asked:
            if r.resource_type == _RESOURCE_TOPIC:
                if r.error_code != NONE and c.get_topic_assignment(r.resource_name) is None:
                    out.append(None)        # no such topic in the cluster either
                    continue
                out.append(c.get_entity_config("topics", r.resource_name))
            else:
                default = c.get_entity_config("brokers", DEFAULT_ENTITY)
                mine = None if r.resource_name == "" else c.get_entity_config("brokers", r.resource_name)
                out.append(describe_rates(mine, default, res.configuration_keys))
        return out

    def entry(name: str, value: str | None, source: int, read_only: bool, ctype: int, syns: Any) -> Any:
        return R.DescribeConfigsResourceResult(
            name=name, value=value, read_only=read_only, is_default=False, config_source=source,
            is_sensitive=False, config_type=ctype if header.api_version >= 3 else 0, documentation=None,
            synonyms=[R.DescribeConfigsSynonym(name=n, value=v, source=src) for n, v, src in syns] if synonyms else [])

    async def answer() -> Any:
        found = await conn.server.call_off_loop(read)
        for (res, r), got in zip(asked, found):
            if r.resource_type == _RESOURCE_TOPIC and r.error_code != NONE:
                if got is not None:
                    _describe_topic_from_zookeeper(node, r, res, got, header.api_version, synonyms, docs)
                continue
            if r.resource_type == _RESOURCE_TOPIC:
                for e in r.configs:
                    if e.name in replicas and got.get(e.name) is not None:
                        e.value, e.config_source = got[e.name], ConfigSource.DYNAMIC_TOPIC_CONFIG
                        e.is_default = False
                        if synonyms:
                            e.synonyms = [R.DescribeConfigsSynonym(name=e.name, value=e.value,
                                                                   source=ConfigSource.DYNAMIC_TOPIC_CONFIG)]
                continue
            names = {e.name for e in got}
            r.configs = [e for e in r.configs if e.name not in names] + [
                entry(e.name, e.value, e.source, e.read_only, e.type, e.synonyms) for e in got]
            r.configs.sort(key=lambda e: e.name)
        return resp

    return conn.server.loop.create_task(answer())


def _describe_topic_from_zookeeper(node: Any, r: Any, res: Any, overrides: dict, version: int,
                                   synonyms: bool, docs: bool) -> None:
    """Fill the result ``r`` of a topic this broker holds no replica of with its
    ZooKeeper ``overrides`` over this broker's topic defaults.  Overrides this broker
    cannot parse leave the error as it was (logged)."""
    from pylog.broker.topic_config import TopicConfig, normalize_all
    from pylog.server import handlers
    cfg = node.broker.config
    try:
        config = TopicConfig(normalize_all(overrides), cfg.topic_defaults, cfg.topic_default_sources)
    except PylogError as exc:
        _log.error("topic %s: the configs in ZooKeeper (%s) are refused here: %s", r.resource_name, overrides, exc)
        return
    entries = config.describe(res.configuration_keys, include_synonyms=synonyms, include_documentation=docs)
    r.configs = handlers.describe_configs_entries(entries, version, synonyms, docs)
    r.error_code, r.error_message = NONE, None


def handle_incremental_alter_configs(conn: Any, header: Any, req: Any) -> Any:
    return _alter_configs(conn, header, req, incremental=True)


def handle_create_topics(conn: Any, header: Any, req: Any) -> Any:
    return _delayed(conn, req.timeout_ms, _create_topics, _node(conn), header, req)


def _create_topics(node: Any, header: Any, req: Any) -> Any:
    R: Any = m.CreateTopicsResponse
    cfg = node.config
    results = []
    created = []
    for t in req.topics:
        count = t.num_partitions if t.num_partitions > 0 else cfg.num_partitions
        rf = t.replication_factor if t.replication_factor > 0 else cfg.default_replication_factor
        assignment = {a.partition_index: list(a.broker_ids) for a in t.assignments} or None
        configs = {c.name: c.value for c in t.configs if c.value is not None}
        try:
            _admin(node).create_topic(t.name, count, rf, configs, assignment, validate_only=req.validate_only)
            if not req.validate_only:
                created.append(t.name)
            code, msg = NONE, None
        except PylogError as exc:
            code, msg = exc.error_code, str(exc)
        results.append(R.CreatableTopicResult(name=t.name, error_code=code, error_message=msg,
                                              num_partitions=count if code == NONE else -1,
                                              replication_factor=rf if code == NONE else -1, configs=[]))
    # Kafka answers once the new partitions' leaders are known (its DelayedCreatePartitions),
    # REQUEST_TIMED_OUT for a topic written whose leaders are not known at timeout_ms.
    def expire(cache: Any) -> None:
        for r in results:
            if r.name in created and (cache is None or not _led(cache, r.name)):
                r.error_code = REQUEST_TIMED_OUT
                r.error_message = f"the partitions of {r.name!r} have no leader yet after {req.timeout_ms} ms"
    return R(throttle_time_ms=0, topics=results), lambda cache: all(_led(cache, n) for n in created), expire


def _led(cache: Any, topic: str, count: int = 1) -> bool:
    """``topic`` has at least ``count`` partitions in this broker's metadata, each with a live leader."""
    parts = cache.partitions_of(topic)
    return len(parts) >= count and all(s.leader in cache.brokers for s in parts)


#: node -> [(done, future)]: the admin requests waiting for this broker's metadata to
#: show their result (loop thread only).
_metadata_waiters: "weakref.WeakKeyDictionary[Any, list[tuple[Callable[[Any], bool], Any]]]" = \
    weakref.WeakKeyDictionary()


def _metadata_updated(node: Any) -> None:
    """(Loop thread.) Complete the waiters whose condition the new metadata meets."""
    for done, fut in list(_metadata_waiters.get(node, ())):
        if fut.done():
            continue
        try:
            if done(node.metadata):
                fut.set_result(True)
        except Exception as exc:  # noqa: BLE001 - the request fails, not the UpdateMetadata
            fut.set_exception(exc)


async def _metadata_shows(conn: Any, done: Callable[[Any], bool], timeout_ms: int) -> bool:
    """Whether ``done(node.metadata)`` holds within ``timeout_ms``, as Kafka's delayed
    admin operations wait for the controller's UpdateMetadata (checked on each one, on
    the loop; no thread waits)."""
    node = _node(conn)
    if done(node.metadata):
        return True
    if timeout_ms <= 0:
        return False
    loop = conn.server.loop
    fut = loop.create_future()
    entry = (done, fut)
    waiters = _metadata_waiters.setdefault(node, [])
    waiters.append(entry)
    timer = loop.call_later(timeout_ms / 1000, lambda: fut.done() or fut.set_result(False))
    try:
        return await fut
    finally:
        timer.cancel()
        waiters.remove(entry)


def _delayed(conn: Any, timeout_ms: int, write: Callable[..., Any], *args: Any) -> Any:
    """An admin request in two steps: ``write(*args)`` off the loop (ZooKeeper) returns
    ``(response, done, expire)``; the response goes out once ``done(metadata)`` holds, or
    after ``expire(metadata)`` marked what did not happen within ``timeout_ms``.  With
    ``timeout_ms`` <= 0 nothing is waited for and ``expire(None)`` marks everything
    written REQUEST_TIMED_OUT, whatever the metadata shows already (Kafka's
    ZkAdminManager answers so without looking)."""
    async def run() -> Any:
        resp, done, expire = await conn.server.call_off_loop(write, *args)
        if timeout_ms <= 0:
            expire(None)
        elif not await _metadata_shows(conn, done, timeout_ms):
            expire(_node(conn).metadata)
        return resp
    return conn.server.loop.create_task(run())


def handle_delete_topics(conn: Any, header: Any, req: Any) -> Any:
    return _delayed(conn, req.timeout_ms, _delete_topics, _node(conn), header, req)


def _delete_topics(node: Any, header: Any, req: Any) -> Any:
    """DeleteTopics in ZooKeeper mode (Kafka's ZkAdminManager.deleteTopics): any broker
    writes ``/admin/delete_topics/<t>``; the controller stops and deletes every replica,
    then removes the topic; the answer comes once this broker's metadata no longer has
    the topic, or REQUEST_TIMED_OUT at ``timeout_ms`` (the deletion still goes on)."""
    R: Any = m.DeleteTopicsResponse
    codes: dict[str, tuple[int, str | None]] = {}
    marked = []
    names = list(req.topic_names)
    for name in names:
        if names.count(name) > 1:
            codes[name] = (INVALID_REQUEST, "Duplicate topic name in the request")
        elif not node.config.delete_topic_enable:
            # Kafka: INVALID_REQUEST before v3 (TOPIC_DELETION_DISABLED did not exist yet)
            codes[name] = (INVALID_REQUEST if header.api_version < 3 else TOPIC_DELETION_DISABLED,
                           "Topic deletion is disabled.")
        else:
            try:
                _admin(node).delete_topic(name)   # already marked: tracked again, as Kafka does
                marked.append(name)
                codes[name] = (NONE, None)
            except PylogError as exc:
                codes[name] = (exc.error_code, str(exc))
    results = [R.DeletableTopicResult(name=n, error_code=c) for n, (c, _) in codes.items()]
    for name, (code, why) in codes.items():
        if code != NONE:
            _log.info("DeleteTopics %s: error %d: %s", name, code, why)

    def expire(cache: Any) -> None:
        for r in results:
            if r.name in marked and (cache is None or cache.partitions_of(r.name)):
                r.error_code = REQUEST_TIMED_OUT    # (DeleteTopics up to v4 here: no error messages)
    return (R(throttle_time_ms=0, responses=results),
            lambda cache: not any(cache.partitions_of(n) for n in marked), expire)


def handle_create_partitions(conn: Any, header: Any, req: Any) -> Any:
    return _delayed(conn, req.timeout_ms, _create_partitions, _node(conn), req)


def _create_partitions(node: Any, req: Any) -> Any:
    """CreatePartitions in ZooKeeper mode (Kafka's ZkAdminManager.createPartitions): any
    broker places the new partitions (or checks the given assignments) and writes the
    topic's assignment; the controller elects their leaders; the answer comes once this
    broker's metadata shows every new partition with a leader, or REQUEST_TIMED_OUT at
    ``timeout_ms``. ``validate_only`` checks and writes nothing."""
    R: Any = m.CreatePartitionsResponse
    results: dict[str, tuple[int, str | None]] = {}
    grown: dict[str, int] = {}
    names = [t.name for t in req.topics]
    deleting = set(node.coordination.get_topic_deletions())
    for t in req.topics:
        try:
            if names.count(t.name) > 1:
                raise InvalidRequestError("Duplicate topic in request.")
            if t.name in deleting:
                raise InvalidTopicError(f"The topic {t.name!r} is queued for deletion.")
            assignment = None
            if t.assignments is not None:
                current = node.coordination.get_topic_assignment(t.name)
                first = len(current.partitions) if current is not None else 0
                if current is not None and len(t.assignments) != t.count - first:
                    raise InvalidReplicaAssignmentError(
                        f"Increasing the number of partitions by {t.count - first} but "
                        f"{len(t.assignments)} assignments provided.")
                assignment = {first + i: list(a.broker_ids) for i, a in enumerate(t.assignments)}
            _admin(node).create_partitions(t.name, t.count, assignment, validate_only=req.validate_only)
            if not req.validate_only:
                grown[t.name] = t.count
            results[t.name] = (NONE, None)
        except PylogError as exc:
            results[t.name] = (exc.error_code, str(exc))
    out = [R.CreatePartitionsTopicResult(name=n, error_code=c, error_message=msg) for n, (c, msg) in results.items()]

    def expire(cache: Any) -> None:
        for r in out:
            if r.name in grown and (cache is None or not _led(cache, r.name, grown[r.name])):
                r.error_code = REQUEST_TIMED_OUT
                r.error_message = f"the new partitions of {r.name!r} have no leader yet after {req.timeout_ms} ms"
    return R(throttle_time_ms=0, results=out), lambda cache: all(_led(cache, n, c) for n, c in grown.items()), expire


def _elect_leaders_not_controller(req: Any) -> Any:
    """Kafka's answer from a broker that is not the active controller: NOT_CONTROLLER for
    each partition asked for (none for null partitions), so the client finds the controller."""
    R: Any = m.ElectLeadersResponse
    return R(throttle_time_ms=0, replica_election_results=[
        R.ReplicaElectionResult(topic=t.topic, partition_result=[
            R.PartitionResult(partition_id=p, error_code=NotControllerError.error_code, error_message=None)
            for p in t.partitions]) for t in (req.topic_partitions or [])])


def handle_elect_leaders(conn: Any, header: Any, req: Any) -> Any:
    """ElectLeaders (KIP-460), PREFERRED or UNCLEAN, decided by the active controller
    (clients send it there; NOT_CONTROLLER per partition elsewhere). Null partitions:
    every partition. As Kafka's DelayedElectLeader, the answer comes once this broker's
    metadata shows the elected leaders, or REQUEST_TIMED_OUT for those not shown at
    ``timeout_ms``."""
    node = _node(conn)
    controller = node.controller
    if controller is None or not controller.is_active:
        return _elect_leaders_not_controller(req)
    return conn.server.loop.create_task(_elect_leaders(conn, node, controller, req))


async def _elect_leaders(conn: Any, node: Any, controller: Any, req: Any) -> Any:
    from pylog.cluster.controller import answer_elect_leaders
    try:
        resp = await asyncio.wrap_future(node.controller_thread.submit(answer_elect_leaders, controller, req))
    except RuntimeError:    # the broker is stopping
        return _elect_leaders_not_controller(req)
    if resp.error_code == NotControllerError.error_code:
        return _elect_leaders_not_controller(req)
    preferred = req.election_type == 0

    def shown(cache: Any, topic: str, partition: int) -> bool:
        for s in cache.partitions_of(topic):
            if s.partition == partition:
                return s.leader in cache.brokers and (not preferred or s.leader == s.replicas[0])
        return False

    elected = [(r.topic, p) for r in resp.replica_election_results for p in r.partition_result if p.error_code == NONE]
    if not await _metadata_shows(conn, lambda cache: all(shown(cache, t, p.partition_id) for t, p in elected),
                                 req.timeout_ms):
        cache = node.metadata
        for t, p in elected:
            if not shown(cache, t, p.partition_id):
                p.error_code = REQUEST_TIMED_OUT
                p.error_message = f"the new leader of {t}-{p.partition_id} is not known yet after {req.timeout_ms} ms"
    return resp


def handle_describe_log_dirs(conn: Any, header: Any, req: Any) -> Any:
    """DescribeLogDirs of a clustered broker: only the partitions it holds a replica of
    (its data dir may hold a topic's other partitions too: pylog.broker creates a topic
    whole)."""
    from pylog.server.handlers import describe_log_dirs
    replicas = _node(conn).replica_manager.replicas
    return conn.server.call_off_loop(describe_log_dirs, conn, header, req,
                                     lambda topic, partition: (topic, partition) in replicas)


def cluster_handler_table(plain: dict) -> dict:
    """``plain`` (the server's handler table) with the cluster's handlers put in."""
    from pylog.protocol.apis import api_name, supported_versions
    codec = supported_versions()
    table = dict(plain)

    def put(key: int, fn: Callable, lo: int | None = None, hi: int | None = None) -> None:
        c = codec[int(key)]
        old = table.get(int(key))
        lo = lo if lo is not None else (old[0] if old else c[0])
        hi = hi if hi is not None else (old[1] if old else c[1])
        table[int(key)] = (lo, hi, fn, api_name(key))

    put(ApiKey.LEADER_AND_ISR, handle_leader_and_isr, 2)
    put(ApiKey.UPDATE_METADATA, handle_update_metadata, 5)
    put(ApiKey.STOP_REPLICA, handle_stop_replica, 3)
    put(ApiKey.CONTROLLED_SHUTDOWN, handle_controlled_shutdown, 1)
    put(ApiKey.ALTER_PARTITION, handle_alter_partition)
    put(ApiKey.ALTER_PARTITION_REASSIGNMENTS, handle_alter_partition_reassignments)
    put(ApiKey.LIST_PARTITION_REASSIGNMENTS, handle_list_partition_reassignments)
    put(ApiKey.FETCH, handle_fetch)
    put(ApiKey.PRODUCE, handle_produce)
    put(ApiKey.METADATA, handle_metadata)
    put(ApiKey.DESCRIBE_CLUSTER, handle_describe_cluster)
    put(ApiKey.DESCRIBE_LOG_DIRS, handle_describe_log_dirs)
    put(ApiKey.FIND_COORDINATOR, handle_find_coordinator)
    put(ApiKey.OFFSET_COMMIT, handle_offset_commit)
    put(ApiKey.SYNC_GROUP, handle_sync_group)
    put(ApiKey.TXN_OFFSET_COMMIT, handle_txn_offset_commit)
    put(ApiKey.OFFSET_DELETE, handle_offset_delete)
    put(ApiKey.DELETE_GROUPS, handle_delete_groups)
    put(ApiKey.WRITE_TXN_MARKERS, handle_write_txn_markers)
    from pylog.server.handlers import handle_describe_transactions, handle_list_transactions
    put(ApiKey.DESCRIBE_TRANSACTIONS, _off_loop(handle_describe_transactions))
    put(ApiKey.LIST_TRANSACTIONS, _off_loop(handle_list_transactions))
    put(ApiKey.CREATE_TOPICS, handle_create_topics)
    put(ApiKey.DELETE_TOPICS, handle_delete_topics)
    put(ApiKey.CREATE_PARTITIONS, handle_create_partitions)
    put(ApiKey.ELECT_LEADERS, handle_elect_leaders)
    put(ApiKey.ALTER_CONFIGS, handle_alter_configs)
    put(ApiKey.DESCRIBE_CONFIGS, handle_describe_configs)
    put(ApiKey.INCREMENTAL_ALTER_CONFIGS, handle_incremental_alter_configs)
    return table
