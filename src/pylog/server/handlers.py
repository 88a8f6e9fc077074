"""One function per Kafka API: decode nothing, decide nothing, translate.

Every handler takes ``(conn, header, request)`` (the decoded request body) and returns the
response body, :data:`~pylog.server.connection.NO_RESPONSE`, or an ``asyncio.Future``
of the response when the answer comes later (a long-polling Fetch, JoinGroup, SyncGroup).
The semantics (what a produce appends, what a join decides, which configs exist) live in
the broker core (:mod:`pylog.broker`); a handler maps request fields to a core call and
the call's result or :class:`~pylog.errors.PylogError` to response fields and Kafka
error codes.  The table at the bottom says which versions of which API are served; the
ApiVersions response is built from it, so what is advertised is exactly what is handled.

Handlers run on the event loop's thread; nothing here blocks (core calls are in-memory
work or a memcpy into a mapped segment; fsync and retention run off the loop).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable

from pylog.broker.group_offsets import CONSUMER_OFFSETS_TOPIC, partition_for_group
from pylog.broker.txn_log import TRANSACTION_STATE_TOPIC
from pylog.errors import (
    InvalidConfigError,
    InvalidRequestError,
    KafkaStorageError,
    PolicyViolationError,
    PylogError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    error_code_for,
)
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from pylog.protocol.produce_reply import produce_response_frame, produce_response_ok
from pylog.protocol.replies import error_body
from pylog.server._core_adapter import topic_uuid, zero_uuid
from pylog.server.connection import NO_RESPONSE
from pylog.server.fetch import CaughtUpAnswers, FetchWaiters, caught_up, read_partitions
from pylog.server.fetch_session import FetchSessionCache

__all__ = ["ServerState", "handler_table", "open_broker", "SERVED_VERSIONS"]

_log = logging.getLogger("pylog.server")

# Kafka error codes used directly (the rest come from exceptions via error_code_for).
NONE = 0
UNKNOWN_SERVER_ERROR = -1
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_NOT_AVAILABLE = 15
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUIRED_ACKS = 21
INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_REQUEST = 42
ELECTION_NOT_NEEDED = 84
TOPIC_DELETION_DISABLED = 73
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75
INVALID_RECORD = 87
UNSUPPORTED_VERSION = 35
UNSUPPORTED_COMPRESSION_TYPE = 76

#: Kafka's "authorized operations not requested" value.
_NOT_REQUESTED = -2147483648
# AclOperation codes (bits of the authorized-operations fields); with no authorizer every
# operation that applies to the resource is allowed, as Kafka reports it.
_TOPIC_OPS = sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))   # read..alter_configs
_GROUP_OPS = sum(1 << op for op in (3, 6, 8))                    # read, delete, describe
_CLUSTER_OPS = sum(1 << op for op in (5, 7, 8, 9, 10, 11, 12))   # create..idempotent_write

_CLIENT_SOFTWARE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?$")

# Config resource types (DescribeConfigs / AlterConfigs).
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_BROKER_LOGGER = 8


def open_broker(config: Any, dynamic: Any = None) -> Any:
    """Open the broker core on ``config.log_dirs`` with the server's settings (and the
    dynamic broker configs of ``dynamic``, when given)."""
    from pylog.server._core_adapter import open_broker as _open

    return _open(config, dynamic)


# --------------------------------------------------------------------------------------
# Shared state
# --------------------------------------------------------------------------------------


class ServerState:
    """What the handlers share: the broker core, the group coordinator's timer, the
    Fetch waiters, the node's identity.  One per :class:`~pylog.server.server.Server`;
    used from the loop's thread only."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.config = server.config
        self.loop = server.loop
        self.broker = server.broker
        self.groups = self.broker.groups
        self.node_id = self.config.node_id
        self.cluster_id = self.broker.cluster_id
        self.fetch_waiters = FetchWaiters(self)
        self.fetch_sessions = FetchSessionCache(self.config.max_incremental_fetch_session_cache_slots)
        self.caught_up_answers = CaughtUpAnswers()
        self._group_timer: Any = None
        self._group_timer_at: float | None = None
        self._epochs: dict[str, int] = {}
        self.broker.add_append_listener(self._on_append)
        self.schedule_group_tick()

    @property
    def host(self) -> str:
        return self.server.advertised[0]

    @property
    def port(self) -> int:
        return self.server.advertised[1]

    def leader_epoch(self, topic: str, partition: int = 0) -> int | None:
        """The topic's leader epoch (None: no such topic), cached until the topic changes;
        clustered, the partition's, from its replica."""
        if self.server.cluster is not None:
            return self.server.cluster.replica_manager.current_leader_epoch(topic, partition)
        epoch = self._epochs.get(topic)
        if epoch is None:
            try:
                d = self.broker.describe_topic(topic)
            except PylogError:
                return None
            epoch = d.partitions[0].leader_epoch if d.partitions else 0
            self._epochs[topic] = epoch
        return epoch

    def topic_changed(self, topic: str) -> None:
        """A topic was created, deleted or grown (callable from any thread)."""
        self.server.call_in_loop(self._topic_changed, topic)

    def _topic_changed(self, topic: str) -> None:
        self._epochs.pop(topic, None)
        self.caught_up_answers.forget_topic(topic)
        self.fetch_waiters.on_topic_change(topic)

    def describe_topic(self, name: str) -> Any:
        """The core's TopicDescription, or None for an unknown topic."""
        try:
            return self.broker.describe_topic(name)
        except UnknownTopicOrPartitionError:
            return None

    def auto_create(self, name: str, why: str, peer: str) -> Any:
        """Create ``name`` with the defaults (auto.create.topics.enable); returns its
        description, or raises the core's error."""
        try:
            d = self.broker.create_topic(name)
        except TopicAlreadyExistsError:
            return self.broker.describe_topic(name)
        self.topic_changed(name)
        _log.info("auto-created topic %s (%d partitions) on %s from %s", name, d.num_partitions, why, peer)
        return d

    # -- lifecycle -----------------------------------------------------------------

    def shutdown(self) -> None:
        self.fetch_waiters.cancel_all()
        if self._group_timer is not None:
            self._group_timer.cancel()
            self._group_timer = None
        try:
            self.broker.remove_append_listener(self._on_append)
        except (AttributeError, ValueError):
            pass

    def connection_closed(self, conn: Any) -> None:
        pass

    # -- appends wake fetchers -----------------------------------------------------

    def _on_append(self, topic: str, partition: int, high_watermark: int) -> None:
        # Called by the broker after every append, from whatever thread appended.
        self.fetch_waiters.count_append()
        if self.fetch_waiters.by_partition:
            self.server.call_in_loop(self.fetch_waiters.on_append, topic, partition, high_watermark)

    # -- group coordinator timer ---------------------------------------------------

    def schedule_group_tick(self) -> None:
        """(Re)arm the timer that fires the coordinator's next timeout (session expiry,
        rebalance and join deadlines)."""
        deadline = self.groups.next_deadline()
        if deadline is None:
            return
        delay = max(0.0, deadline / 1000.0 - time.time())
        at = self.loop.time() + delay
        if self._group_timer is not None:
            if self._group_timer_at is not None and self._group_timer_at <= at + 0.001:
                return
            self._group_timer.cancel()
        self._group_timer_at = at
        self._group_timer = self.loop.call_at(at, self._group_tick)

    def _group_tick(self) -> None:
        self._group_timer = None
        self._group_timer_at = None
        try:
            self.groups.tick()
        except Exception as exc:  # noqa: BLE001 - the timer must survive a coordinator bug
            _log.exception("group coordinator tick failed: %r", exc)
        self.schedule_group_tick()

    # -- responses -------------------------------------------------------------------

    def api_versions_body(self, error_code: int = NONE) -> Any:
        served = SERVED_VERSIONS if self.server.cluster is None and not self.server.config.zookeeper_connect \
            else {k: (lo, hi) for k, (lo, hi, _fn, _name) in self.server.handlers.items()}
        keys = [m.ApiVersionsResponse.ApiVersion(api_key=k, min_version=lo, max_version=hi)
                for k, (lo, hi) in sorted(served.items())]
        return m.ApiVersionsResponse(error_code=error_code, api_keys=keys)

    def error_response(self, api_key: int, api_version: int, error_code: int, request: Any = None) -> Any:
        """A response carrying ``error_code`` in every error field; given the decoded
        ``request``, it lists the request's topics and partitions (groups, resources)
        each with the error, as Kafka answers a request it fails as a whole, so a client
        finds its partitions in the answer (:func:`pylog.protocol.replies.error_body`)."""
        if api_key == ApiKey.API_VERSIONS:
            return self.api_versions_body(error_code)
        return error_body(api_key, api_version, error_code, request)

    def future(self) -> Any:
        return self.loop.create_future()

    def pending_to_future(self, pending: Any, convert: Callable[[Any], Any]) -> Any:
        """Turn the coordinator's PendingResponse into the response (now, if complete) or
        a future of it."""
        if pending.done():
            self.schedule_group_tick()
            return convert(pending.result())
        fut = self.loop.create_future()

        def complete() -> None:
            if not fut.done():
                try:
                    fut.set_result(convert(pending.result()))
                except Exception as exc:  # noqa: BLE001 - surfaces as an error response
                    fut.set_exception(exc)
            self.schedule_group_tick()

        pending.add_done_callback(lambda _p: self.server.call_in_loop(complete))
        self.schedule_group_tick()
        return fut


def _off_loop(handler: Callable) -> Callable:
    """Run ``handler`` in the server's I/O threads: for requests that write files and
    fsync (the topic registry, new segments, deleted directories), which must not stall
    the event loop.  The connection waits for the answer, as for any deferred response."""
    def run(conn: Any, header: Any, req: Any) -> Any:
        return conn.server.call_off_loop(handler, conn, header, req)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _needs_creation(st: Any, names: Iterable[str]) -> bool:
    """Whether auto-creation would create one of ``names`` (so the request goes off the loop)."""
    broker = st.broker
    return any(n is not None and not broker.has_topic(n) and _valid_topic_name(n) and not n.startswith("__")
               for n in names)


def _err(exc: BaseException) -> int:
    return error_code_for(exc)


def _msg(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _unexpected(what: str, exc: BaseException) -> int:
    """Log an exception that is not a PylogError (a bug) and return its error code."""
    if not isinstance(exc, PylogError):
        _log.exception("%s failed: %r", what, exc)
    return _err(exc)


# --------------------------------------------------------------------------------------
# ApiVersions, Metadata, DescribeCluster, FindCoordinator
# --------------------------------------------------------------------------------------


def handle_api_versions(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    if header.api_version >= 3 and not (_CLIENT_SOFTWARE.match(req.client_software_name or "")
                                        and _CLIENT_SOFTWARE.match(req.client_software_version or "")):
        return st.api_versions_body(INVALID_REQUEST)
    return st.api_versions_body()


def _metadata_topic(st: Any, d: Any, with_ops: bool) -> Any:
    MR = m.MetadataResponse
    parts = [MR.MetadataResponsePartition(
        error_code=NONE, partition_index=p.partition, leader_id=p.leader, leader_epoch=p.leader_epoch,
        replica_nodes=list(p.replicas), isr_nodes=list(p.isr), offline_replicas=list(p.offline_replicas))
        for p in d.partitions]
    return MR.MetadataResponseTopic(
        error_code=NONE, name=d.name, topic_id=topic_uuid(d.topic_id), is_internal=d.is_internal,
        partitions=parts, topic_authorized_operations=_TOPIC_OPS if with_ops else _NOT_REQUESTED)


def _valid_topic_name(name: str) -> bool:
    return 0 < len(name) <= 249 and name not in (".", "..") and _LEGAL_TOPIC.match(name) is not None


_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
_UNKNOWN_TOPIC_ID = 100


def handle_metadata(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    if (req.topics and st.config.auto_create_topics_enable
            and (req.allow_auto_topic_creation or header.api_version < 4)
            and _needs_creation(st, (t.name for t in req.topics))):
        return conn.server.call_off_loop(_metadata, conn, header, req)
    return _metadata(conn, header, req)


def _metadata(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    broker = st.broker
    version = header.api_version
    MR = m.MetadataResponse
    with_ops = version >= 8 and req.include_topic_authorized_operations
    topics_out = []
    if req.topics is None or (version == 0 and not req.topics):
        for name in broker.list_topics(internal=True):
            d = st.describe_topic(name)
            if d is not None:
                topics_out.append(_metadata_topic(st, d, with_ops))
    elif version < 12 and any(t.name is None or t.topic_id != zero_uuid() for t in req.topics):
        # Versions 10 and 11 carry topic ids in the schema but not in Kafka's broker: a
        # topic by id, or without a name (which their response cannot carry), is an
        # INVALID_REQUEST for every topic of the request, as Kafka answers.
        return st.error_response(ApiKey.METADATA, version, INVALID_REQUEST, req)
    else:
        allow_auto = (req.allow_auto_topic_creation if version >= 4 else True) \
            and st.config.auto_create_topics_enable
        seen = set()
        by_id = None
        for t in req.topics:
            name = t.name
            if name is None:
                # v10+: by topic id.
                if by_id is None:
                    by_id = {}
                    for n in broker.list_topics(internal=True):
                        d = st.describe_topic(n)
                        if d is not None:
                            by_id[topic_uuid(d.topic_id)] = n
                name = by_id.get(t.topic_id)
                if name is None:
                    topics_out.append(MR.MetadataResponseTopic(
                        error_code=_UNKNOWN_TOPIC_ID, name=None, topic_id=t.topic_id, partitions=[]))
                    continue
            if name in seen:
                continue
            seen.add(name)
            d = st.describe_topic(name)
            if d is None and allow_auto and _valid_topic_name(name) and not name.startswith("__"):
                try:
                    d = st.auto_create(name, "metadata", conn.peer)
                except PylogError as exc:
                    topics_out.append(MR.MetadataResponseTopic(error_code=_err(exc), name=name, partitions=[]))
                    continue
            if d is None:
                code = UNKNOWN_TOPIC_OR_PARTITION if _valid_topic_name(name) else INVALID_TOPIC_EXCEPTION
                topics_out.append(MR.MetadataResponseTopic(error_code=code, name=name, partitions=[]))
                continue
            topics_out.append(_metadata_topic(st, d, with_ops))
    return MR(
        throttle_time_ms=0,
        brokers=[MR.MetadataResponseBroker(node_id=st.node_id, host=st.host, port=st.port, rack=None)],
        cluster_id=st.cluster_id, controller_id=st.node_id, topics=topics_out,
        cluster_authorized_operations=_CLUSTER_OPS
        if 8 <= version <= 10 and req.include_cluster_authorized_operations else _NOT_REQUESTED)


def handle_describe_cluster(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    R = m.DescribeClusterResponse
    return R(throttle_time_ms=0, error_code=NONE, error_message=None, cluster_id=st.cluster_id,
             controller_id=st.node_id,
             brokers=[R.DescribeClusterBroker(broker_id=st.node_id, host=st.host, port=st.port, rack=None)],
             cluster_authorized_operations=_CLUSTER_OPS if req.include_cluster_authorized_operations
             else _NOT_REQUESTED)


def describe_log_dirs(conn: Any, header: Any, req: Any, hosted: Callable[[str, int], bool] | None = None) -> Any:
    """DescribeLogDirs: the one log dir (``log.dirs``) with the size of each partition
    held there (``offset_lag`` 0, no future replicas: pylog moves no replica between
    dirs) and, from v4, the file system's total and usable bytes.  ``hosted`` keeps a
    clustered broker's answer to the partitions it holds a replica of.  A file system
    that cannot be read gives the dir KAFKA_STORAGE_ERROR, as Kafka gives an offline dir.
    Runs off the loop: a size may load a partition whose loading was deferred, and
    statvfs is a system call."""
    import os

    st = conn.server.state
    R = m.DescribeLogDirsResponse
    log_dir = os.path.abspath(st.broker.data_dir)
    wanted = None if req.topics is None else {t.topic: t.partitions for t in req.topics}
    try:
        fs = os.statvfs(log_dir)
        sizes = st.broker.partition_sizes(wanted)
    except OSError as exc:
        _log.error("DescribeLogDirs: cannot read %s: %s", log_dir, exc)
        return R(throttle_time_ms=0, error_code=NONE, results=[
            R.DescribeLogDirsResult(error_code=KafkaStorageError.error_code, log_dir=log_dir, topics=[])])
    topics = [R.DescribeLogDirsTopic(name=name, partitions=[
        R.DescribeLogDirsPartition(partition_index=i, partition_size=size, offset_lag=0, is_future_key=False)
        for i, size in sorted(parts.items()) if hosted is None or hosted(name, i)])
        for name, parts in sorted(sizes.items())]
    return R(throttle_time_ms=0, error_code=NONE, results=[R.DescribeLogDirsResult(
        error_code=NONE, log_dir=log_dir, topics=[t for t in topics if t.partitions],
        total_bytes=fs.f_blocks * fs.f_frsize, usable_bytes=fs.f_bavail * fs.f_frsize)])


def handle_find_coordinator(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    if req.key_type == 1 and not st.broker.has_topic(TRANSACTION_STATE_TOPIC):
        # The first transactional id creates __transaction_state: files, off the loop.
        return conn.server.call_off_loop(_find_coordinator, conn, header, req)
    if req.key_type == 0 and not st.broker.has_topic(CONSUMER_OFFSETS_TOPIC):
        # The first group's FindCoordinator creates __consumer_offsets, as Kafka's does.
        return conn.server.call_off_loop(_find_coordinator, conn, header, req)
    return _find_coordinator(conn, header, req)


def _find_coordinator(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    version = header.api_version
    R = m.FindCoordinatorResponse

    def one(key: str) -> tuple[int, str | None]:
        if req.key_type == 0:
            if not key:
                return 24, "the group id is empty"          # INVALID_GROUP_ID
            try:
                st.broker.ensure_offsets_topic()
            except PylogError as exc:
                return _err(exc), _msg(exc)
            return NONE, None
        if req.key_type == 1:
            try:
                st.broker.find_transaction_coordinator(key)
            except PylogError as exc:
                return _err(exc), _msg(exc)
            return NONE, None
        return INVALID_REQUEST, f"unknown coordinator key type {req.key_type}"

    if version >= 4:
        out = []
        for key in req.coordinator_keys:
            code, msg = one(key)
            ok = code == NONE
            out.append(R.Coordinator(key=key, node_id=st.node_id if ok else -1,
                                     host=st.host if ok else "", port=st.port if ok else -1,
                                     error_code=code, error_message=msg))
        return R(throttle_time_ms=0, coordinators=out)
    code, msg = one(req.key)
    ok = code == NONE
    return R(throttle_time_ms=0, error_code=code, error_message=msg,
             node_id=st.node_id if ok else -1, host=st.host if ok else "", port=st.port if ok else -1)


# --------------------------------------------------------------------------------------
# Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, DeleteRecords, InitProducerId
# --------------------------------------------------------------------------------------


def handle_produce(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    topic_data = req.topic_data
    if len(topic_data) == 1 and len(topic_data[0].partition_data) == 1:
        answer = _produce_one_partition(conn, st, header, req, topic_data[0])
        if answer is not None:
            return answer
    # Off the loop: creating a topic writes files, and appends under a flush policy
    # fsync before they return.
    if st.config.auto_create_topics_enable and _needs_creation(st, (t.name for t in req.topic_data)):
        return conn.server.call_off_loop(_produce, conn, header, req)
    may_fsync = st.broker.append_may_fsync
    for t in req.topic_data:
        name = t.name
        for p in t.partition_data:
            if may_fsync(name, p.index):
                return conn.server.call_off_loop(_produce, conn, header, req)
    return _produce(conn, header, req)


def _produce_one_partition(conn: Any, st: Any, header: Any, req: Any, t: Any) -> Any:
    """A Produce request of one topic and one partition (librdkafka sends one request
    per partition, so with many partitions most requests are small and this path's
    per-request cost is what counts), answered with fewer Python calls; None, with
    nothing done, when the request needs the general path (no records, a zstd batch
    before v7, a topic to create, an append that may fsync), which answers it."""
    version = header.api_version
    p = t.partition_data[0]
    records = p.records
    if records is None or len(records) == 0 or (version < 7 and _has_zstd(records)):
        return None
    name = t.name
    index = p.index
    res = st.broker.produce_one(name, index, records, req.acks)
    if res is None:
        return None
    if req.acks == 0:
        return NO_RESPONSE
    if not res.error_code:
        return produce_response_ok(version, header.correlation_id, name, index, res.base_offset,
                                   res.log_append_time, res.log_start_offset)
    answer = _partition_answer(conn, st.broker, name, index, res, version >= 8)
    return produce_response_frame(version, header.correlation_id, [(name, (answer,))])


def _partition_answer(conn: Any, broker: Any, name: str, index: int, res: Any, with_messages: bool) -> tuple:
    """One partition's entry of a Produce response (:func:`produce_response_frame`)."""
    code = res.error_code
    if not code:
        return (index, NONE, res.base_offset, res.log_append_time, res.log_start_offset, None)
    if code in (2, 87, -1):
        _log.info("produce to %s-%d from %s rejected: %s (error %d)", name, index, conn.peer,
                  res.error_message, code)
    start = -1 if code in _NO_LOG_START_ERRORS else _log_start_or_unknown(broker, name, index)
    if with_messages:
        # v8+: the records that made the batch fail (INVALID_RECORD), by index.
        return (index, code, -1, -1, start, res.error_message, res.record_errors)
    return (index, code, -1, -1, start, None)


def _produce(conn: Any, header: Any, req: Any) -> Any:
    """Append each partition's records; the answer is the encoded response frame
    (:func:`produce_response_frame`: no response objects on this path)."""
    st = conn.server.state
    broker = st.broker
    produce = broker.produce_partitions
    version = header.api_version
    acks = req.acks
    with_messages = version >= 8
    auto = st.config.auto_create_topics_enable
    answer = []
    for t in req.topic_data:
        name = t.name
        out = []
        if auto and t.partition_data and not broker.has_topic(name) and _valid_topic_name(name) \
                and not name.startswith("__"):
            try:
                st.auto_create(name, "produce", conn.peer)
            except PylogError:
                pass   # the produce below reports the error per partition
        # The request's own errors first; the rest go to the broker in one call.
        wanted = []
        for p in t.partition_data:
            records = p.records
            if records is None or len(records) == 0:
                out.append((p.index, INVALID_RECORD, -1, -1, -1,
                            "the produce request carries no record batch" if with_messages else None))
            elif version < 7 and _has_zstd(records):
                # zstd came with Produce v7 (KIP-110): Kafka refuses it in older requests.
                out.append((p.index, UNSUPPORTED_COMPRESSION_TYPE, -1, -1, -1, None))
            else:
                out.append(None)
                wanted.append((p.index, records))
        if not wanted:
            answer.append((name if name is not None else "", out))
            continue
        results = iter(produce(name, wanted, acks=acks))
        for i, p in enumerate(t.partition_data):
            if out[i] is not None:
                continue
            out[i] = _partition_answer(conn, broker, name, p.index, next(results), with_messages)
        answer.append((name if name is not None else "", out))
    if acks == 0:
        return NO_RESPONSE
    return produce_response_frame(version, header.correlation_id, answer)


#: Produce errors Kafka answers without the partition's log start offset (unknown
#: partition, not leader, too large, corrupt, storage): every other append error
#: (sequence, epoch, record validation) carries it.
_NO_LOG_START_ERRORS = frozenset({-1, 2, 3, 6, 10, 18, 56, UNSUPPORTED_COMPRESSION_TYPE})


def _has_zstd(records: Any) -> bool:
    """Whether a batch of ``records`` (v2 batches, one after another) is zstd-compressed."""
    view = memoryview(records)
    pos, end = 0, len(view)
    while pos + 23 <= end:
        if view[pos + 22] & 0x07 == 4:     # the low byte of attributes (offset 21, int16)
            return True
        length = int.from_bytes(view[pos + 8:pos + 12], "big", signed=True)
        if length <= 0:
            return False    # malformed: the append reports it
        pos += 12 + length
    return False


def _log_start_or_unknown(broker: Any, topic: str, partition: int) -> int:
    try:
        return broker.log_start_offset(topic, partition)
    except PylogError:
        return -1


def handle_fetch(conn: Any, header: Any, req: Any) -> Any:
    """Fetch: the request's session metadata picks its context (a full, sessionless or
    incremental fetch, or a session error: :mod:`pylog.server.fetch_session`); the
    context's partitions are read now or when a long poll ends, and the context builds
    the answer (an incremental one carries only the partitions with news)."""
    st = conn.server.state
    version = header.api_version
    wanted = [(t.topic, [(p.partition, p.fetch_offset, p.partition_max_bytes, p.current_leader_epoch,
                          p.log_start_offset) for p in t.partitions]) for t in req.topics]
    if version >= 7:
        forgotten = [(t.topic, p) for t in req.forgotten_topics_data for p in t.partitions]
        ctx = st.fetch_sessions.new_context(req.session_id, req.session_epoch, wanted, forgotten,
                                            privileged=req.replica_id >= 0)
        if ctx.error:
            return ctx.respond([])
    else:
        ctx = st.fetch_sessions.new_context(0, -1, wanted, (), privileged=False)
    wanted = ctx.wanted
    max_bytes = min(req.max_bytes, st.config.fetch_max_bytes)
    isolation = req.isolation_level
    appends_seen = st.fetch_waiters.appends
    if req.max_wait_ms > 0 and req.min_bytes > 0 and wanted and not st.server.stopping \
            and caught_up(st, wanted, isolation):
        # A caught-up consumer's poll: wait; the answer is built once, when it ends.
        return st.fetch_waiters.wait(ctx, max_bytes, isolation, req.min_bytes, req.max_wait_ms,
                                     all_caught_up=True, appends_seen=appends_seen, conn=conn)
    responses, total, error = read_partitions(st, wanted, max_bytes, isolation, ctx.session)
    if (req.max_wait_ms <= 0 or total >= req.min_bytes or error or not wanted
            or st.server.stopping):
        return ctx.respond(responses)
    # Long poll: not enough to send yet.  What was read is dropped (its file handles
    # with it); the waiter reads again when woken.
    return st.fetch_waiters.wait(ctx, max_bytes, isolation, req.min_bytes, req.max_wait_ms,
                                 appends_seen=appends_seen, conn=conn)


def _leader_epoch_error(st: Any, topic: str, current_leader_epoch: int) -> int:
    if current_leader_epoch < 0:
        return NONE
    epoch = st.leader_epoch(topic)
    if epoch is None:
        return UNKNOWN_TOPIC_OR_PARTITION
    if current_leader_epoch < epoch:
        return FENCED_LEADER_EPOCH
    if current_leader_epoch > epoch:
        return UNKNOWN_LEADER_EPOCH
    return NONE


def handle_list_offsets(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    broker = st.broker
    version = header.api_version
    R = m.ListOffsetsResponse
    P = R.ListOffsetsPartitionResponse
    topics = []
    seen: set[tuple[str, int]] = set()
    for t in req.topics:
        parts = []
        for p in t.partitions:
            idx = p.partition_index
            if version >= 1 and (t.name, idx) in seen:
                parts.append(P(partition_index=idx, error_code=INVALID_REQUEST))
                continue
            seen.add((t.name, idx))
            code = _leader_epoch_error(st, t.name, p.current_leader_epoch) if version >= 4 else NONE
            if code:
                parts.append(P(partition_index=idx, error_code=code))
                continue
            if version < _LIST_OFFSETS_MIN_VERSION.get(p.timestamp, 0):
                # Kafka answers a special timestamp the request version does not know
                # (MAX_TIMESTAMP -3 needs v7, EARLIEST_LOCAL -4 v8, LATEST_TIERED -5 v9) so.
                parts.append(P(partition_index=idx, error_code=UNSUPPORTED_VERSION))
                continue
            if version == 0 and p.timestamp not in (-1, -2):
                found = broker.list_offsets(t.name, idx, p.timestamp, isolation_level=req.isolation_level)
            else:
                found = broker.list_offsets(t.name, idx, p.timestamp,
                                            isolation_level=req.isolation_level if version >= 2 else 0)
            if found.error_code:
                parts.append(P(partition_index=idx, error_code=found.error_code))
            elif version == 0:
                offsets = [found.offset] if found.offset >= 0 and p.max_num_offsets > 0 else []
                parts.append(P(partition_index=idx, error_code=NONE, old_style_offsets=offsets))
            else:
                parts.append(P(partition_index=idx, error_code=NONE, timestamp=found.timestamp,
                               offset=found.offset,
                               leader_epoch=found.leader_epoch if version >= 4 else -1))
        topics.append(R.ListOffsetsTopicResponse(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


_LIST_OFFSETS_MIN_VERSION = {-3: 7, -4: 8, -5: 9}


def handle_offset_for_leader_epoch(conn: Any, header: Any, req: Any) -> Any:
    broker = conn.server.state.broker
    R = m.OffsetForLeaderEpochResponse
    E = R.EpochEndOffset
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            res = broker.offset_for_leader_epoch(t.topic, p.partition, p.leader_epoch, p.current_leader_epoch)
            parts.append(E(error_code=res.error_code, partition=p.partition, leader_epoch=res.leader_epoch,
                           end_offset=res.end_offset))
        topics.append(R.OffsetForLeaderTopicResult(topic=t.topic, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


@_off_loop
def handle_delete_records(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    broker = st.broker
    R = m.DeleteRecordsResponse
    P = R.DeleteRecordsPartitionResult
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            try:
                low = broker.delete_records(t.name, p.partition_index, p.offset)
            except Exception as exc:  # noqa: BLE001
                parts.append(P(partition_index=p.partition_index, low_watermark=-1,
                               error_code=_unexpected("delete records", exc)))
                continue
            _log.info("deleted records of %s-%d before offset %d for %s", t.name, p.partition_index,
                      low, conn.peer)
            parts.append(P(partition_index=p.partition_index, low_watermark=low, error_code=NONE))
        topics.append(R.DeleteRecordsTopicResult(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


@_off_loop
def handle_init_producer_id(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    R = m.InitProducerIdResponse
    version = header.api_version
    res = st.broker.init_producer_id(
        req.transactional_id, req.transaction_timeout_ms,
        producer_id=req.producer_id if version >= 3 else -1,
        producer_epoch=req.producer_epoch if version >= 3 else -1)
    if res.error_code:
        _log.info("InitProducerId from %s refused: %s", conn.peer, res.error_message)
        return R(throttle_time_ms=0, error_code=_fenced_code(res.error_code, version >= 4),
                 producer_id=-1, producer_epoch=-1)
    return R(throttle_time_ms=0, error_code=NONE, producer_id=res.producer_id,
             producer_epoch=res.producer_epoch)


# --------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------


def handle_join_group(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    version = header.api_version
    R = m.JoinGroupResponse
    pending = st.groups.join_group(
        req.group_id, req.member_id, req.protocol_type,
        [(p.name, p.metadata) for p in req.protocols],
        session_timeout_ms=req.session_timeout_ms,
        rebalance_timeout_ms=req.rebalance_timeout_ms if version >= 1 else -1,
        # Kafka names the host as Java prints an InetAddress: "/127.0.0.1".
        client_id=header.client_id or "", client_host="/" + conn.client_host,
        group_instance_id=req.group_instance_id if version >= 5 else None,
        require_known_member_id=version >= 4)

    def convert(res: Any) -> Any:
        ok = res.error_code == NONE
        name = res.protocol_name
        if name is None and version < 7:
            name = ""
        return R(throttle_time_ms=0, error_code=res.error_code,
                 generation_id=res.generation_id if ok else -1,
                 protocol_type=res.protocol_type if version >= 7 else None,
                 protocol_name=name, leader=res.leader or "", member_id=res.member_id or "",
                 members=[R.JoinGroupResponseMember(member_id=mm.member_id,
                                                    group_instance_id=mm.group_instance_id,
                                                    metadata=mm.metadata) for mm in res.members])

    return st.pending_to_future(pending, convert)


def handle_sync_group(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    version = header.api_version
    R = m.SyncGroupResponse
    assignments = {}
    for a in req.assignments:
        assignments[a.member_id] = a.assignment
    pending = st.groups.sync_group(
        req.group_id, req.generation_id, req.member_id,
        group_instance_id=req.group_instance_id if version >= 3 else None,
        protocol_type=req.protocol_type if version >= 5 else None,
        protocol_name=req.protocol_name if version >= 5 else None,
        assignments=assignments)

    def convert(res: Any) -> Any:
        return R(throttle_time_ms=0, error_code=res.error_code,
                 protocol_type=res.protocol_type if version >= 5 else None,
                 protocol_name=res.protocol_name if version >= 5 else None,
                 assignment=res.assignment or b"")

    return st.pending_to_future(pending, convert)


def handle_heartbeat(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    code = st.groups.heartbeat(req.group_id, req.generation_id, req.member_id,
                               group_instance_id=req.group_instance_id if header.api_version >= 3 else None)
    st.schedule_group_tick()
    return m.HeartbeatResponse(throttle_time_ms=0, error_code=code)


def handle_leave_group(conn: Any, header: Any, req: Any) -> Any:
    from pylog.broker.group import MemberIdentity

    st = conn.server.state
    version = header.api_version
    R = m.LeaveGroupResponse
    if version >= 3:
        members = [MemberIdentity(x.member_id, x.group_instance_id) for x in req.members]
    else:
        members = [MemberIdentity(req.member_id)]
    res = st.groups.leave_group(req.group_id, members)
    st.schedule_group_tick()
    if version >= 3:
        return R(throttle_time_ms=0, error_code=res.error_code,
                 members=[R.MemberResponse(member_id=x.member_id, group_instance_id=x.group_instance_id,
                                           error_code=x.error_code) for x in res.members])
    code = res.error_code
    if code == NONE and res.members:
        code = res.members[0].error_code
    return R(throttle_time_ms=0, error_code=code)


def handle_offset_commit(conn: Any, header: Any, req: Any) -> Any:
    broker = conn.server.state.broker
    if broker.has_topic(CONSUMER_OFFSETS_TOPIC):
        # A commit appends to the group's partition of the offsets topic, which may
        # fsync then.
        part = partition_for_group(req.group_id, broker.num_partitions(CONSUMER_OFFSETS_TOPIC))
        if broker.append_may_fsync(CONSUMER_OFFSETS_TOPIC, part):
            return conn.server.call_off_loop(_offset_commit, conn, header, req)
    return _offset_commit(conn, header, req)


def _offset_commit(conn: Any, header: Any, req: Any) -> Any:
    from pylog.broker.group import CommitOffset

    st = conn.server.state
    version = header.api_version
    R = m.OffsetCommitResponse
    offsets: dict[str, dict[int, Any]] = {}
    invalid: dict[tuple[str, int], int] = {}
    for t in req.topics:
        for p in t.partitions:
            if p.committed_offset < 0:
                # Kafka stores what it is given; the core refuses negative offsets, and a
                # consumer never commits one, so it is reported as this partition's error.
                invalid[(t.name, p.partition_index)] = 1     # OFFSET_OUT_OF_RANGE
                continue
            offsets.setdefault(t.name, {})[p.partition_index] = CommitOffset(
                p.committed_offset, p.committed_metadata,
                p.committed_leader_epoch if version >= 6 else -1)
    result: dict[str, dict[int, int]] = {}
    if offsets:
        try:
            result = st.broker.commit_offsets(
                req.group_id, offsets,
                generation_id=req.generation_id_or_member_epoch if version >= 1 else -1,
                member_id=req.member_id if version >= 1 else "",
                group_instance_id=req.group_instance_id if version >= 7 else None,
                retention_time_ms=req.retention_time_ms if 2 <= version <= 4 else -1)
        except Exception as exc:  # noqa: BLE001
            code = _unexpected("offset commit", exc)
            result = {t: {p: code for p in ps} for t, ps in offsets.items()}
        st.schedule_group_tick()
    topics = []
    for t in req.topics:
        codes = result.get(t.name, {})
        topics.append(R.OffsetCommitResponseTopic(name=t.name, partitions=[
            R.OffsetCommitResponsePartition(
                partition_index=p.partition_index,
                error_code=invalid.get((t.name, p.partition_index), codes.get(p.partition_index, NONE)))
            for p in t.partitions]))
    return R(throttle_time_ms=0, topics=topics)


def _offset_fetch_group(st: Any, group_id: str, topics: Any, require_stable: bool) -> Any:
    partitions = None if topics is None else {t.name: list(t.partition_indexes) for t in topics}
    return st.groups.fetch_offsets(group_id, partitions, require_stable=require_stable)


def handle_offset_fetch(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    version = header.api_version
    R = m.OffsetFetchResponse
    if version >= 8:
        groups = []
        for g in req.groups:
            res = _offset_fetch_group(st, g.group_id, g.topics, req.require_stable)
            groups.append(R.OffsetFetchResponseGroup(
                group_id=g.group_id, error_code=res.error_code,
                topics=[R.OffsetFetchResponseTopics(name=name, partitions=[
                    R.OffsetFetchResponsePartitions(
                        partition_index=p, committed_offset=f.offset,
                        committed_leader_epoch=f.leader_epoch,
                        metadata=f.metadata if f.offset >= 0 else "", error_code=f.error_code)
                    for p, f in sorted(parts.items())]) for name, parts in res.topics.items()]))
        return R(throttle_time_ms=0, groups=groups)
    topics_req = req.topics
    if version < 2 and topics_req is None:
        topics_req = []
    res = _offset_fetch_group(st, req.group_id, topics_req, version >= 7 and req.require_stable)
    topics = [R.OffsetFetchResponseTopic(name=name, partitions=[
        R.OffsetFetchResponsePartition(
            partition_index=p, committed_offset=f.offset,
            committed_leader_epoch=f.leader_epoch if version >= 5 else -1,
            metadata=f.metadata if f.offset >= 0 else "",
            error_code=f.error_code if version >= 2 or res.error_code == NONE else res.error_code)
        for p, f in sorted(parts.items())]) for name, parts in res.topics.items()]
    return R(throttle_time_ms=0, topics=topics, error_code=res.error_code if version >= 2 else NONE)


def handle_describe_groups(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    R = m.DescribeGroupsResponse
    with_ops = header.api_version >= 3 and req.include_authorized_operations
    out = []
    for d in st.groups.describe_groups(req.groups):
        out.append(R.DescribedGroup(
            error_code=d.error_code, group_id=d.group_id, group_state=d.state,
            protocol_type=d.protocol_type, protocol_data=d.protocol_data,
            members=[R.DescribedGroupMember(
                member_id=x.member_id, group_instance_id=x.group_instance_id, client_id=x.client_id,
                client_host=x.client_host, member_metadata=x.metadata, member_assignment=x.assignment)
                for x in d.members],
            authorized_operations=_GROUP_OPS if with_ops else _NOT_REQUESTED))
    return R(throttle_time_ms=0, groups=out)


def handle_list_groups(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    R = m.ListGroupsResponse
    states = req.states_filter if header.api_version >= 4 and req.states_filter else None
    # v5 (KIP-848): clients filter by group type and read each group's type back.
    types = req.types_filter if header.api_version >= 5 and req.types_filter else None
    groups = st.groups.list_groups(states, types)
    return R(throttle_time_ms=0, error_code=NONE, groups=[
        R.ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type, group_state=g.state,
                      group_type=g.group_type)
        for g in groups])


def handle_delete_groups(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    R = m.DeleteGroupsResponse
    result = st.groups.delete_groups(req.groups_names)
    for gid, code in result.items():
        if code == NONE:
            _log.info("deleted group %s for %s", gid, conn.peer)
    return R(throttle_time_ms=0, results=[
        R.DeletableGroupResult(group_id=g, error_code=result.get(g, NONE)) for g in req.groups_names])


def handle_offset_delete(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    R = m.OffsetDeleteResponse
    partitions = {t.name: [p.partition_index for p in t.partitions] for t in req.topics}
    res = st.groups.delete_offsets(req.group_id, partitions)
    if res.error_code != NONE:
        return R(error_code=res.error_code, throttle_time_ms=0, topics=[])
    return R(error_code=NONE, throttle_time_ms=0, topics=[
        R.OffsetDeleteResponseTopic(name=t.name, partitions=[
            R.OffsetDeleteResponsePartition(
                partition_index=p.partition_index,
                error_code=res.topics.get(t.name, {}).get(p.partition_index, NONE))
            for p in t.partitions]) for t in req.topics])


# --------------------------------------------------------------------------------------
# Topics and configs
# --------------------------------------------------------------------------------------


def _config_entries_for_new_topic(st: Any, name: str, configs: dict, created: bool) -> list:
    if created:
        return st.broker.describe_configs(name)
    from pylog.broker.topic_config import TopicConfig, normalize_all

    return TopicConfig(normalize_all(configs), st.broker.config.topic_defaults).describe()


@_off_loop
def handle_create_topics(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    broker = st.broker
    version = header.api_version
    validate_only = req.validate_only if version >= 1 else False
    R = m.CreateTopicsResponse
    out = []
    names = [t.name for t in req.topics]
    answered: set[str] = set()
    for t in req.topics:
        if t.name in answered:
            continue    # a name given twice gets one answer (INVALID_REQUEST), as from Kafka
        answered.add(t.name)
        res = R.CreatableTopicResult(name=t.name, error_code=NONE, error_message=None)
        try:
            if names.count(t.name) > 1:
                raise InvalidRequestError(f"topic {t.name!r} appears more than once in the request")
            num_partitions = t.num_partitions
            replication = t.replication_factor
            if t.assignments:
                if num_partitions != -1 or replication != -1:
                    raise InvalidRequestError(
                        "give either num_partitions/replication_factor or replica assignments, not both")
                indexes = sorted(a.partition_index for a in t.assignments)
                if indexes != list(range(len(indexes))):
                    raise _code_error(INVALID_REPLICA_ASSIGNMENT,
                                      "replica assignments must cover partitions 0..n-1 once each")
                for a in t.assignments:
                    if list(a.broker_ids) != [st.node_id]:
                        raise _code_error(INVALID_REPLICA_ASSIGNMENT,
                                          f"this cluster has one broker (node {st.node_id}); "
                                          f"assignment {list(a.broker_ids)} is not possible")
                num_partitions = len(indexes)
                replication = 1
            elif num_partitions == 0 or num_partitions < -1:
                raise _code_error(37, f"number of partitions must be at least 1, got {num_partitions}")
            elif num_partitions >= _MAX_RECORDS_PER_USER_OP:
                # Kafka's controller refuses a request that would write more than 10000
                # metadata records (a topic record plus one per partition) as a policy
                # violation, before any other limit.
                raise PolicyViolationError("Excessively large number of partitions per request.")
            configs: dict[str, str | None] = {}
            for c in t.configs:
                if c.name in configs:
                    raise InvalidRequestError(f"config {c.name!r} is given twice")
                if c.value is None:
                    raise InvalidConfigError(f"config {c.name!r} has a null value")
                configs[c.name] = c.value
            d = broker.create_topic(t.name, num_partitions, replication, configs, validate_only=validate_only)
            if not validate_only:
                st.topic_changed(t.name)
                _log.info("created topic %s (%d partitions%s) for %s", t.name, d.num_partitions,
                          f", configs {configs}" if configs else "", conn.peer)
            res.num_partitions = d.num_partitions
            res.replication_factor = 1
            if version >= 5:
                res.configs = [R.CreatableTopicConfigs(
                    name=e.name, value=None if e.is_sensitive else e.value, read_only=e.read_only,
                    config_source=e.source, is_sensitive=e.is_sensitive)
                    for e in _config_entries_for_new_topic(st, t.name, configs, not validate_only)]
        except Exception as exc:  # noqa: BLE001
            res.error_code = _unexpected("create topic", exc)
            res.error_message = _msg(exc)
            res.num_partitions = -1
            res.replication_factor = -1
            res.configs = []    # as Kafka answers a topic it did not create (v5+)
        out.append(res)
    return R(throttle_time_ms=0, topics=out)


#: The most metadata records Kafka's controller writes for one request.
_MAX_RECORDS_PER_USER_OP = 10000


class _CodeError(PylogError):
    """A Kafka error code without a class in pylog.errors (topic admin validation)."""


def _code_error(code: int, message: str) -> PylogError:
    exc = _CodeError(message)
    exc.error_code = code
    return exc


@_off_loop
def handle_delete_topics(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    R = m.DeleteTopicsResponse
    out = []
    for name in req.topic_names:
        if not st.config.delete_topic_enable:
            out.append(R.DeletableTopicResult(name=name, error_code=TOPIC_DELETION_DISABLED))
            continue
        try:
            st.broker.delete_topic(name)
        except Exception as exc:  # noqa: BLE001
            out.append(R.DeletableTopicResult(name=name, error_code=_unexpected("delete topic", exc)))
            continue
        st.topic_changed(name)
        _log.info("deleted topic %s for %s", name, conn.peer)
        out.append(R.DeletableTopicResult(name=name, error_code=NONE))
    return R(throttle_time_ms=0, responses=out)


@_off_loop
def handle_create_partitions(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    R = m.CreatePartitionsResponse
    out = []
    names = [t.name for t in req.topics]
    for t in req.topics:
        try:
            if names.count(t.name) > 1:
                raise InvalidRequestError(f"topic {t.name!r} appears more than once in the request")
            if t.assignments is not None:
                for a in t.assignments:
                    if list(a.broker_ids) != [st.node_id]:
                        raise _code_error(INVALID_REPLICA_ASSIGNMENT,
                                          f"this cluster has one broker (node {st.node_id}); "
                                          f"assignment {list(a.broker_ids)} is not possible")
            st.broker.create_partitions(t.name, t.count, validate_only=req.validate_only)
        except Exception as exc:  # noqa: BLE001
            out.append(R.CreatePartitionsTopicResult(name=t.name, error_code=_unexpected("create partitions", exc),
                                                     error_message=_msg(exc)))
            continue
        if not req.validate_only:
            st.topic_changed(t.name)
            _log.info("topic %s now has %d partitions (for %s)", t.name, t.count, conn.peer)
        out.append(R.CreatePartitionsTopicResult(name=t.name, error_code=NONE, error_message=None))
    return R(throttle_time_ms=0, results=out)


@_off_loop
def handle_elect_leaders(conn: Any, header: Any, req: Any) -> Any:
    """ElectLeaders on one node: every partition has one replica, this broker, which is
    its preferred and live leader, so nothing is ever elected. As Kafka's KRaft
    controller answers: ELECTION_NOT_NEEDED for each partition named (PREFERRED or
    UNCLEAN), UNKNOWN_TOPIC_OR_PARTITION for one that does not exist; null partitions
    (every partition) leave out those whose leader is already the wanted one, so each
    topic's list is empty."""
    st = conn.server.state
    R = m.ElectLeadersResponse
    if req.election_type not in (0, 1):
        return R(throttle_time_ms=0, error_code=INVALID_REQUEST, replica_election_results=[])
    if req.topic_partitions is None:
        return R(throttle_time_ms=0, replica_election_results=[
            R.ReplicaElectionResult(topic=t, partition_result=[]) for t in st.broker.list_topics(internal=True)])
    out = []
    for t in req.topic_partitions:
        count = st.broker.num_partitions(t.topic) if st.broker.has_topic(t.topic) else 0
        out.append(R.ReplicaElectionResult(topic=t.topic, partition_result=[
            R.PartitionResult(partition_id=p, error_code=ELECTION_NOT_NEEDED if 0 <= p < count
                              else UNKNOWN_TOPIC_OR_PARTITION, error_message=None) for p in t.partitions]))
    return R(throttle_time_ms=0, replica_election_results=out)


def handle_describe_configs(conn: Any, header: Any, req: Any) -> Any:
    st = conn.server.state
    version = header.api_version
    synonyms = version >= 1 and req.include_synonyms
    docs = version >= 3 and req.include_documentation
    R = m.DescribeConfigsResponse
    results = []
    for res in req.resources:
        keys = res.configuration_keys
        try:
            if res.resource_type == RESOURCE_TOPIC:
                entries = st.broker.describe_configs(res.resource_name, keys, include_synonyms=synonyms,
                                                     include_documentation=docs)
            elif res.resource_type == RESOURCE_BROKER:
                entries = st.server.dynamic_configs.describe(res.resource_name, keys, include_synonyms=synonyms,
                                                             include_documentation=docs)
            elif res.resource_type == RESOURCE_BROKER_LOGGER:
                entries = _describe_loggers(st, res.resource_name, keys)
            else:
                raise InvalidRequestError(f"unsupported config resource type {res.resource_type}")
        except Exception as exc:  # noqa: BLE001
            results.append(R.DescribeConfigsResult(
                error_code=_unexpected("describe configs", exc), error_message=_msg(exc),
                resource_type=res.resource_type, resource_name=res.resource_name, configs=[]))
            continue
        results.append(R.DescribeConfigsResult(error_code=NONE, error_message=None,
                                               resource_type=res.resource_type, resource_name=res.resource_name,
                                               configs=describe_configs_entries(entries, version, synonyms, docs)))
    return R(throttle_time_ms=0, results=results)


def describe_configs_entries(entries: Iterable[Any], version: int, synonyms: bool, docs: bool) -> list:
    """The DescribeConfigs response entries (at ``version``) of config entries
    (:class:`~pylog.broker.topic_config.ConfigEntry` and alike)."""
    R = m.DescribeConfigsResponse
    return [R.DescribeConfigsResourceResult(
        name=e.name, value=None if e.is_sensitive else e.value, read_only=e.read_only,
        is_default=e.is_default if version == 0 else False, config_source=e.source, is_sensitive=e.is_sensitive,
        synonyms=[R.DescribeConfigsSynonym(name=sn, value=sv, source=ss)
                  for sn, sv, ss in e.synonyms] if synonyms else [],
        config_type=e.type if version >= 3 else 0,
        documentation=(e.documentation or None) if docs else None) for e in entries]


class _LoggerEntry:
    __slots__ = ("name", "value", "read_only", "source", "is_sensitive", "synonyms", "type",
                 "documentation", "is_default")

    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value
        self.read_only = False
        self.source = 0          # UNKNOWN: Kafka reports broker loggers so
        self.is_default = False
        self.is_sensitive = False
        self.synonyms = ()
        self.type = 2            # STRING
        self.documentation = None


def _describe_loggers(st: Any, name: str, keys: Iterable[str] | None) -> list:
    if name != str(st.node_id):
        raise InvalidRequestError(f"broker {name!r} is not this broker (node {st.node_id})")
    names = sorted(n for n in logging.root.manager.loggerDict if n == "pylog" or n.startswith("pylog."))
    if keys is not None:
        names = [n for n in names if n in set(keys)]
    return [_LoggerEntry(n, logging.getLevelName(logging.getLogger(n).getEffectiveLevel()))
            for n in names]


def _alter_logger(st: Any, name: str, ops: list[tuple[str, int, str | None]], validate_only: bool) -> None:
    if name != str(st.node_id):
        raise InvalidRequestError(f"broker {name!r} is not this broker (node {st.node_id})")
    levels = {}
    for logger, op, value in ops:
        if not (logger == "pylog" or logger.startswith("pylog.")):
            raise _code_error(40, f"unknown logger {logger!r}")
        if op == 0:
            level = logging.getLevelName((value or "").upper())
            if not isinstance(level, int):
                raise _code_error(40, f"unknown log level {value!r}")
            levels[logger] = level
        elif op == 1:
            levels[logger] = logging.NOTSET
        else:
            raise _code_error(40, "loggers support SET and DELETE only")
    if not validate_only:
        for logger, level in levels.items():
            logging.getLogger(logger).setLevel(level)


def _alter_configs(conn: Any, req: Any, resources_ops: list, response_cls: Any, incremental: bool) -> Any:
    st = conn.server.state
    R = response_cls
    out = []
    for rtype, rname, ops in resources_ops:
        try:
            if rtype == RESOURCE_TOPIC:
                if incremental:
                    st.broker.incremental_alter_configs(rname, ops, validate_only=req.validate_only)
                else:
                    st.broker.alter_configs(rname, {n: v for n, _op, v in ops}, validate_only=req.validate_only)
            elif rtype == RESOURCE_BROKER:
                _alter_broker(st, rname, ops, incremental, req.validate_only)
            elif rtype == RESOURCE_BROKER_LOGGER:
                _alter_logger(st, rname, ops, req.validate_only)
            else:
                raise InvalidRequestError(f"unsupported config resource type {rtype}")
        except Exception as exc:  # noqa: BLE001
            out.append(R.AlterConfigsResourceResponse(
                error_code=_unexpected("alter configs", exc), error_message=_msg(exc),
                resource_type=rtype, resource_name=rname))
            continue
        if not req.validate_only:
            _log.info("altered configs of %s %s for %s: %s",
                      {2: "topic", 4: "broker", 8: "broker-logger"}.get(rtype, rtype), rname, conn.peer,
                      ", ".join(f"{n}{'=' + v if v is not None else ''} ({_OPS.get(op, op)})"
                                for n, op, v in ops) or "(all dynamic configs removed)")
        out.append(R.AlterConfigsResourceResponse(error_code=NONE, error_message=None,
                                                  resource_type=rtype, resource_name=rname))
    return R(throttle_time_ms=0, responses=out)


_OPS = {0: "SET", 1: "DELETE", 2: "APPEND", 3: "SUBTRACT"}


def _alter_broker(st: Any, name: str, ops: list[tuple[str, int, str | None]], incremental: bool,
                  validate_only: bool) -> None:
    """Dynamic broker configs (see :mod:`pylog.server.dynamic_config`): persisted, then
    applied to the broker core (topic defaults, cleaner) and the server (the connection
    caps: max.connections, max.connections.per.ip and its overrides)."""
    broker = st.broker
    from pylog.server.server import resolve_connection_overrides

    def check(effective: Any, trial: Any) -> None:
        values, sources = trial.topic_defaults()
        broker.set_topic_defaults(values, sources, validate_only=True)

    def apply(effective: Any, dynamic: Any) -> None:
        values, sources = dynamic.topic_defaults()
        broker.set_topic_defaults(values, sources)
        broker.reconfigure_cleaner(backoff_ms=effective.log_cleaner_backoff_ms,
                                   dedupe_buffer_size=effective.log_cleaner_dedupe_buffer_size)
        overrides = None
        if effective.max_connections_per_ip_overrides != st.server.config.max_connections_per_ip_overrides:
            # Host names resolve here, off the loop (Kafka resolves them when the config changes).
            overrides = resolve_connection_overrides(effective.max_connections_per_ip_overrides)
        st.server.config = st.config = effective
        st.server.call_in_loop(st.server.connection_limits_changed, overrides)   # this runs off the loop

    st.server.dynamic_configs.alter(name, ops, incremental=incremental, validate_only=validate_only,
                                    apply=apply, check=check)


@_off_loop
def handle_alter_configs(conn: Any, header: Any, req: Any) -> Any:
    # AlterConfigs replaces a resource's whole set of dynamic configs with the given one.
    resources = [(r.resource_type, r.resource_name, [(c.name, 0, c.value) for c in r.configs])
                 for r in req.resources]
    return _alter_configs(conn, req, resources, m.AlterConfigsResponse, incremental=False)


@_off_loop
def handle_incremental_alter_configs(conn: Any, header: Any, req: Any) -> Any:
    resources = [(r.resource_type, r.resource_name,
                  [(c.name, c.config_operation, c.value) for c in r.configs]) for r in req.resources]
    return _alter_configs(conn, req, resources, m.IncrementalAlterConfigsResponse, incremental=True)


# --------------------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------------------

_PRODUCER_FENCED = 90
_INVALID_PRODUCER_EPOCH = 47


def _fenced_code(code: int, knows_fenced: bool) -> int:
    """PRODUCER_FENCED as the request version knows it: versions before it existed get
    INVALID_PRODUCER_EPOCH, as Kafka answers them."""
    return _INVALID_PRODUCER_EPOCH if code == _PRODUCER_FENCED and not knows_fenced else code


def _txn_topic_results(R: Any, codes: dict, knows_fenced: bool) -> list:
    by_topic: dict[str, list] = {}
    for (topic, p), code in codes.items():
        by_topic.setdefault(topic, []).append(R.AddPartitionsToTxnPartitionResult(
            partition_index=p, partition_error_code=_fenced_code(code, knows_fenced)))
    return [R.AddPartitionsToTxnTopicResult(name=t, results_by_partition=ps) for t, ps in by_topic.items()]


@_off_loop
def handle_add_partitions_to_txn(conn: Any, header: Any, req: Any) -> Any:
    """AddPartitionsToTxn: v0-v3 from producers (one transaction); v4+ batched, from
    brokers, with ``verify_only`` (KIP-890)."""
    broker = conn.server.state.broker
    version = header.api_version
    R = m.AddPartitionsToTxnResponse
    if version <= 3:
        parts = [(t.name, p) for t in req.v3_and_below_topics for p in t.partitions]
        codes = broker.add_partitions_to_txn(req.v3_and_below_transactional_id, req.v3_and_below_producer_id,
                                             req.v3_and_below_producer_epoch, parts)
        return R(throttle_time_ms=0, results_by_topic_v3_and_below=_txn_topic_results(R, codes, version >= 2))
    results = []
    for txn in req.transactions:
        parts = [(t.name, p) for t in txn.topics for p in t.partitions]
        codes = broker.add_partitions_to_txn(txn.transactional_id, txn.producer_id, txn.producer_epoch, parts,
                                             verify_only=txn.verify_only)
        results.append(R.AddPartitionsToTxnResult(transactional_id=txn.transactional_id,
                                                  topic_results=_txn_topic_results(R, codes, True)))
    return R(throttle_time_ms=0, error_code=NONE, results_by_transaction=results)


@_off_loop
def handle_add_offsets_to_txn(conn: Any, header: Any, req: Any) -> Any:
    code = conn.server.state.broker.add_offsets_to_txn(req.transactional_id, req.producer_id, req.producer_epoch,
                                                       req.group_id)
    return m.AddOffsetsToTxnResponse(throttle_time_ms=0, error_code=_fenced_code(code, header.api_version >= 2))


@_off_loop
def handle_end_txn(conn: Any, header: Any, req: Any) -> Any:
    code = conn.server.state.broker.end_txn(req.transactional_id, req.producer_id, req.producer_epoch,
                                            req.committed)
    if code:
        _log.info("EndTxn of %s from %s: error %d", req.transactional_id, conn.peer, code)
    return m.EndTxnResponse(throttle_time_ms=0, error_code=_fenced_code(code, header.api_version >= 2))


@_off_loop
def handle_txn_offset_commit(conn: Any, header: Any, req: Any) -> Any:
    from pylog.broker.group import CommitOffset

    st = conn.server.state
    version = header.api_version
    R = m.TxnOffsetCommitResponse
    offsets: dict[str, dict[int, Any]] = {}
    invalid: dict[tuple[str, int], int] = {}
    for t in req.topics:
        for p in t.partitions:
            if p.committed_offset < 0:
                invalid[(t.name, p.partition_index)] = 1     # OFFSET_OUT_OF_RANGE, as OffsetCommit
                continue
            offsets.setdefault(t.name, {})[p.partition_index] = CommitOffset(
                p.committed_offset, p.committed_metadata, p.committed_leader_epoch if version >= 2 else -1)
    result: dict[str, dict[int, int]] = {}
    if offsets:
        try:
            result = st.broker.txn_offset_commit(
                req.transactional_id, req.group_id, req.producer_id, req.producer_epoch, offsets,
                member_id=req.member_id if version >= 3 else None,
                generation_id=req.generation_id if version >= 3 else -1,
                group_instance_id=req.group_instance_id if version >= 3 else None)
        except Exception as exc:  # noqa: BLE001
            code = _unexpected("transactional offset commit", exc)
            result = {t: {p: code for p in ps} for t, ps in offsets.items()}
    # TxnOffsetCommit has no PRODUCER_FENCED: a fenced producer gets INVALID_PRODUCER_EPOCH.
    return R(throttle_time_ms=0, topics=[R.TxnOffsetCommitResponseTopic(name=t.name, partitions=[
        R.TxnOffsetCommitResponsePartition(
            partition_index=p.partition_index,
            error_code=_fenced_code(invalid.get((t.name, p.partition_index),
                                                result.get(t.name, {}).get(p.partition_index, NONE)), False))
        for p in t.partitions]) for t in req.topics])


@_off_loop
def handle_write_txn_markers(conn: Any, header: Any, req: Any) -> Any:
    """WriteTxnMarkers: a transaction coordinator (another broker, once a cluster
    exists) has this partition leader end a transaction."""
    broker = conn.server.state.broker
    R = m.WriteTxnMarkersResponse
    out = []
    for mk in req.markers:
        parts = [(t.name, p) for t in mk.topics for p in t.partition_indexes]
        failed = broker.write_txn_markers_and_complete(
            [(mk.producer_id, mk.producer_epoch, mk.coordinator_epoch, mk.transaction_result, parts)])
        out.append(R.WritableTxnMarkerResult(producer_id=mk.producer_id, topics=[
            R.WritableTxnMarkerTopicResult(name=t.name, partitions=[
                R.WritableTxnMarkerPartitionResult(partition_index=p, error_code=failed.get((t.name, p), NONE))
                for p in t.partition_indexes]) for t in mk.topics]))
    return R(markers=out)


def handle_describe_transactions(conn: Any, header: Any, req: Any) -> Any:
    R = m.DescribeTransactionsResponse
    states = []
    for d in conn.server.state.broker.describe_transactions(req.transactional_ids):
        states.append(R.TransactionState(
            error_code=d.error_code, transactional_id=d.transactional_id, transaction_state=d.state,
            transaction_timeout_ms=d.timeout_ms, transaction_start_time_ms=d.start_time_ms,
            producer_id=d.producer_id, producer_epoch=d.producer_epoch,
            topics=[R.TopicData(topic=t, partitions=ps) for t, ps in d.topics.items()]))
    return R(throttle_time_ms=0, transaction_states=states)


def handle_list_transactions(conn: Any, header: Any, req: Any) -> Any:
    R = m.ListTransactionsResponse
    res = conn.server.state.broker.list_transactions(
        req.state_filters, req.producer_id_filters,
        duration_filter_ms=req.duration_filter if header.api_version >= 1 else -1)
    return R(throttle_time_ms=0, error_code=res.error_code, unknown_state_filters=res.unknown_state_filters,
             transaction_states=[R.TransactionState(transactional_id=t.transactional_id, producer_id=t.producer_id,
                                                    transaction_state=t.state) for t in res.transactions])


def handle_describe_producers(conn: Any, header: Any, req: Any) -> Any:
    broker = conn.server.state.broker
    R = m.DescribeProducersResponse
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partition_indexes:
            try:
                producers = broker.describe_producers(t.name, p)
            except PylogError as exc:
                parts.append(R.PartitionResponse(partition_index=p, error_code=_err(exc), error_message=_msg(exc),
                                                 active_producers=[]))
                continue
            parts.append(R.PartitionResponse(partition_index=p, error_code=NONE, error_message=None, active_producers=[
                R.ProducerState(producer_id=x.producer_id, producer_epoch=x.producer_epoch,
                                last_sequence=x.last_sequence, last_timestamp=x.last_timestamp,
                                coordinator_epoch=x.coordinator_epoch,
                                current_txn_start_offset=x.current_txn_start_offset) for x in producers]))
        topics.append(R.TopicResponse(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------

#: API key -> (min version, max version, handler): what pylog serve answers and advertises.
_TABLE: dict[int, tuple[int, int, Callable]] = {
    ApiKey.PRODUCE: (3, 9, handle_produce),
    ApiKey.FETCH: (4, 12, handle_fetch),
    ApiKey.LIST_OFFSETS: (0, 7, handle_list_offsets),
    ApiKey.METADATA: (0, 12, handle_metadata),
    ApiKey.OFFSET_COMMIT: (0, 8, handle_offset_commit),
    ApiKey.OFFSET_FETCH: (0, 8, handle_offset_fetch),
    ApiKey.FIND_COORDINATOR: (0, 4, handle_find_coordinator),
    ApiKey.JOIN_GROUP: (0, 7, handle_join_group),
    ApiKey.HEARTBEAT: (0, 4, handle_heartbeat),
    ApiKey.LEAVE_GROUP: (0, 4, handle_leave_group),
    ApiKey.SYNC_GROUP: (0, 5, handle_sync_group),
    ApiKey.DESCRIBE_GROUPS: (0, 5, handle_describe_groups),
    ApiKey.LIST_GROUPS: (0, 5, handle_list_groups),
    ApiKey.API_VERSIONS: (0, 3, handle_api_versions),
    ApiKey.CREATE_TOPICS: (0, 5, handle_create_topics),
    ApiKey.DELETE_TOPICS: (0, 4, handle_delete_topics),
    ApiKey.DELETE_RECORDS: (0, 2, handle_delete_records),
    ApiKey.INIT_PRODUCER_ID: (0, 5, handle_init_producer_id),
    ApiKey.ADD_PARTITIONS_TO_TXN: (0, 5, handle_add_partitions_to_txn),
    ApiKey.ADD_OFFSETS_TO_TXN: (0, 4, handle_add_offsets_to_txn),
    ApiKey.END_TXN: (0, 4, handle_end_txn),
    ApiKey.WRITE_TXN_MARKERS: (0, 1, handle_write_txn_markers),
    ApiKey.TXN_OFFSET_COMMIT: (0, 4, handle_txn_offset_commit),
    ApiKey.DESCRIBE_PRODUCERS: (0, 0, handle_describe_producers),
    ApiKey.DESCRIBE_TRANSACTIONS: (0, 0, handle_describe_transactions),
    ApiKey.LIST_TRANSACTIONS: (0, 1, handle_list_transactions),
    ApiKey.OFFSET_FOR_LEADER_EPOCH: (0, 3, handle_offset_for_leader_epoch),
    ApiKey.DESCRIBE_CONFIGS: (0, 4, handle_describe_configs),
    ApiKey.ALTER_CONFIGS: (0, 1, handle_alter_configs),
    ApiKey.DESCRIBE_LOG_DIRS: (0, 4, _off_loop(describe_log_dirs)),
    ApiKey.CREATE_PARTITIONS: (0, 2, handle_create_partitions),
    ApiKey.ELECT_LEADERS: (0, 2, handle_elect_leaders),
    ApiKey.DELETE_GROUPS: (0, 2, handle_delete_groups),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (0, 1, handle_incremental_alter_configs),
    ApiKey.OFFSET_DELETE: (0, 0, handle_offset_delete),
    ApiKey.DESCRIBE_CLUSTER: (0, 0, handle_describe_cluster),
}

#: API key -> (min, max) advertised in ApiVersions.
SERVED_VERSIONS: dict[int, tuple[int, int]] = {int(k): (lo, hi) for k, (lo, hi, _) in _TABLE.items()}


def handler_table() -> dict[int, tuple[int, int, Callable, str]]:
    """API key -> (min version, max version, handler, Kafka's API name)."""
    from pylog.protocol.apis import api_name, supported_versions

    codec = supported_versions()
    out = {}
    for key, (lo, hi, fn) in _TABLE.items():
        c = codec.get(int(key))
        if c is None or c[0] > lo or c[1] < hi:
            raise RuntimeError(f"pylog.server: the protocol codec does not speak {api_name(key)} "
                               f"v{lo}-v{hi} (it speaks {c}); the handler table and the codec disagree")
        out[int(key)] = (lo, hi, fn, api_name(key))
    return out


