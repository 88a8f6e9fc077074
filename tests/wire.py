"""A blocking Kafka-protocol tool for the tests: exact API versions, raw request bodies.

Tests that check what ``pylog serve`` answers to one request at one version need a
client that does nothing on its own: no retries, no metadata refresh, no reconnect.
This module is that tool, built on the product's own network layer:

:class:`BrokerConnection`
    One TCP connection to one broker: pylog's client connection
    (:class:`pylog.client.kafka.connection.BrokerConnection`: framing, ApiVersions
    negotiation, pipelining, correlation ids, decoding) driven in the caller's thread
    with a selector of its own, so every call blocks until its answer.  A connection
    the broker closed stays closed (later calls raise
    :class:`~pylog.errors.NetworkError`): a test sees exactly what the server did.
:class:`WireClient`
    Bootstrap, metadata, per-node connections, the coordinator, and admin and data
    helpers that raise :class:`~pylog.errors.PylogError` subclasses for error codes.
:class:`GroupMember`
    A consumer-group member (JoinGroup/SyncGroup/Heartbeat/OffsetCommit/LeaveGroup).

Tests that need malformed frames use raw sockets (``server.util``); the product's
tools and benches use ``pylog.connect``.  Not thread-safe: one client per thread.
"""

from __future__ import annotations

import selectors
import time
from concurrent.futures import Future
from typing import Any, Iterable, Mapping

from pylog.client.kafka.cluster import parse_bootstrap_servers
from pylog.client.kafka.connection import BrokerConnection as _Connection
from pylog.client.kafka.connection import ConnectionState, make_request
from pylog.errors import NetworkError, PylogError, RequestTimedOutError, error_for_code
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey

__all__ = ["BrokerConnection", "WireClient", "GroupMember", "produce_on", "fetch_on", "commit_on",
           "raise_for_code"]

#: Largest response accepted (a Fetch can be large; the server bounds it by max_bytes).
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
#: Requests written and unanswered on one connection, at most (tests pipeline a few).
MAX_IN_FLIGHT = 64
#: The deadline of a request sent with send_request: receive() sets the real wait.
_NO_DEADLINE_MS = 3600 * 1000


def raise_for_code(code: int, message: str | None = None, what: str = "") -> None:
    """Raise the pylog error for Kafka error ``code`` (nothing for 0)."""
    if code:
        exc = error_for_code(code, message)
        if what:
            exc = type(exc)(f"{what}: {exc}")
        raise exc


class BrokerConnection:
    """One blocking connection to a broker (see the module docstring).

    Parameters
    ----------
    host, port
    client_id : str
    timeout : float
        Seconds for connecting and for each response.
    """

    def __init__(self, host: str, port: int, *, client_id: str = "pylog", timeout: float = 30.0) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.timeout = timeout
        self._selector = selectors.DefaultSelector()
        self._conn = _Connection(0, host, port, self._selector, client_id=client_id,
                                 max_in_flight=MAX_IN_FLIGHT, max_response_size=MAX_RESPONSE_BYTES,
                                 connection_setup_timeout_ms=max(1, int(timeout * 1000)),
                                 client_software_name="pylog-tests")
        try:
            self._conn.connect(time.monotonic())
            self._drive(lambda: self._conn.state not in (ConnectionState.CONNECTING,
                                                         ConnectionState.NEGOTIATING),
                        time.monotonic() + timeout + 1)
            if not self._conn.is_ready():
                raise NetworkError(f"cannot connect to {host}:{port}: {self._conn.last_error}")
        except BaseException:
            self.close()        # no one else holds the connection: do not leak it
            raise

    @property
    def versions(self) -> dict[int, tuple[int, int]]:
        """api_key -> (min, max) both pylog and the broker speak."""
        return self._conn.api_versions

    def version(self, api_key: int, want: int | None = None) -> int:
        r = self._conn.api_versions.get(api_key)
        if r is None:
            raise error_for_code(35, f"{self.host}:{self.port} does not serve API {int(api_key)}")
        if want is None:
            return r[1]
        if not r[0] <= want <= r[1]:
            raise error_for_code(35, f"API {int(api_key)} v{want} is not served (v{r[0]}-v{r[1]})")
        return want

    # -- the driver ----------------------------------------------------------------

    def _drive(self, done: Any, deadline: float) -> None:
        """Run the connection's socket events in this thread until ``done()`` or the deadline."""
        conn = self._conn
        while not done():
            now = time.monotonic()
            conn.check_timeouts(now)
            if done() or now >= deadline or conn.sock is None:
                return
            wait = max(0.0, min(deadline, conn.earliest_deadline()) - now)
            for key, mask in self._selector.select(wait):
                now = time.monotonic()
                if mask & selectors.EVENT_WRITE:
                    conn.on_writable(now)
                if mask & selectors.EVENT_READ and conn.sock is not None:
                    conn.on_readable(now)

    def _submit(self, api_key: int, body: Any, version: int | None, timeout_ms: float,
                expect_response: bool = True) -> Future:
        if not self._conn.is_ready():
            raise NetworkError(f"the connection to {self.host}:{self.port} is closed: {self._conn.last_error}")
        v = self.version(api_key, version)
        req = make_request(api_key, body, version=v, timeout_ms=timeout_ms, expect_response=expect_response)
        self._conn.enqueue(req, time.monotonic())
        return req.future

    def _wait(self, fut: Future, timeout: float) -> Any:
        self._drive(fut.done, time.monotonic() + timeout)
        if not fut.done():
            raise RequestTimedOutError(f"no response from {self.host}:{self.port} within {timeout} s")
        return fut.result()

    # -- requests ------------------------------------------------------------------

    def request(self, api_key: int, body: Any, version: int | None = None) -> Any:
        """Send a request and return the decoded response body."""
        return self.request_with_timeout(api_key, body, self.timeout, version)

    def request_with_timeout(self, api_key: int, body: Any, timeout: float, version: int | None = None) -> Any:
        """As :meth:`request`, waiting up to ``timeout`` seconds (long polls, joins)."""
        return self._wait(self._submit(api_key, body, version, timeout * 1000), timeout + 1)

    def send(self, api_key: int, body: Any, version: int | None = None) -> None:
        """Send a request that gets no response (Produce with acks=0); returns once written."""
        self._wait(self._submit(api_key, body, version, self.timeout * 1000, expect_response=False),
                   self.timeout + 1)

    def send_request(self, api_key: int, body: Any, version: int | None = None) -> Future:
        """Send a request without waiting: pass the result to :meth:`receive`.  Responses
        arrive in request order (pipelining)."""
        fut = self._submit(api_key, body, version, _NO_DEADLINE_MS)
        # Written before returning (a test parks a long poll, then acts elsewhere).
        self._drive(lambda: fut.done() or not self._conn._wbuf, time.monotonic() + self.timeout)
        return fut

    def receive(self, pending: Future, timeout: float | None = None) -> Any:
        """The response to a request sent with :meth:`send_request`."""
        return self._wait(pending, self.timeout if timeout is None else timeout)

    def close(self) -> None:
        self._conn.close(NetworkError(f"the connection to {self.host}:{self.port} was closed by the test"),
                         final=True)
        self._selector.close()

    def __enter__(self) -> BrokerConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WireClient:
    """Bootstrap, metadata and admin helpers over :class:`BrokerConnection` s."""

    def __init__(self, bootstrap_servers: str, *, client_id: str = "pylog", timeout: float = 30.0) -> None:
        self.client_id = client_id
        self.timeout = timeout
        self._conns: dict[tuple[str, int], BrokerConnection] = {}
        last: Exception | None = None
        self.bootstrap: BrokerConnection | None = None
        for host, port in parse_bootstrap_servers(bootstrap_servers):
            try:
                self.bootstrap = self.connect(host, port)
                break
            except NetworkError as exc:
                last = exc
        if self.bootstrap is None:
            raise NetworkError(f"no bootstrap server reachable ({bootstrap_servers}): {last}")
        self._brokers: dict[int, tuple[str, int]] = {}

    # -- connections ---------------------------------------------------------------

    def connect(self, host: str, port: int) -> BrokerConnection:
        key = (host, port)
        conn = self._conns.get(key)
        if conn is None:
            conn = BrokerConnection(host, port, client_id=self.client_id, timeout=self.timeout)
            self._conns[key] = conn
        return conn

    def node(self, node_id: int) -> BrokerConnection:
        if node_id not in self._brokers:
            self.metadata([])
        addr = self._brokers.get(node_id)
        if addr is None:
            raise NetworkError(f"broker {node_id} is not in the cluster metadata")
        return self.connect(*addr)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- metadata ------------------------------------------------------------------

    def metadata(self, topics: Iterable[str] | None = None, *, allow_auto_create: bool = False) -> Any:
        """Metadata of ``topics`` (None: every topic)."""
        body = m.MetadataRequest(
            topics=None if topics is None else [m.MetadataRequest.MetadataRequestTopic(name=t) for t in topics],
            allow_auto_topic_creation=allow_auto_create)
        resp = self.bootstrap.request(ApiKey.METADATA, body)
        self._brokers = {b.node_id: (b.host, b.port) for b in resp.brokers}
        return resp

    def partitions(self, topic: str) -> dict[int, int]:
        """partition -> leader node id of ``topic``; raises for an unknown topic."""
        resp = self.metadata([topic])
        for t in resp.topics:
            if t.name == topic:
                raise_for_code(t.error_code, what=f"topic {topic}")
                return {p.partition_index: p.leader_id for p in t.partitions}
        raise error_for_code(3, f"topic {topic} is not in the metadata response")

    def leader(self, topic: str, partition: int) -> BrokerConnection:
        leaders = self.partitions(topic)
        if partition not in leaders:
            raise error_for_code(3, f"{topic} has no partition {partition}")
        return self.node(leaders[partition])

    def coordinator(self, group_id: str) -> BrokerConnection:
        conn = self.bootstrap
        v = conn.version(ApiKey.FIND_COORDINATOR)
        if v >= 4:
            resp = conn.request(ApiKey.FIND_COORDINATOR, m.FindCoordinatorRequest(
                key_type=0, coordinator_keys=[group_id]))
            c = resp.coordinators[0]
            raise_for_code(c.error_code, c.error_message, f"FindCoordinator({group_id})")
            return self.connect(c.host, c.port)
        resp = conn.request(ApiKey.FIND_COORDINATOR, m.FindCoordinatorRequest(key=group_id, key_type=0))
        raise_for_code(resp.error_code, resp.error_message, f"FindCoordinator({group_id})")
        return self.connect(resp.host, resp.port)

    # -- topics --------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = -1, replication_factor: int = -1,
                     configs: Mapping[str, str] | None = None, *, validate_only: bool = False) -> Any:
        T = m.CreateTopicsRequest
        body = m.CreateTopicsRequest(topics=[T.CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=replication_factor,
            configs=[T.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()])],
            timeout_ms=int(self.timeout * 1000), validate_only=validate_only)
        resp = self.bootstrap.request(ApiKey.CREATE_TOPICS, body)
        r = resp.topics[0]
        raise_for_code(r.error_code, r.error_message, f"create topic {name}")
        return r

    def delete_topic(self, name: str) -> None:
        resp = self.bootstrap.request(ApiKey.DELETE_TOPICS, m.DeleteTopicsRequest(
            topic_names=[name], timeout_ms=int(self.timeout * 1000)))
        r = resp.responses[0]
        raise_for_code(r.error_code, None, f"delete topic {name}")

    def create_partitions(self, name: str, count: int) -> None:
        body = m.CreatePartitionsRequest(
            topics=[m.CreatePartitionsRequest.CreatePartitionsTopic(name=name, count=count, assignments=None)],
            timeout_ms=int(self.timeout * 1000), validate_only=False)
        r = self.bootstrap.request(ApiKey.CREATE_PARTITIONS, body).results[0]
        raise_for_code(r.error_code, r.error_message, f"create partitions of {name}")

    def describe_configs(self, resource_type: int, name: str, keys: list[str] | None = None,
                         *, documentation: bool = False) -> list:
        body = m.DescribeConfigsRequest(resources=[m.DescribeConfigsRequest.DescribeConfigsResource(
            resource_type=resource_type, resource_name=name, configuration_keys=keys)],
            include_synonyms=False, include_documentation=documentation)
        r = self.bootstrap.request(ApiKey.DESCRIBE_CONFIGS, body).results[0]
        raise_for_code(r.error_code, r.error_message, f"describe configs of {name}")
        return r.configs

    def incremental_alter_configs(self, resource_type: int, name: str,
                                  ops: list[tuple[str, int, str | None]]) -> None:
        R = m.IncrementalAlterConfigsRequest
        body = m.IncrementalAlterConfigsRequest(resources=[R.AlterConfigsResource(
            resource_type=resource_type, resource_name=name,
            configs=[R.AlterableConfig(name=n, config_operation=op, value=v) for n, op, v in ops])],
            validate_only=False)
        r = self.bootstrap.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, body).responses[0]
        raise_for_code(r.error_code, r.error_message, f"alter configs of {name}")

    # -- data ----------------------------------------------------------------------

    def list_offset(self, topic: str, partition: int, timestamp: int) -> tuple[int, int]:
        """(offset, timestamp) for ListOffsets ``timestamp`` (-1 latest, -2 earliest)."""
        conn = self.leader(topic, partition)
        P = m.ListOffsetsRequest.ListOffsetsPartition
        body = m.ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[
            m.ListOffsetsRequest.ListOffsetsTopic(name=topic, partitions=[
                P(partition_index=partition, timestamp=timestamp)])])
        v = conn.version(ApiKey.LIST_OFFSETS)
        p = conn.request(ApiKey.LIST_OFFSETS, body, max(v, 1) if v >= 1 else v).topics[0].partitions[0]
        raise_for_code(p.error_code, None, f"list offsets of {topic}-{partition}")
        return p.offset, p.timestamp

    def produce(self, topic: str, partition: int, records: bytes, *, acks: int = -1,
                timeout_ms: int = 30000) -> Any:
        """Send one partition's record batches; returns the partition response (None for
        acks=0)."""
        conn = self.leader(topic, partition)
        return produce_on(conn, topic, partition, records, acks=acks, timeout_ms=timeout_ms)

    def fetch(self, topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20,
              max_wait_ms: int = 500, min_bytes: int = 1) -> Any:
        conn = self.leader(topic, partition)
        return fetch_on(conn, [(topic, partition, offset)], max_bytes=max_bytes,
                        max_wait_ms=max_wait_ms, min_bytes=min_bytes)[(topic, partition)]

    def delete_records(self, topic: str, partition: int, before: int) -> int:
        conn = self.leader(topic, partition)
        body = m.DeleteRecordsRequest(topics=[m.DeleteRecordsRequest.DeleteRecordsTopic(
            name=topic, partitions=[m.DeleteRecordsRequest.DeleteRecordsPartition(
                partition_index=partition, offset=before)])], timeout_ms=int(self.timeout * 1000))
        p = conn.request(ApiKey.DELETE_RECORDS, body).topics[0].partitions[0]
        raise_for_code(p.error_code, None, f"delete records of {topic}-{partition}")
        return p.low_watermark

    # -- groups --------------------------------------------------------------------

    def list_groups(self) -> list:
        resp = self.bootstrap.request(ApiKey.LIST_GROUPS, m.ListGroupsRequest(states_filter=[]))
        raise_for_code(resp.error_code, None, "ListGroups")
        return resp.groups

    def describe_group(self, group_id: str) -> Any:
        conn = self.coordinator(group_id)
        g = conn.request(ApiKey.DESCRIBE_GROUPS, m.DescribeGroupsRequest(groups=[group_id])).groups[0]
        raise_for_code(g.error_code, None, f"describe group {group_id}")
        return g

    def committed(self, group_id: str, partitions: Mapping[str, Iterable[int]] | None = None
                  ) -> dict[tuple[str, int], int]:
        """(topic, partition) -> committed offset (-1: none)."""
        conn = self.coordinator(group_id)
        v = conn.version(ApiKey.OFFSET_FETCH)
        if v >= 8:
            G = m.OffsetFetchRequest
            topics = None if partitions is None else [
                G.OffsetFetchRequestTopics(name=t, partition_indexes=list(ps)) for t, ps in partitions.items()]
            resp = conn.request(ApiKey.OFFSET_FETCH, m.OffsetFetchRequest(
                groups=[G.OffsetFetchRequestGroup(group_id=group_id, topics=topics)]))
            g = resp.groups[0]
            raise_for_code(g.error_code, None, f"fetch offsets of {group_id}")
            return {(t.name, p.partition_index): p.committed_offset for t in g.topics for p in t.partitions}
        T = m.OffsetFetchRequest
        topics = None if partitions is None else [
            T.OffsetFetchRequestTopic(name=t, partition_indexes=list(ps)) for t, ps in partitions.items()]
        resp = conn.request(ApiKey.OFFSET_FETCH, m.OffsetFetchRequest(group_id=group_id, topics=topics))
        raise_for_code(resp.error_code, None, f"fetch offsets of {group_id}")
        return {(t.name, p.partition_index): p.committed_offset for t in resp.topics for p in t.partitions}

    def commit(self, group_id: str, offsets: Mapping[tuple[str, int], int], *, generation_id: int = -1,
               member_id: str = "", metadata: str = "") -> None:
        conn = self.coordinator(group_id)
        commit_on(conn, group_id, offsets, generation_id=generation_id, member_id=member_id,
                  metadata=metadata)

    def delete_group(self, group_id: str) -> None:
        conn = self.coordinator(group_id)
        r = conn.request(ApiKey.DELETE_GROUPS, m.DeleteGroupsRequest(groups_names=[group_id])).results[0]
        raise_for_code(r.error_code, None, f"delete group {group_id}")


def produce_on(conn: BrokerConnection, topic: str, partition: int, records: bytes, *, acks: int = -1,
               timeout_ms: int = 30000) -> Any:
    T = m.ProduceRequest
    body = m.ProduceRequest(transactional_id=None, acks=acks, timeout_ms=timeout_ms, topic_data=[
        T.TopicProduceData(name=topic, partition_data=[T.PartitionProduceData(index=partition, records=records)])])
    if acks == 0:
        conn.send(ApiKey.PRODUCE, body)
        return None
    p = conn.request(ApiKey.PRODUCE, body).responses[0].partition_responses[0]
    raise_for_code(p.error_code, p.error_message, f"produce to {topic}-{partition}")
    return p


def fetch_on(conn: BrokerConnection, wanted: Iterable[tuple[str, int, int]], *, max_bytes: int = 1 << 20,
             max_wait_ms: int = 500, min_bytes: int = 1, partition_max_bytes: int | None = None,
             isolation_level: int = 0) -> dict[tuple[str, int], Any]:
    """Fetch ``(topic, partition, offset)`` triples; returns (topic, partition) -> the
    partition data (``records`` as bytes)."""
    FT = m.FetchRequest
    by_topic: dict[str, list] = {}
    for topic, partition, offset in wanted:
        by_topic.setdefault(topic, []).append(FT.FetchPartition(
            partition=partition, fetch_offset=offset,
            partition_max_bytes=partition_max_bytes or max_bytes))
    body = m.FetchRequest(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
                          isolation_level=isolation_level, session_id=0, session_epoch=-1,
                          topics=[FT.FetchTopic(topic=t, partitions=ps) for t, ps in by_topic.items()])
    resp = conn.request_with_timeout(ApiKey.FETCH, body, timeout=conn.timeout + max_wait_ms / 1000)
    raise_for_code(resp.error_code, None, "Fetch")
    out = {}
    for t in resp.responses:
        for p in t.partitions:
            out[(t.topic, p.partition_index)] = p
    return out


def commit_on(conn: BrokerConnection, group_id: str, offsets: Mapping[tuple[str, int], int], *,
              generation_id: int = -1, member_id: str = "", metadata: str = "") -> None:
    T = m.OffsetCommitRequest
    by_topic: dict[str, list] = {}
    for (topic, partition), offset in offsets.items():
        by_topic.setdefault(topic, []).append(T.OffsetCommitRequestPartition(
            partition_index=partition, committed_offset=offset, committed_metadata=metadata))
    body = m.OffsetCommitRequest(group_id=group_id, generation_id_or_member_epoch=generation_id,
                                 member_id=member_id, topics=[T.OffsetCommitRequestTopic(name=t, partitions=ps)
                                                              for t, ps in by_topic.items()])
    resp = conn.request(ApiKey.OFFSET_COMMIT, body)
    for t in resp.topics:
        for p in t.partitions:
            raise_for_code(p.error_code, None, f"commit {group_id} {t.name}-{p.partition_index}")


class GroupMember:
    """A consumer-group member for the console consumer (classic protocol, eager
    rebalances, the assignor named by ``assignor``).

    ``ensure_active()`` joins or rejoins when needed and returns the current assignment
    (topic -> partitions); ``heartbeat_if_due()`` keeps the membership alive between
    polls; ``commit(offsets)`` commits with the member's generation; ``leave()`` leaves.
    """

    def __init__(self, client: WireClient, group_id: str, topics: list[str], *,
                 assignor: str = "range", session_timeout_ms: int = 10000,
                 rebalance_timeout_ms: int = 30000, heartbeat_interval_ms: int = 3000) -> None:
        from pylog.broker.assignors import assignor_for_name

        self.client = client
        self.group_id = group_id
        self.topics = list(topics)
        self.assignor = assignor_for_name(assignor)
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.member_id = ""
        self.generation_id = -1
        self.assignment: dict[str, list[int]] = {}
        self.needs_join = True
        self._last_heartbeat = 0.0
        self.conn = client.coordinator(group_id)

    def ensure_active(self) -> dict[str, list[int]]:
        while self.needs_join:
            self._join()
        return self.assignment

    def _join(self) -> None:
        from pylog.broker.consumer_protocol import Subscription, decode_assignment, encode_subscription

        sub = Subscription(topics=self.topics,
                           user_data=self.assignor.subscription_user_data(self.topics, self.generation_id))
        body = m.JoinGroupRequest(
            group_id=self.group_id, session_timeout_ms=self.session_timeout_ms,
            rebalance_timeout_ms=self.rebalance_timeout_ms, member_id=self.member_id,
            group_instance_id=None, protocol_type="consumer",
            protocols=[m.JoinGroupRequest.JoinGroupRequestProtocol(
                name=self.assignor.name, metadata=encode_subscription(sub))])
        resp = self.conn.request_with_timeout(ApiKey.JOIN_GROUP, body,
                                              timeout=self.rebalance_timeout_ms / 1000 + 10)
        if resp.error_code == 79:            # MEMBER_ID_REQUIRED: join again with the id
            self.member_id = resp.member_id
            return
        if resp.error_code in (25, 22):      # UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION
            self.member_id = ""
            return
        if resp.error_code == 27:            # REBALANCE_IN_PROGRESS
            return
        raise_for_code(resp.error_code, None, f"join group {self.group_id}")
        self.member_id = resp.member_id
        self.generation_id = resp.generation_id
        assignments = []
        if resp.leader == resp.member_id:
            assignments = self._assign(resp)
        sresp = self.conn.request_with_timeout(ApiKey.SYNC_GROUP, m.SyncGroupRequest(
            group_id=self.group_id, generation_id=self.generation_id, member_id=self.member_id,
            protocol_type="consumer", protocol_name=resp.protocol_name, assignments=assignments),
            timeout=self.rebalance_timeout_ms / 1000 + 10)
        if sresp.error_code in (27, 25, 22):
            if sresp.error_code != 27:
                self.member_id = ""
            return
        raise_for_code(sresp.error_code, None, f"sync group {self.group_id}")
        self.assignment = decode_assignment(sresp.assignment).partitions if sresp.assignment else {}
        self.needs_join = False
        self._last_heartbeat = time.monotonic()

    def _assign(self, resp: Any) -> list:
        from pylog.broker.consumer_protocol import Assignment, decode_subscription, encode_assignment

        subs = {}
        for mem in resp.members:
            s = decode_subscription(mem.metadata)
            s.group_instance_id = mem.group_instance_id
            subs[mem.member_id] = s
        topics = sorted({t for s in subs.values() for t in s.topics})
        meta = self.client.metadata(topics)
        counts = {t.name: len(t.partitions) for t in meta.topics if t.error_code == 0}
        plan = self.assignor.assign(counts, subs)
        out = []
        for member_id in subs:
            parts = plan.get(member_id, {}) if isinstance(plan, dict) else {}
            a = parts if isinstance(parts, Assignment) else Assignment(partitions=dict(parts))
            out.append(m.SyncGroupRequest.SyncGroupRequestAssignment(
                member_id=member_id, assignment=encode_assignment(a)))
        return out

    def heartbeat_if_due(self) -> None:
        if self.needs_join or time.monotonic() - self._last_heartbeat < self.heartbeat_interval:
            return
        resp = self.conn.request(ApiKey.HEARTBEAT, m.HeartbeatRequest(
            group_id=self.group_id, generation_id=self.generation_id, member_id=self.member_id))
        self._last_heartbeat = time.monotonic()
        if resp.error_code in (27, 25, 22):
            if resp.error_code != 27:
                self.member_id = ""
            self.needs_join = True
            return
        raise_for_code(resp.error_code, None, f"heartbeat {self.group_id}")

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        commit_on(self.conn, self.group_id, offsets, generation_id=self.generation_id,
                  member_id=self.member_id)

    def leave(self) -> None:
        if not self.member_id:
            return
        v = self.conn.version(ApiKey.LEAVE_GROUP)
        if v >= 3:
            body = m.LeaveGroupRequest(group_id=self.group_id, members=[
                m.LeaveGroupRequest.MemberIdentity(member_id=self.member_id)])
        else:
            body = m.LeaveGroupRequest(group_id=self.group_id, member_id=self.member_id)
        try:
            self.conn.request(ApiKey.LEAVE_GROUP, body)
        finally:
            self.member_id = ""
            self.needs_join = True
