"""Admin operations of the Kafka-protocol transport: topics, partitions, configs,
records and groups, with the results and exceptions of the embedded broker's methods.

:class:`AdminOps` implements the admin part of :class:`~pylog.client.transport.Transport`
over a :class:`~pylog.client.kafka.network.NetworkClient`.  Where each request goes, as
Kafka's ``AdminClient`` sends it:

- CreateTopics, DeleteTopics, CreatePartitions: the controller (Metadata's
  ``controller_id``; any broker while it is unknown), again after a metadata refresh for
  the topics answered NOT_CONTROLLER;
- Metadata (describe_topic(s), list_topics), DescribeConfigs, AlterConfigs,
  IncrementalAlterConfigs of topics: any broker (the least loaded);
- DeleteRecords: each partition's leader (again after a metadata refresh on
  NOT_LEADER_OR_FOLLOWER and the other leader-moved errors);
- ListGroups: every broker, answers merged; DescribeGroups, DeleteGroups: each group's
  coordinator (FindCoordinator, batched), again at the rediscovered one after
  NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE / COORDINATOR_LOAD_IN_PROGRESS.

Requests that found no broker (connection failures, timeouts) are repeated after
``retry_backoff_ms`` while ``request_timeout_ms`` from the call allows; then the last
failure is raised (retriable :class:`~pylog.errors.NetworkError` or
:class:`~pylog.errors.RequestTimedOutError`).

Results equal the embedded broker's where the protocol carries the facts: a topic's
description adds each partition's log start offset and high watermark (one ListOffsets
pair per leader), a created topic's result its id (Metadata) and configs
(DescribeConfigs).  Methods documented as raising raise ``error_for_code(code,
error_message)`` of the broker's answer: the same exception class as the embedded call.
Arguments that cannot be put on the wire (a topic name that is not a string, a partition
count that is not an int) raise here the class the embedded broker raises for them.

Threads: every method may be called from any thread; each blocks its caller.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any, Callable, Iterable, Mapping, MutableMapping

from pylog.broker.core import NewTopic, PartitionInfo, TopicDescription, TopicResult
from pylog.broker.group import DescribedMember, GroupDescription, ListedGroup
from pylog.broker.topic_config import ConfigEntry, ConfigSource
from pylog.client.kafka.cluster import METADATA_ERRORS, MetadataSnapshot
from pylog.client.kafka.group_ops import COORDINATOR_RETRY_CODES, _Caller, _code_of, _retriable
from pylog.errors import (InvalidConfigError, InvalidPartitionsError, InvalidReplicationFactorError,
                          InvalidTopicError, OffsetOutOfRangeError, PylogError, RequestTimedOutError,
                          UnknownServerError, UnknownTopicOrPartitionError, error_for_code)
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey

__all__ = ["AdminOps"]

_NONE = 0
_UNKNOWN_TOPIC_OR_PARTITION = 3
_LEADER_NOT_AVAILABLE = 5
_INVALID_GROUP_ID = 24
_NOT_CONTROLLER = 41
_THROTTLING_QUOTA_EXCEEDED = 89
_RESOURCE_TOPIC = 2
_INT32 = (-2**31, 2**31 - 1)
_OPS = {"set": 0, "delete": 1, "append": 2, "subtract": 3}
_RETRIABLE_TOPIC = frozenset({_UNKNOWN_TOPIC_OR_PARTITION, _LEADER_NOT_AVAILABLE})


def _topic_id_text(topic_id: uuid.UUID | None) -> str:
    """A topic id as pylog's broker writes it (Kafka's URL-safe base64, unpadded)."""
    if topic_id is None or not topic_id.int:
        return ""
    return base64.urlsafe_b64encode(topic_id.bytes).decode().rstrip("=")


def _config_value(name: Any, value: Any) -> str | None:
    """A config value as the wire's string (Kafka's forms: true/false, a,b for lists)."""
    if not isinstance(name, str):
        raise InvalidConfigError(f"config names are strings, got {name!r}")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return ",".join(value)
    raise InvalidConfigError(f"{name}={value!r}: a config value is a string, bool, number or list of strings")


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


class AdminOps(_Caller):
    """The admin operations of the Kafka-protocol transport (see the module docstring).

    Parameters
    ----------
    net : NetworkClient
    request_timeout_ms : int
        Deadline of each call (its retries included); also sent as the ``timeout_ms`` of
        CreateTopics, DeleteTopics, CreatePartitions and DeleteRecords.
    client_id : str
    """

    def __init__(self, net: Any, *, request_timeout_ms: int, client_id: str) -> None:
        super().__init__(net, request_timeout_ms=request_timeout_ms, client_id=client_id,
                         timer_name=f"pylog-admin-{client_id}")

    # ------------------------------------------------------------------ plumbing

    def _deadline(self) -> float:
        return time.monotonic() + self.request_timeout_ms / 1000

    def _backoff_or_raise(self, deadline: float, exc: BaseException) -> None:
        """Sleep ``retry_backoff_ms`` before another attempt, or raise ``exc`` when the
        call's time is up."""
        if not _retriable(exc) or time.monotonic() + self.retry_backoff >= deadline or self.net.closed:
            raise exc
        time.sleep(self.retry_backoff)

    def _send(self, node: int | None, api_key: int, body: Any, deadline: float) -> Any:
        """One request to ``node`` (None: the least-loaded broker), waited for."""
        left_ms = max(1, int((deadline - time.monotonic()) * 1000))
        if node is None:
            f = self.net.send_to_any(api_key, body, timeout_ms=left_ms)
        else:
            f = self.net.send(node, api_key, body, timeout_ms=left_ms)
        return self.wait(f, deadline, left_ms)

    def _call_any(self, api_key: int, body: Any) -> Any:
        """A request to any broker, repeated after failures without an answer."""
        deadline = self._deadline()
        while True:
            try:
                return self._send(None, api_key, body, deadline)
            except PylogError as exc:
                self._backoff_or_raise(deadline, exc)

    def _metadata(self, topics: list[str] | None, deadline: float) -> MetadataSnapshot:
        while True:
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                return self.wait(self.net.refresh_metadata(topics, timeout_ms=left_ms), deadline, left_ms)
            except PylogError as exc:
                self._backoff_or_raise(deadline, exc)

    def _brokers(self, deadline: float) -> MetadataSnapshot:
        snap = self.net.cluster.snapshot()
        if snap.nodes:
            return snap
        return self._metadata([], deadline)

    def _controller(self, deadline: float) -> int | None:
        snap = self._brokers(deadline)
        c = snap.controller_id
        return c if c is not None and c >= 0 and c in snap.nodes else None

    def _controller_call(self, names: list[str], build: Callable[[list[str]], Any],
                         parse: Callable[[Any], dict[str, tuple[int, str | None, Any]]],
                         api_key: int) -> dict[str, tuple[int, str | None, Any]]:
        """Send ``build(names)`` to the controller; ``parse`` gives name -> (code,
        message, entry).  Names answered NOT_CONTROLLER go again to the controller of a
        fresh metadata answer.  Names answered THROTTLING_QUOTA_EXCEEDED (the controller
        mutation quota of CreateTopics, CreatePartitions and DeleteTopics, KIP-599) go
        again after the answer's throttle_time_ms, as Kafka's admin client does by
        default (``retryOnQuotaViolation``); the code is final only when that wait would
        pass the call's deadline."""
        deadline = self._deadline()
        out: dict[str, tuple[int, str | None, Any]] = {}
        todo = list(names)
        while todo:
            try:
                resp = self._send(self._controller(deadline), api_key, build(todo), deadline)
            except PylogError as exc:
                self.net.cluster.request_update()
                self._backoff_or_raise(deadline, exc)
                continue
            got = parse(resp)
            throttle = max(getattr(resp, "throttle_time_ms", 0) or 0, 0) / 1000
            again = []
            moved = False
            for name in todo:
                code, msg, entry = got.get(name, (UnknownServerError.error_code, "no answer for it", None))
                if code == _NOT_CONTROLLER and time.monotonic() + self.retry_backoff < deadline:
                    again.append(name)
                    moved = True
                elif (code == _THROTTLING_QUOTA_EXCEEDED
                      and time.monotonic() + max(throttle, self.retry_backoff) < deadline):
                    again.append(name)
                else:
                    out[name] = (code, msg, entry)
            todo = again
            if todo:
                if moved:
                    self.net.cluster.request_update()
                    time.sleep(self.retry_backoff)
                    self._metadata([], deadline)
                else:
                    time.sleep(max(throttle, self.retry_backoff))
        return out

    def _log_offsets(self, snap: MetadataSnapshot, parts: list[tuple[str, int]],
                     deadline: float) -> dict[tuple[str, int], tuple[int, int]]:
        """(log start offset, high watermark) of each partition, by ListOffsets to its
        leader; (-1, -1) where the leader did not answer."""
        by_leader: dict[int, list[tuple[str, int]]] = {}
        for t, p in parts:
            leader = snap.leader_for(t, p)
            if leader is not None:
                by_leader.setdefault(leader, []).append((t, p))
        L: Any = m.ListOffsetsRequest

        def body_for(tps: list[tuple[str, int]], ts: int) -> Callable[[int], Any]:
            def build(version: int) -> Any:
                topics: dict[str, list[Any]] = {}
                for t, p in tps:
                    topics.setdefault(t, []).append(L.ListOffsetsPartition(partition_index=p, timestamp=ts))
                req = L(replica_id=-1, topics=[L.ListOffsetsTopic(name=t, partitions=ps) for t, ps in topics.items()])
                return req
            return build

        futures = []
        left_ms = max(1, int((deadline - time.monotonic()) * 1000))
        for leader, tps in by_leader.items():
            for ts in (-2, -1):
                futures.append((ts, self.net.send(leader, ApiKey.LIST_OFFSETS, body_for(tps, ts), timeout_ms=left_ms)))
        found: dict[tuple[str, int], dict[int, int]] = {}
        for ts, f in futures:
            try:
                resp = self.wait(f, deadline, left_ms)
            except PylogError:
                continue
            for t in resp.topics:
                for p in t.partitions:
                    if p.error_code:
                        continue
                    off = p.offset if p.offset >= 0 or not p.old_style_offsets else p.old_style_offsets[0]
                    found.setdefault((t.name, p.partition_index), {})[ts] = off
        return {tp: (found.get(tp, {}).get(-2, -1), found.get(tp, {}).get(-1, -1)) for tp in parts}

    def _descriptions(self, snap: MetadataSnapshot, names: list[str],
                      deadline: float) -> dict[str, TopicDescription]:
        parts = [(n, p) for n in names for p in sorted(snap.topics[n].partitions)]
        offsets = self._log_offsets(snap, parts, deadline)
        out = {}
        for n in names:
            t = snap.topics[n]
            infos = []
            for p in sorted(t.partitions):
                pm = t.partitions[p]
                start, hw = offsets[(n, p)]
                infos.append(PartitionInfo(p, pm.leader_id, pm.leader_epoch, tuple(pm.replicas), tuple(pm.isr),
                                           tuple(pm.offline), start, hw))
            out[n] = TopicDescription(n, _topic_id_text(t.topic_id), t.is_internal, tuple(infos))
        return out

    def _topic_metadata(self, names: list[str], deadline: float, *, wait_for: bool = False) -> MetadataSnapshot:
        """Metadata of ``names``; with ``wait_for``, asked again (after the backoff) while a
        topic is still unknown or leaderless, as a topic just created reaches every
        broker's metadata a little later."""
        while True:
            snap = self._metadata(names, deadline)
            if not wait_for:
                return snap
            pending = [n for n in names if n not in snap.topics or snap.topics[n].error_code in _RETRIABLE_TOPIC
                       or any(p.leader_id < 0 for p in snap.topics[n].partitions.values())]
            if not pending or time.monotonic() + self.retry_backoff >= deadline:
                return snap
            time.sleep(self.retry_backoff)

    # ------------------------------------------------------------------ topics

    def create_topic(self, name: str, partitions: int | None = None, replication_factor: int | None = None,
                     config: Mapping[str, Any] | None = None, *, validate_only: bool = False) -> TopicDescription:
        """CreateTopics of one topic; its description (see the module docstring).

        Raises
        ------
        InvalidTopicError, TopicAlreadyExistsError, InvalidPartitionsError,
        InvalidReplicationFactorError, InvalidConfigError
        """
        if not isinstance(name, str):
            raise InvalidTopicError(f"topic names are str, not {type(name).__name__}")
        count = -1 if partitions is None else partitions
        if not _is_int(count, *_INT32):
            raise InvalidPartitionsError(f"a topic needs 1 to 1000000 partitions, got {partitions!r}")
        rf = -1 if replication_factor is None else replication_factor
        if not _is_int(rf, -2**15, 2**15 - 1):
            raise InvalidReplicationFactorError(f"replication factor {replication_factor!r} is not a valid count")
        configs = {k: _config_value(k, v) for k, v in (config or {}).items()}
        code, msg, entry = self._create([(name, count, rf, configs)], validate_only)[name]
        if code:
            raise error_for_code(code, msg)
        if validate_only:
            n = entry.num_partitions if entry is not None and entry.num_partitions >= 0 else count
            node = self._controller(self._deadline())
            node = 0 if node is None else node
            return TopicDescription(name, "", False, tuple(PartitionInfo(p, node, 0, (node,), (node,))
                                                           for p in range(max(n, 0))))
        return self.describe_topic(name, _wait=True)

    def _create(self, specs: list[tuple[str, int, int, dict[str, str | None]]],
                validate_only: bool) -> dict[str, tuple[int, str | None, Any]]:
        C: Any = m.CreateTopicsRequest
        by_name = {s[0]: s for s in specs}

        def build(names: list[str]) -> Any:
            return C(topics=[C.CreatableTopic(
                name=n, num_partitions=by_name[n][1], replication_factor=by_name[n][2],
                configs=[C.CreatableTopicConfig(name=k, value=v) for k, v in by_name[n][3].items()])
                for n in names], timeout_ms=self.request_timeout_ms, validate_only=validate_only)

        def parse(resp: Any) -> dict[str, tuple[int, str | None, Any]]:
            return {t.name: (t.error_code, t.error_message, t) for t in resp.topics}

        return self._controller_call([s[0] for s in specs], build, parse, ApiKey.CREATE_TOPICS)

    def create_topics(self, topics: Iterable[NewTopic | str], *, validate_only: bool = False) -> dict[str, TopicResult]:
        """CreateTopics: a :class:`TopicResult` per topic (id and configs of the created
        ones, as the embedded broker gives them); never raises per topic."""
        out: dict[str, TopicResult] = {}
        specs = []
        for spec in topics:
            if isinstance(spec, str):
                spec = NewTopic(spec)
            name = spec.name
            try:
                if not isinstance(name, str):
                    raise InvalidTopicError(f"topic names are str, not {type(name).__name__}")
                count = -1 if spec.num_partitions is None else spec.num_partitions
                if not _is_int(count, *_INT32):
                    raise InvalidPartitionsError(f"a topic needs 1 to 1000000 partitions, got {count!r}")
                rf = -1 if spec.replication_factor is None else spec.replication_factor
                if not _is_int(rf, -2**15, 2**15 - 1):
                    raise InvalidReplicationFactorError(f"replication factor {rf!r} is not a valid count")
                configs = {k: _config_value(k, v) for k, v in (spec.configs or {}).items()}
            except PylogError as exc:
                out[str(name)] = TopicResult(str(name), exc.error_code, str(exc))
                continue
            specs.append((name, count, rf, configs))
        if not specs:
            return out
        answers = self._create(specs, validate_only)
        created = [s[0] for s in specs if answers[s[0]][0] == _NONE]
        deadline = self._deadline()
        ids: dict[str, str | None] = {}
        configs_of: dict[str, list[ConfigEntry]] = {}
        if created and not validate_only:
            snap = self._topic_metadata(created, deadline, wait_for=True)
            ids = {n: _topic_id_text(snap.topics[n].topic_id) or None if n in snap.topics else None for n in created}
            configs_of = self._describe_configs_many(created)
        for name, _, _, _ in specs:
            code, msg, entry = answers[name]
            if code:
                out[name] = TopicResult(name, code, msg)
                continue
            n = entry.num_partitions if entry.num_partitions >= 0 else -1
            rf = entry.replication_factor if entry.replication_factor >= 0 else -1
            if validate_only:
                out[name] = TopicResult(name, num_partitions=n, replication_factor=rf)
            else:
                out[name] = TopicResult(name, topic_id=ids.get(name), num_partitions=n, replication_factor=rf,
                                        configs=configs_of.get(name))
        return out

    def _delete(self, names: list[str]) -> dict[str, tuple[int, str | None, Any]]:
        D: Any = m.DeleteTopicsRequest

        def parse(resp: Any) -> dict[str, tuple[int, str | None, Any]]:
            return {r.name: (r.error_code, getattr(r, "error_message", None), r) for r in resp.responses}

        return self._controller_call(names, lambda todo: D(topic_names=todo, timeout_ms=self.request_timeout_ms),
                                     parse, ApiKey.DELETE_TOPICS)

    def delete_topic(self, name: str) -> None:
        """DeleteTopics of one topic.  Raises UnknownTopicOrPartitionError,
        InvalidTopicError (an internal topic, or a name that is not a str)."""
        if not isinstance(name, str):
            raise InvalidTopicError(f"topic names are str, not {type(name).__name__}")
        code, msg, _ = self._delete([name])[name]
        if code:
            raise error_for_code(code, msg or f"cannot delete topic {name!r}: {error_for_code(code).kafka_name}")

    def delete_topics(self, names: Iterable[str]) -> dict[str, TopicResult]:
        """DeleteTopics: a :class:`TopicResult` per topic (with the deleted topic's id);
        never raises per topic."""
        out: dict[str, TopicResult] = {}
        wanted = _topic_names(names, out)
        if not wanted:
            return out
        snap = self._metadata(wanted, self._deadline())     # the ids, before they go
        for name, (code, msg, _) in self._delete(wanted).items():
            if code:
                out[name] = TopicResult(name, code, msg or error_for_code(code).kafka_name)
            else:
                t = snap.topics.get(name)
                out[name] = TopicResult(name, topic_id=_topic_id_text(t.topic_id) if t is not None else None)
        return out

    def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> None:
        """CreatePartitions up to ``total``.  Raises UnknownTopicOrPartitionError,
        InvalidPartitionsError, InvalidTopicError."""
        if not isinstance(name, str):
            raise InvalidTopicError(f"topic names are str, not {type(name).__name__}")
        if not _is_int(total, *_INT32):
            raise InvalidPartitionsError(f"topic {name!r}: the new partition count must be an int, got {total!r}")
        P: Any = m.CreatePartitionsRequest

        def build(todo: list[str]) -> Any:
            return P(topics=[P.CreatePartitionsTopic(name=n, count=total, assignments=None) for n in todo],
                     timeout_ms=self.request_timeout_ms, validate_only=validate_only)

        def parse(resp: Any) -> dict[str, tuple[int, str | None, Any]]:
            return {r.name: (r.error_code, r.error_message, r) for r in resp.results}

        code, msg, _ = self._controller_call([name], build, parse, ApiKey.CREATE_PARTITIONS)[name]
        if code:
            raise error_for_code(code, msg)
        if not validate_only:
            self.net.cluster.request_update()       # producers see the new partitions soon

    def describe_topic(self, name: str, *, _wait: bool = False) -> TopicDescription:
        """Metadata of one topic, with each partition's log start offset and high
        watermark.  Raises UnknownTopicOrPartitionError (InvalidTopicError for an
        illegal name)."""
        if not isinstance(name, str):
            raise InvalidTopicError(f"topic names are str, not {type(name).__name__}")
        deadline = self._deadline()
        snap = self._topic_metadata([name], deadline, wait_for=_wait)
        t = snap.topics.get(name)
        if t is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        if t.error_code:
            raise error_for_code(t.error_code, f"topic {name!r}: {error_for_code(t.error_code).kafka_name}")
        return self._descriptions(snap, [name], deadline)[name]

    def describe_topics(self, names: Iterable[str] | None = None) -> dict[str, TopicDescription | TopicResult]:
        """Metadata of several topics (all non-internal ones when None): a description,
        or a TopicResult with the error of each unknown one."""
        deadline = self._deadline()
        out: dict[str, TopicDescription | TopicResult] = {}
        if names is None:
            snap = self._metadata(None, deadline)
            wanted = sorted(n for n, t in snap.topics.items() if not t.is_internal and not t.error_code)
        else:
            wanted = _topic_names(names, out)
            if not wanted:
                return out
            snap = self._metadata(wanted, deadline)
        good = []
        for n in wanted:
            t = snap.topics.get(n)
            if t is None or t.error_code:
                code = t.error_code if t is not None else _UNKNOWN_TOPIC_OR_PARTITION
                out[n] = TopicResult(n, code, f"topic {n!r}: {error_for_code(code).kafka_name}")
            else:
                good.append(n)
        descs = self._descriptions(snap, good, deadline)
        return {n: descs[n] if n in descs else out[n] for n in list(dict.fromkeys([*wanted, *out]))}

    def list_topics(self, *, internal: bool = False) -> list[str]:
        """Topic names, sorted (internal topics only with ``internal=True``)."""
        snap = self._metadata(None, self._deadline())
        return sorted(n for n, t in snap.topics.items() if not t.error_code and (internal or not t.is_internal))

    # ------------------------------------------------------------------ configs

    def _describe_configs_raw(self, topics: list[str], names: list[str] | None, synonyms: bool,
                              documentation: bool) -> Any:
        D: Any = m.DescribeConfigsRequest

        def build(version: int) -> Any:
            req = D(resources=[D.DescribeConfigsResource(resource_type=_RESOURCE_TOPIC, resource_name=t,
                                                         configuration_keys=names) for t in topics])
            if version >= 1:
                req.include_synonyms = synonyms
            if version >= 3:
                req.include_documentation = documentation
            return req

        return self._call_any(ApiKey.DESCRIBE_CONFIGS, build)

    @staticmethod
    def _entries(result: Any, documentation: bool) -> list[ConfigEntry]:
        out = []
        for c in result.configs:
            source = c.config_source
            if source is None or source < 0:      # DescribeConfigs v0: is_default only
                source = ConfigSource.DEFAULT_CONFIG if c.is_default else ConfigSource.UNKNOWN
            out.append(ConfigEntry(
                name=c.name, value=c.value, source=source, is_default=source == ConfigSource.DEFAULT_CONFIG,
                read_only=bool(c.read_only), is_sensitive=bool(c.is_sensitive), type=c.config_type or 0,
                documentation=(c.documentation or "") if documentation else "",
                synonyms=tuple((s.name, s.value, s.source) for s in (c.synonyms or ()))))
        return out

    def _describe_configs_many(self, topics: list[str]) -> dict[str, list[ConfigEntry]]:
        try:
            resp = self._describe_configs_raw(topics, None, False, False)
        except PylogError:
            return {}
        return {r.resource_name: self._entries(r, False) for r in resp.results if not r.error_code}

    def describe_configs(self, topic: str, names: Iterable[str] | None = None, *,
                         include_synonyms: bool = False, include_documentation: bool = False) -> list[ConfigEntry]:
        """DescribeConfigs of a topic.  Raises UnknownTopicOrPartitionError, InvalidConfigError."""
        if not isinstance(topic, str):
            raise InvalidTopicError(f"topic names are str, not {type(topic).__name__}")
        keys = None if names is None else list(names)
        if keys is not None and not all(isinstance(k, str) for k in keys):
            raise InvalidConfigError(f"config names are strings, got {keys!r}")
        resp = self._describe_configs_raw([topic], keys, include_synonyms, include_documentation)
        r = next((x for x in resp.results if x.resource_name == topic), None)
        if r is None:
            raise UnknownServerError(f"DescribeConfigs answered without topic {topic!r}")
        if r.error_code:
            raise error_for_code(r.error_code, r.error_message)
        return self._entries(r, include_documentation)

    def _alter(self, api_key: int, topic: str, configs: list[Any], validate_only: bool) -> None:
        cls: Any = m.AlterConfigsRequest if api_key == ApiKey.ALTER_CONFIGS else m.IncrementalAlterConfigsRequest
        req = cls(resources=[cls.AlterConfigsResource(resource_type=_RESOURCE_TOPIC, resource_name=topic,
                                                      configs=configs)], validate_only=validate_only)
        resp = self._call_any(api_key, req)
        r = next((x for x in resp.responses if x.resource_name == topic), None)
        if r is None:
            raise UnknownServerError(f"the broker answered without topic {topic!r}")
        if r.error_code:
            raise error_for_code(r.error_code, r.error_message)

    def alter_configs(self, topic: str, configs: Mapping[str, Any], *, validate_only: bool = False) -> None:
        """AlterConfigs (replaces the topic's overrides).  Raises
        UnknownTopicOrPartitionError, InvalidConfigError."""
        if not isinstance(topic, str):
            raise InvalidTopicError(f"topic names are str, not {type(topic).__name__}")
        try:
            items = list(configs.items())
        except AttributeError:
            raise InvalidConfigError("configs must map names to values") from None
        request_cls: Any = m.AlterConfigsRequest
        A = request_cls
        entries = [A.AlterableConfig(name=k, value=_config_value(k, v)) for k, v in items]
        self._alter(ApiKey.ALTER_CONFIGS, topic, entries, validate_only)

    def incremental_alter_configs(self, topic: str, ops: Iterable[tuple[str, Any, Any]], *,
                                  validate_only: bool = False) -> None:
        """IncrementalAlterConfigs ``(name, op, value)`` (op ``"set"``/0, ``"delete"``/1,
        ``"append"``/2, ``"subtract"``/3); all or nothing.  Raises
        UnknownTopicOrPartitionError, InvalidConfigError."""
        if not isinstance(topic, str):
            raise InvalidTopicError(f"topic names are str, not {type(topic).__name__}")
        request_cls: Any = m.IncrementalAlterConfigsRequest
        A = request_cls
        entries = []
        for item in ops:
            try:
                name, op, value = item
            except (TypeError, ValueError):
                raise InvalidConfigError(f"config operation {item!r} is not (name, op, value)") from None
            code = _OPS.get(op) if isinstance(op, str) else op
            if not _is_int(code, 0, 127):
                code = 127           # unknown: the broker refuses it (after its topic checks)
            entries.append(A.AlterableConfig(name=name if isinstance(name, str) else str(name),
                                             config_operation=code, value=_config_value(str(name), value)))
        self._alter(ApiKey.INCREMENTAL_ALTER_CONFIGS, topic, entries, validate_only)

    # ------------------------------------------------------------------ records

    def delete_records(self, topic: str, partition: int, offset: int) -> int:
        """DeleteRecords before ``offset`` (-1: the high watermark) at the partition's
        leader; returns the new log start offset.  Raises UnknownTopicOrPartitionError,
        OffsetOutOfRangeError, InvalidTopicError (an internal topic)."""
        if not isinstance(topic, str):
            raise InvalidTopicError(f"topic names are str, not {type(topic).__name__}")
        deadline = self._deadline()
        D: Any = m.DeleteRecordsRequest
        while True:
            snap = self._metadata([topic], deadline)
            t = snap.topics.get(topic)
            if t is None or t.error_code:
                code = t.error_code if t is not None else _UNKNOWN_TOPIC_OR_PARTITION
                raise error_for_code(code, f"unknown topic {topic!r}" if code == 3 else None)
            if not _is_int(partition, *_INT32) or partition not in t.partitions:
                raise UnknownTopicOrPartitionError(
                    f"topic {topic!r} has partitions 0..{len(t.partitions) - 1}; there is no partition {partition!r}")
            if not _is_int(offset, -1, 2**63 - 1):
                if t.is_internal:
                    raise InvalidTopicError(f"records of internal topic {topic!r} cannot be deleted")
                raise OffsetOutOfRangeError(f"cannot delete records before offset {offset!r}")
            leader = snap.leader_for(topic, partition)
            if leader is None:
                self._backoff_or_raise(deadline, error_for_code(_LEADER_NOT_AVAILABLE,
                                                                f"{topic}-{partition} has no leader now"))
                continue
            req = D(topics=[D.DeleteRecordsTopic(name=topic, partitions=[
                D.DeleteRecordsPartition(partition_index=partition, offset=offset)])],
                timeout_ms=self.request_timeout_ms)
            try:
                resp = self._send(leader, ApiKey.DELETE_RECORDS, req, deadline)
            except PylogError as exc:
                self._backoff_or_raise(deadline, exc)
                continue
            p = next((p for r in resp.topics if r.name == topic for p in r.partitions
                      if p.partition_index == partition), None)
            if p is None:
                raise UnknownServerError(f"DeleteRecords answered without {topic}-{partition}")
            if p.error_code in METADATA_ERRORS and p.error_code != _UNKNOWN_TOPIC_OR_PARTITION:
                self.net.cluster.request_update()
                self._backoff_or_raise(deadline, error_for_code(p.error_code))
                continue
            if p.error_code:
                raise error_for_code(p.error_code, f"cannot delete records of {topic}-{partition} before offset "
                                                   f"{offset}: {error_for_code(p.error_code).kafka_name}")
            return p.low_watermark

    # ------------------------------------------------------------------ groups

    def list_groups(self, states: Iterable[str] | None = None,
                    types: Iterable[str] | None = None) -> list[ListedGroup]:
        """ListGroups at every broker, merged (filters by state and type names,
        case-insensitive; applied here too for brokers older than ListGroups v4/v5)."""
        state_filter = {s.lower() for s in states} if states else None
        type_filter = {t.lower() for t in types} if types else None
        L: Any = m.ListGroupsRequest

        def build(version: int) -> Any:
            req = L()
            if version >= 4 and state_filter:
                req.states_filter = sorted(state_filter)
            if version >= 5 and type_filter:
                req.types_filter = sorted(type_filter)
            return req

        deadline = self._deadline()
        todo = sorted(self._brokers(deadline).nodes)
        seen: dict[str, ListedGroup] = {}
        while todo:
            futures = [(node, self.net.send(node, ApiKey.LIST_GROUPS, build,
                                            timeout_ms=max(1, int((deadline - time.monotonic()) * 1000))))
                       for node in todo]
            again: list[int] = []
            last: BaseException | None = None
            for node, f in futures:
                try:
                    resp = self.wait(f, deadline)
                except PylogError as exc:
                    again.append(node)
                    last = exc
                    continue
                if resp.error_code:
                    err = error_for_code(resp.error_code)
                    if _retriable(err):
                        again.append(node)
                        last = err
                        continue
                    raise error_for_code(resp.error_code, f"ListGroups at broker {node}: {err.kafka_name}")
                for g in resp.groups:
                    state = g.group_state or ""
                    gtype = g.group_type or "classic"
                    if state_filter is not None and state and state.lower() not in state_filter:
                        continue
                    if type_filter is not None and gtype.lower() not in type_filter:
                        continue
                    seen.setdefault(g.group_id, ListedGroup(g.group_id, g.protocol_type or "", state, gtype))
            todo = again
            if todo:
                assert last is not None
                self._backoff_or_raise(deadline, last)
        return list(seen.values())

    def _by_coordinator(self, group_ids: list[str], api_key: int, build: Callable[[list[str]], Any],
                        parse: Callable[[Any], dict[str, tuple[int, Any]]],
                        failed: Callable[[str, int], Any]) -> dict[str, Any]:
        """Send ``build(ids)`` to each coordinator for its groups; ``parse`` gives
        group -> (code, value).  Groups answered with a coordinator error go again to
        their rediscovered coordinator; ``failed(group, code)`` is the value of a group
        that got no answer in time."""
        deadline = self._deadline()
        done: dict[str, Any] = {}
        todo = list(dict.fromkeys(group_ids))
        last: dict[str, int] = {}
        cluster = self.net.cluster
        while todo:
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                coords = self.wait(self.net.find_coordinators(todo, timeout_ms=left_ms), deadline, left_ms)
            except PylogError as exc:
                coords = {g: exc for g in todo}
            batches: dict[int | None, list[str]] = {}
            again: list[str] = []
            for gid in todo:
                c = coords.get(gid)
                if isinstance(c, BaseException):
                    code = _code_of(c)
                    if code == _INVALID_GROUP_ID:
                        batches.setdefault(None, []).append(gid)   # the broker answers for it
                    elif _retriable(c):
                        again.append(gid)
                        last[gid] = code
                    else:
                        done[gid] = failed(gid, code)
                else:
                    batches.setdefault(c, []).append(gid)
            sent = []
            for node, gids in batches.items():
                tmo = max(1, int((deadline - time.monotonic()) * 1000))
                f = (self.net.send_to_any(api_key, build(gids), timeout_ms=tmo) if node is None
                     else self.net.send(node, api_key, build(gids), timeout_ms=tmo))
                sent.append((node, gids, f))
            for node, gids, f in sent:
                try:
                    resp = self.wait(f, deadline)
                except PylogError as exc:
                    for gid in gids:
                        if node is not None:
                            cluster.invalidate_coordinator(gid)
                        if _retriable(exc):
                            again.append(gid)
                            last[gid] = _code_of(exc)
                        else:
                            done[gid] = failed(gid, _code_of(exc))
                    continue
                got = parse(resp)
                for gid in gids:
                    code, value = got.get(gid, (UnknownServerError.error_code, None))
                    if code in COORDINATOR_RETRY_CODES:
                        if code != 14:
                            cluster.invalidate_coordinator(gid)
                        again.append(gid)
                        last[gid] = code
                    elif value is None:
                        done[gid] = failed(gid, code)
                    else:
                        done[gid] = value
            todo = again
            if todo:
                if time.monotonic() + self.retry_backoff >= deadline or self.net.closed:
                    for gid in todo:
                        done[gid] = failed(gid, last.get(gid, RequestTimedOutError.error_code))
                    break
                time.sleep(self.retry_backoff)
        return done

    def describe_groups(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        """DescribeGroups at each group's coordinator, one description per id in order
        (an unknown group is described as Dead)."""
        ids = list(group_ids)
        D: Any = m.DescribeGroupsRequest

        def parse(resp: Any) -> dict[str, tuple[int, Any]]:
            out = {}
            for g in resp.groups:
                out[g.group_id] = (g.error_code, GroupDescription(
                    g.group_id, g.error_code, g.group_state, g.protocol_type, g.protocol_data,
                    [DescribedMember(x.member_id, x.group_instance_id, x.client_id, x.client_host,
                                     bytes(x.member_metadata), bytes(x.member_assignment)) for x in g.members]))
            return out

        found = self._by_coordinator([g for g in ids if isinstance(g, str)], ApiKey.DESCRIBE_GROUPS,
                                     lambda gids: D(groups=gids), parse,
                                     lambda gid, code: GroupDescription(gid, code, "", "", ""))
        return [found[g] if isinstance(g, str) else GroupDescription(str(g), _INVALID_GROUP_ID, "", "", "")
                for g in ids]

    def delete_groups(self, group_ids: Iterable[str]) -> dict[str, int]:
        """DeleteGroups at each group's coordinator: group id -> error code (only empty
        groups are deleted)."""
        ids = list(dict.fromkeys(group_ids))
        D: Any = m.DeleteGroupsRequest

        def parse(resp: Any) -> dict[str, tuple[int, Any]]:
            return {r.group_id: (r.error_code, r.error_code) for r in resp.results}

        found = self._by_coordinator([g for g in ids if isinstance(g, str)], ApiKey.DELETE_GROUPS,
                                     lambda gids: D(groups_names=gids), parse, lambda gid, code: code)
        return {g: found[g] if isinstance(g, str) else _INVALID_GROUP_ID for g in ids}

    def close(self) -> None:
        super().close()


def _topic_names(names: Iterable[Any], out: MutableMapping[str, Any]) -> list[str]:
    """The distinct topic names of ``names``, in order; an item that is not a str is
    answered in ``out`` with INVALID_TOPIC_EXCEPTION instead."""
    wanted: list[str] = []
    for name in names:
        if not isinstance(name, str):
            out[str(name)] = TopicResult(str(name), InvalidTopicError.error_code,
                                         f"topic names are str, not {type(name).__name__}")
        elif name not in wanted:
            wanted.append(name)
    return wanted
