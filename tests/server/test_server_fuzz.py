"""Hypothesis against one live in-process server: well-formed requests of every served
API and version, mutated frames, random bytes and random headers.

What must hold (the issue's words): a well-formed request is answered with a frame
carrying its correlation id (Produce with acks=0: nothing, and the connection goes on);
garbage gets Kafka's error code or closes that one connection with at most one log line;
no handler ever crashes (nothing logged at ERROR); the server keeps serving a fresh
client; records and offsets stored before the fuzz are byte-for-byte unchanged, unless
the server answered success to a fuzzed request that changes them (DeleteTopics,
DeleteRecords, CreatePartitions, OffsetCommit, OffsetDelete, DeleteGroups name the
stored topic and group often: every string of a generated request is drawn from their
names half of the time), and then they are changed exactly as that answer says, never
corrupted or partly lost; the stored data is then restored for the next examples.

Long polls are bounded in the generated requests (Fetch ``max_wait_ms``, JoinGroup
session/rebalance timeouts) so a well-formed request is answered within seconds, and so
are CreatePartitions counts (but for huge ones, which must be refused); values below
zero are kept, so the error paths still see them.  CI runs derandomized (the
``ci`` hypothesis profile of tests/conftest.py); ``-m long`` runs many more examples.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import socket
import struct
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey, api_name
from pylog.protocol.codec import decode_request, decode_response, encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.errors import PylogError
from pylog.records import RecordBatchBuilder, iter_batches
from pylog.server.config import ServerConfig
from pylog.server.handlers import SERVED_VERSIONS
from pylog.server.server import ServerThread
from tests.wire import WireClient
from server.util import read_frame


def _strategies():
    """tests/protocol/_protocol_strategies.py (that directory is not a package)."""
    mod = sys.modules.get("_protocol_strategies")
    if mod is None:
        path = Path(__file__).resolve().parent.parent / "protocol" / "_protocol_strategies.py"
        spec = importlib.util.spec_from_file_location("_protocol_strategies", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_protocol_strategies"] = mod
        spec.loader.exec_module(mod)
    return mod


message_strategy = _strategies().message_strategy

SERVED = sorted((k, v) for k, (lo, hi) in SERVED_VERSIONS.items() for v in range(lo, hi + 1))
SERVED_IDS = [f"{api_name(k)}-v{v}" for k, v in SERVED]

#: The stored data: the fuzz draws its strings from these names half of the time.
KNOWN_TOPIC = "fuzz-known-records"
KNOWN_GROUP = "fuzz-known-group"
KNOWN_PARTITIONS = 3
#: Longer than the fuzz's other strings (at most 12 characters) and never drawn: the
#: topic the after-fuzz produce uses.
SCRATCH_TOPIC = "fuzz-scratch-topic"
_NAMES = st.one_of(st.sampled_from([KNOWN_TOPIC, KNOWN_GROUP]), st.text(max_size=12))

#: Seconds a request may take to be answered (or, after the client's EOF, closed).
ANSWER_TIMEOUT = 15.0
SOCKET_REQUEST_MAX_BYTES = 104857600


def fuzz(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------------------
# The server, its log, and what is stored before the fuzz
# --------------------------------------------------------------------------------------


class _Capture(logging.Handler):
    """Log records of the "pylog" loggers at WARNING and above (the server thread logs)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def since(self, mark: int) -> list[logging.LogRecord]:
        with self._lock_records:
            return list(self.records[mark:])

    def mark(self) -> int:
        with self._lock_records:
            return len(self.records)


def _batch(values, key=None, headers=()):
    b = RecordBatchBuilder()
    for v in values:
        b.append(None, key, v, list(headers))
    return bytes(b.build())


@dataclass
class _Acknowledged:
    """What the server answered success to, since the last check, that may change the
    stored data: the only changes the check accepts.  A garbage connection may also be
    closed with a request that was acted on but not yet answered (as Kafka drops the
    answers of a connection it closes); such a request may or may not have happened
    (``maybe_*``)."""

    topic_deleted: bool = False
    topic_maybe_deleted: bool = False
    partitions_created: bool = False
    low_watermarks: dict[int, int] = field(default_factory=dict)   # DeleteRecords, per partition
    maybe_low: dict[int, set] = field(default_factory=dict)
    appended: set[int] = field(default_factory=set)                # Produce (random bytes: never),
                                                                   # WriteTxnMarkers (a control batch)
    offsets: list[tuple] = field(default_factory=list)             # group events, in order


def _acknowledged_changes(ack: _Acknowledged, key: int, body, resp) -> None:
    """Add to ``ack`` what a request and its answer say changed in the stored data."""
    if key == ApiKey.DELETE_TOPICS:
        ack.topic_deleted |= any(r.name == KNOWN_TOPIC and r.error_code == 0 for r in resp.responses)
        if ack.topic_deleted:
            ack.offsets.append(("topic deleted",))
    elif key == ApiKey.DELETE_RECORDS:
        for t in resp.topics:
            for p in t.partitions:
                if t.name == KNOWN_TOPIC and p.error_code == 0:
                    ack.low_watermarks[p.partition_index] = max(
                        p.low_watermark, ack.low_watermarks.get(p.partition_index, 0))
    elif key == ApiKey.CREATE_PARTITIONS and not body.validate_only:
        ack.partitions_created |= any(r.name == KNOWN_TOPIC and r.error_code == 0 for r in resp.results)
    elif key == ApiKey.PRODUCE:
        for t in resp.responses:
            for p in t.partition_responses:
                if t.name == KNOWN_TOPIC and p.error_code == 0:
                    ack.appended.add(p.index)
    elif key == ApiKey.WRITE_TXN_MARKERS:
        for mk in resp.markers:
            for t in mk.topics:
                for p in t.partitions:
                    if t.name == KNOWN_TOPIC and p.error_code == 0:
                        ack.appended.add(p.partition_index)
    elif key == ApiKey.OFFSET_COMMIT and body.group_id == KNOWN_GROUP:
        sent = {(t.name, p.partition_index): p.committed_offset for t in body.topics for p in t.partitions}
        for t in resp.topics:
            for p in t.partitions:
                if p.error_code == 0 and (t.name, p.partition_index) in sent:
                    ack.offsets.append(("commit", (t.name, p.partition_index), sent[(t.name, p.partition_index)]))
    elif key == ApiKey.OFFSET_DELETE and body.group_id == KNOWN_GROUP and resp.error_code == 0:
        for t in resp.topics:
            for p in t.partitions:
                if p.error_code == 0:
                    ack.offsets.append(("delete", (t.name, p.partition_index)))
    elif key == ApiKey.DELETE_GROUPS:
        if any(r.group_id == KNOWN_GROUP and r.error_code == 0 for r in resp.results):
            ack.offsets.append(("group deleted",))


def _unanswered_changes(ack: _Acknowledged, key: int, body, stored_hw: dict[int, int]) -> None:
    """Add to ``ack`` what a request that was not answered may have changed."""
    if key == ApiKey.DELETE_TOPICS:
        if KNOWN_TOPIC in (body.topic_names or []):
            ack.topic_maybe_deleted = True
            ack.offsets.append(("topic deleted",))
    elif key == ApiKey.DELETE_RECORDS:
        for t in body.topics:
            for p in t.partitions:
                if t.name == KNOWN_TOPIC and p.partition_index in stored_hw:
                    low = stored_hw[p.partition_index] if p.offset == -1 else p.offset
                    ack.maybe_low.setdefault(p.partition_index, set()).add(low)
    elif key == ApiKey.CREATE_PARTITIONS:
        ack.partitions_created |= any(t.name == KNOWN_TOPIC for t in body.topics)
    elif key == ApiKey.WRITE_TXN_MARKERS:
        ack.appended |= {p for mk in body.markers for t in mk.topics if t.name == KNOWN_TOPIC
                         for p in t.partition_indexes}
    elif key == ApiKey.OFFSET_COMMIT and body.group_id == KNOWN_GROUP:
        for t in body.topics:
            for p in t.partitions:
                ack.offsets.append(("maybe", (t.name, p.partition_index), p.committed_offset))
    elif key == ApiKey.OFFSET_DELETE and body.group_id == KNOWN_GROUP:
        for t in body.topics:
            for p in t.partitions:
                ack.offsets.append(("maybe", (t.name, p.partition_index), -1))
    elif key == ApiKey.DELETE_GROUPS and KNOWN_GROUP in body.groups_names:
        ack.offsets.append(("topic deleted",))   # as for a deleted topic: old values or -1


def _batches_from(data: bytes, offset: int) -> bytes:
    """The stored batches from the one holding ``offset`` on (what a fetch there reads)."""
    return b"".join(bytes(b) for b in iter_batches(memoryview(data)) if b.last_offset >= offset)


class Fuzzed:
    def __init__(self, thread: ServerThread, capture: _Capture) -> None:
        self.thread = thread
        self.capture = capture
        self.host, self.port = thread.address
        self.bootstrap = f"{self.host}:{self.port}"
        self.stored: dict[int, tuple] = {}
        self.committed: dict = {}
        self.batches: dict[int, list[bytes]] = {}
        self.commits: dict = {}
        self.acknowledged = _Acknowledged()
        #: How often a fuzzed request changed the stored data (and it was restored).
        self.restored = 0
        self._ack_lock = threading.Lock()

    def connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=ANSWER_TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def observe(self, key: int, body, resp) -> None:
        """Note what an answered request changed in the stored data."""
        with self._ack_lock:
            _acknowledged_changes(self.acknowledged, key, body, resp)

    def observe_frames(self, request_frame: bytes, answer: bytes | None) -> None:
        """:meth:`observe` for raw frames (garbage that still decoded); ``answer`` None
        for a request that got no answer before its connection closed."""
        try:
            # As the server reads it: bytes after the body ignored.
            header, body = decode_request(request_frame, allow_trailing=True)
            if answer is None:
                with self._ack_lock:
                    _unanswered_changes(self.acknowledged, header.api_key, body,
                                        {p: v[1] for p, v in self.stored.items()})
                return
            _corr, resp = decode_response(header.api_key, header.api_version, answer)
        except (PylogError, ValueError):
            return    # not a request the server could have acted on
        self.observe(header.api_key, body, resp)

    @staticmethod
    def read_partition(c: WireClient, p: int) -> tuple[bytes, int, int]:
        pd = c.fetch(KNOWN_TOPIC, p, 0, max_wait_ms=0)
        if pd.error_code == 1:     # OFFSET_OUT_OF_RANGE: records were deleted; read from the start
            pd = c.fetch(KNOWN_TOPIC, p, c.list_offset(KNOWN_TOPIC, p, -2)[0], max_wait_ms=0)
        assert pd.error_code == 0, pd
        return bytes(pd.records), pd.high_watermark, pd.log_start_offset

    def snapshot(self, c: WireClient) -> tuple[dict, dict]:
        parts = {p: self.read_partition(c, p) for p in range(KNOWN_PARTITIONS)}
        committed = c.committed(KNOWN_GROUP, {KNOWN_TOPIC: list(range(KNOWN_PARTITIONS))})
        return parts, committed

    def store(self, c: WireClient, *, commit: bool = True) -> None:
        """(Re)create the stored topic and its records (and commit the group's offsets),
        then take them as what must not change without an acknowledged request."""
        if c.metadata([KNOWN_TOPIC]).topics[0].error_code == 0:
            c.delete_topic(KNOWN_TOPIC)
        c.create_topic(KNOWN_TOPIC, KNOWN_PARTITIONS)
        for p, batches in self.batches.items():
            for b in batches:
                assert c.produce(KNOWN_TOPIC, p, b).error_code == 0
        if commit:
            c.commit(KNOWN_GROUP, self.commits)
        self.stored, self.committed = self.snapshot(c)

    def _data_problems(self, c: WireClient, md, ack: _Acknowledged) -> tuple[list[str], bool]:
        """Problems with the stored records, and whether they changed (as acknowledged)."""
        t = md.topics[0]
        if ack.topic_maybe_deleted and not ack.topic_deleted:
            gone = t.error_code != 0 or not any(
                c.list_offset(KNOWN_TOPIC, p.partition_index, -1)[0] for p in t.partitions)
            ack.topic_deleted = gone
        if ack.topic_deleted:
            # Deleted wholly: gone, or (re)created by a fuzzed CreateTopics with empty logs.
            if t.error_code == 0:
                left = {p.partition_index: c.list_offset(KNOWN_TOPIC, p.partition_index, -1)[0]
                        for p in t.partitions}
                if any(left.values()):
                    return [f"{KNOWN_TOPIC} was deleted, yet holds records {left}"], True
            return [], True
        if t.error_code != 0:
            return [f"metadata of {KNOWN_TOPIC}: {t!r}"], False
        problems = []
        changed = False
        n = len(t.partitions)
        if n != KNOWN_PARTITIONS:
            if not (ack.partitions_created and n > KNOWN_PARTITIONS):
                problems.append(f"{KNOWN_TOPIC} has {n} partitions")
            changed = True
        for p in range(KNOWN_PARTITIONS):
            data, hw, start = now = self.read_partition(c, p)
            stored_data, stored_hw, _ = self.stored[p]
            if now == self.stored[p]:
                continue
            changed = True
            lows = ({ack.low_watermarks[p]} if p in ack.low_watermarks else set()) | ack.maybe_low.get(p, set())
            if lows:
                # DeleteRecords: the log starts where the answer said; the rest is intact.
                if start not in lows or (hw, data) != (stored_hw, _batches_from(stored_data, start)):
                    problems.append(f"partition {p} after DeleteRecords to {sorted(lows)}: "
                                    f"log start {start}, high watermark {hw} (stored {stored_hw}), "
                                    f"{len(data)} bytes")
            elif p in ack.appended:
                if not (data.startswith(stored_data) and hw > stored_hw and start == 0):
                    problems.append(f"partition {p}: an acknowledged append changed the stored records")
            else:
                problems.append(f"the stored records of partition {p} changed")
        return problems, changed

    def _offset_problems(self, committed: dict, ack: _Acknowledged) -> list[str]:
        """The committed offsets must be what the acknowledged group requests make them."""
        allowed = {tp: {off} for tp, off in self.committed.items()}
        for event in ack.offsets:
            if event[0] == "commit" and event[1] in allowed:
                allowed[event[1]] = {event[2]}
            elif event[0] == "maybe" and event[1] in allowed:
                allowed[event[1]] = allowed[event[1]] | {event[2]}
            elif event[0] == "delete" and event[1] in allowed:
                allowed[event[1]] = {-1}
            elif event[0] == "group deleted":
                allowed = {tp: {-1} for tp in allowed}
            elif event[0] == "topic deleted":
                # Kafka drops a deleted topic's offsets of groups not subscribed to it.
                allowed = {tp: vals | {-1} for tp, vals in allowed.items()}
        wrong = {tp: off for tp, off in committed.items() if off not in allowed.get(tp, {off})}
        return [f"the committed offsets changed: {committed}, allowed {allowed}"] if wrong else []

    def intact_problems(self) -> list[str]:
        """What is wrong after the fuzz, empty when nothing is: a fresh client gets
        Metadata, reads the stored records byte-for-byte as they were and sees the same
        committed offsets (or both changed exactly as an acknowledged request changed
        them: then they are stored again), and can still produce and fetch."""
        problems = []
        with self._ack_lock:
            ack, self.acknowledged = self.acknowledged, _Acknowledged()
        with WireClient(self.bootstrap, client_id="after-fuzz", timeout=ANSWER_TIMEOUT) as c:
            md = c.metadata([KNOWN_TOPIC])
            if (md.brokers[0].host, md.brokers[0].port) != (self.host, self.port):
                problems.append(f"metadata names broker {md.brokers[0]!r}")
            found, changed = self._data_problems(c, md, ack)
            problems += found
            committed = c.committed(KNOWN_GROUP, {KNOWN_TOPIC: list(range(KNOWN_PARTITIONS))})
            problems += self._offset_problems(committed, ack)
            if not problems and changed:
                # Stored again, so that later examples have the records to hit; the
                # committed offsets are taken as they now are (deleting the topic may
                # have dropped them), without waiting for fuzzed members to leave.
                self.store(c, commit=False)
                self.restored += 1
            elif not problems and committed != self.committed:
                self.committed = committed
                self.restored += 1
            value = uuid.uuid4().bytes
            res = c.produce(SCRATCH_TOPIC, 0, _batch([value]), acks=-1)
            if res.error_code != 0:
                problems.append(f"produce after the fuzz failed with error {res.error_code}")
            else:
                pd = c.fetch(SCRATCH_TOPIC, 0, res.base_offset, max_wait_ms=0)
                if pd.error_code != 0 or [r.value for r in _records(pd.records)][:1] != [value]:
                    problems.append(f"fetch after the fuzz: error {pd.error_code}, not the value produced")
        return problems

    def errors_since(self, mark: int) -> list[str]:
        """Messages logged at ERROR since ``mark``: a handler that crashed."""
        return [r.getMessage() for r in self.capture.since(mark) if r.levelno >= logging.ERROR]

    def lines_about(self, mark: int, peer: str) -> list[str]:
        return [r.getMessage() for r in self.capture.since(mark) if peer in r.getMessage()]


def _records(data):
    from pylog.records import iter_batches

    return [r for b in iter_batches(memoryview(bytes(data))) for r in b]


@pytest.fixture(scope="module")
def fz(tmp_path_factory):
    logger = logging.getLogger("pylog")
    capture = _Capture()
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.addHandler(capture)
    config = ServerConfig(log_dirs=str(tmp_path_factory.mktemp("fuzz")), listeners="127.0.0.1:0",
                          group_initial_rebalance_delay_ms=0, group_min_session_timeout_ms=1000,
                          offsets_topic_num_partitions=4)
    thread = ServerThread(config).start()
    try:
        f = Fuzzed(thread, capture)
        f.batches = {p: [_batch([f"stored-{p}-{i}-{j}".encode() * (j + 1) for j in range(5)],
                                key=b"k%d" % p, headers=[("h", b"v")]) for i in range(3)]
                     for p in range(KNOWN_PARTITIONS)}
        f.commits = {(KNOWN_TOPIC, 0): 4, (KNOWN_TOPIC, 1): 9, (KNOWN_TOPIC, 2): 15}
        with WireClient(f.bootstrap) as c:
            c.create_topic(SCRATCH_TOPIC, 1)
            f.store(c)
        assert [f.stored[p][1] for p in range(KNOWN_PARTITIONS)] == [15, 15, 15]
        assert f.committed == {(KNOWN_TOPIC, 0): 4, (KNOWN_TOPIC, 1): 9, (KNOWN_TOPIC, 2): 15}
        yield f
    finally:
        thread.stop()
        logger.removeHandler(capture)
        logger.setLevel(old_level)


# --------------------------------------------------------------------------------------
# (a) well-formed requests of every served API and version
# --------------------------------------------------------------------------------------


def _bound(value: int, limit: int) -> int:
    """Negative values kept (error paths), others folded into [0, limit)."""
    return value if value < 0 else value % limit


def _bounded_request(key: int, version: int) -> st.SearchStrategy:
    """A well-formed request whose answer does not take long: long polls and group
    timeouts folded into a second or two."""
    s = message_strategy(key, "request", version, strings=_NAMES)
    if key == ApiKey.FETCH:
        def fetch(r):
            r.max_wait_ms = _bound(r.max_wait_ms, 300)
            return r
        s = s.map(fetch)
    elif key == ApiKey.JOIN_GROUP:
        def join(r):
            # Valid session timeouts (group.min.session.timeout.ms=1000) stay under 2 s:
            # a member that never comes back expires quickly, and so do rebalances
            # waiting for it (v0's rebalance timeout is its session timeout).
            if r.session_timeout_ms >= 1000:
                r.session_timeout_ms = 1000 + r.session_timeout_ms % 1000
            r.rebalance_timeout_ms = _bound(r.rebalance_timeout_ms, 1500)
            return r
        s = s.map(join)
    elif key == ApiKey.CREATE_PARTITIONS:
        def grow(r):
            # The stored topic is named often: growing it by thousands of partitions
            # would only make the examples slow.  Counts from 100,000 up stay: the broker
            # must refuse them (more than its open-file limit can hold, or out of range).
            for t in r.topics:
                if t.count < 100_000:
                    t.count = _bound(t.count, 8)
            return r
        s = s.map(grow)
    return s


def _frame(key: int, version: int, corr: int, client_id, body) -> bytes:
    return segments_to_bytes(encode_request(key, version, corr, client_id, body))


def _client_ids() -> st.SearchStrategy:
    return st.one_of(st.none(), st.text(max_size=12))


def _send_well_formed(fz, key, version, corr, client_id, body) -> tuple[str, int | None, int | None]:
    """Send one well-formed request on a new connection: ``(outcome, expected
    correlation id, correlation id of the answer)``, outcome ``"answered"``, ``"timeout"``
    or ``"closed"``.  A Produce with acks=0 gets no answer and the connection goes on:
    then an ApiVersions request follows, and its answer must be the first one."""
    s = fz.connect()
    try:
        s.sendall(_frame(key, version, corr, client_id, body))
        answered_body = body
        if key == ApiKey.PRODUCE and body.acks == 0:
            key, version = ApiKey.API_VERSIONS, 0
            corr = corr + 1 if corr < 2**31 - 1 else 0
            answered_body = m.ApiVersionsRequest()
            s.sendall(_frame(key, version, corr, "fuzz", answered_body))
        try:
            answer = read_frame(s)
        except socket.timeout:
            return "timeout", corr, None
        except ConnectionError:
            return "closed", corr, None
        got, resp = decode_response(key, version, answer)
        if answered_body is body:
            fz.observe(key, body, resp)
        return "answered", corr, got
    finally:
        s.close()


def _draw_well_formed(data, key, version):
    body = data.draw(_bounded_request(key, version), label="request")
    corr = data.draw(st.integers(-2**31, 2**31 - 1), label="correlation_id")
    return body, corr, data.draw(_client_ids(), label="client_id")


@pytest.mark.parametrize(("key", "version"), SERVED, ids=SERVED_IDS)
@fuzz(5)
@given(data=st.data())
def test_well_formed_requests_are_answered(fz, key, version, data):
    mark = fz.capture.mark()
    body, corr, client_id = _draw_well_formed(data, key, version)
    outcome, expected, got = _send_well_formed(fz, key, version, corr, client_id, body)
    assert outcome == "answered", f"{api_name(key)} v{version}: {outcome} on a well-formed request {body!r}"
    assert got == expected
    assert fz.errors_since(mark) == []
    assert fz.intact_problems() == []


@pytest.mark.long
@pytest.mark.parametrize(("key", "version"), SERVED, ids=SERVED_IDS)
@fuzz(15)
@given(data=st.data())
def test_well_formed_requests_are_answered_long(fz, key, version, data):
    mark = fz.capture.mark()
    body, corr, client_id = _draw_well_formed(data, key, version)
    outcome, expected, got = _send_well_formed(fz, key, version, corr, client_id, body)
    assert outcome == "answered", f"{api_name(key)} v{version}: {outcome} on a well-formed request {body!r}"
    assert got == expected
    assert fz.errors_since(mark) == []
    assert fz.intact_problems() == []


@pytest.mark.parametrize("version", [10, 11])
def test_metadata_v10_v11_topic_by_id_is_invalid_request(fz, version):
    """Found by the fuzz above: Metadata v10-v11 requests carry topic ids in the schema,
    but their response cannot carry the null name of a topic asked for by id; the
    answer was an encoding failure logged at ERROR and a closed connection.  Kafka
    answers INVALID_REQUEST for every topic of such a request, and so must pylog."""
    mark = fz.capture.mark()
    T = m.MetadataRequest.MetadataRequestTopic
    for topics in ([T(topic_id=uuid.UUID(int=12345), name=None)],
                   [T(name=KNOWN_TOPIC), T(topic_id=uuid.UUID(int=1), name=None)],
                   [T(topic_id=uuid.UUID(int=7), name=KNOWN_TOPIC)]):
        body = m.MetadataRequest(topics=topics, allow_auto_topic_creation=False)
        s = fz.connect()
        try:
            s.sendall(_frame(ApiKey.METADATA, version, 77, "fuzz", body))
            got, resp = decode_response(ApiKey.METADATA, version, read_frame(s))
        finally:
            s.close()
        assert got == 77
        assert len(resp.topics) == len(topics)
        assert [t.error_code for t in resp.topics] == [42] * len(topics)   # INVALID_REQUEST
    assert fz.errors_since(mark) == []


# --------------------------------------------------------------------------------------
# (b) mutated frames, (c) random bytes and random headers
# --------------------------------------------------------------------------------------


_SPECIALS = [b"\xff", b"\x00", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
             b"\x80\x00\x00\x00", b"\xff\xff\xff\xff\x0f", b"\x00\x00\x00\x00"]

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("overwrite"), st.floats(0, 1, exclude_max=True), st.sampled_from(_SPECIALS)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(_SPECIALS)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(None)),
    st.tuples(st.just("extend"), st.just(None), st.binary(min_size=1, max_size=40)),
)

#: The size prefix after the body is mutated: truthful, or a lie.
_prefix = st.one_of(
    st.just(None),                                        # the body's length
    st.integers(-64, 64).filter(bool).map(lambda d: ("delta", d)),
    st.sampled_from([-1, -2**31, 0, 1, 7, SOCKET_REQUEST_MAX_BYTES, SOCKET_REQUEST_MAX_BYTES + 1,
                     2**31 - 1]).map(lambda n: ("set", n)),
    st.integers(-2**31, 2**31 - 1).map(lambda n: ("set", n)),
)


def _mutate(body: bytes, ops) -> bytes:
    b = bytearray(body)
    for op, where, arg in ops:
        if op == "extend":
            b += arg
            continue
        if not b:
            continue
        i = int(where * len(b))
        if op == "flip":
            b[i] ^= arg
        elif op == "overwrite":
            b[i:i + len(arg)] = arg
        elif op == "insert":
            b[i:i] = arg
        else:
            del b[i:]
    return bytes(b)


def _with_prefix(body: bytes, how) -> bytes:
    if how is None:
        n = len(body)
    elif how[0] == "delta":
        n = len(body) + how[1]
    else:
        n = how[1]
    return struct.pack(">i", n) + body


def _complete_frames(data: bytes) -> list[bytes]:
    """The frames a server can read from ``data`` (stopping at the first bad prefix)."""
    out = []
    pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">i", data, pos)
        if n < 0 or n > SOCKET_REQUEST_MAX_BYTES or pos + 4 + n > len(data):
            break
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _exchange(fz, wire: bytes) -> tuple[list[bytes], str]:
    """Send ``wire``, then EOF; read until the server closes.  Returns the response
    frames and the connection's peer name as the server logs it."""
    s = fz.connect()
    peer = "%s:%d" % s.getsockname()[:2]
    received = bytearray()
    try:
        try:
            s.sendall(wire)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass                      # closed by the server while we were still sending
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"the server neither answered nor closed within {ANSWER_TIMEOUT} s "
                        f"after the client's EOF; sent {wire[:64]!r}...")
    finally:
        s.close()
    frames = []
    pos = 0
    while pos < len(received):
        assert pos + 4 <= len(received), f"a partial size prefix at the end: {bytes(received[pos:])!r}"
        (n,) = struct.unpack_from(">i", received, pos)
        assert 4 <= n <= len(received) - pos - 4, f"a broken response frame (size {n})"
        frames.append(bytes(received[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return frames, peer


def _check_garbage(fz, wire: bytes) -> bool:
    """What the server may do with ``wire`` (then the client's EOF): answer the frames it
    can read, each answer carrying the frame's correlation id (only the first 8 bytes
    of a frame say which API, version and correlation id it is), or close the
    connection; log at most one WARNING-or-worse line about it and nothing at ERROR.
    Returns whether anything was answered."""
    mark = fz.capture.mark()
    answers, peer = _exchange(fz, wire)
    # Answers come in request order; a frame may go unanswered (a Produce with acks=0).
    pending = iter(_complete_frames(wire))
    for answer in answers:
        for frame in pending:
            if len(frame) >= 8 and frame[4:8] == answer[:4]:
                fz.observe_frames(frame, answer)
                break
            fz.observe_frames(frame, None)     # no answer: may still have been acted on
        else:
            pytest.fail(f"an answer {answer[:16]!r} whose correlation id is no request's")
    for frame in pending:
        fz.observe_frames(frame, None)
    assert fz.errors_since(mark) == []
    about = re.compile(re.escape(peer) + r"(?!\d)")
    noisy = [r for r in fz.capture.since(mark) if about.search(r.getMessage())]
    assert len(noisy) <= 1, [r.getMessage() for r in noisy]
    return bool(answers)


@st.composite
def _mutated_frames(draw):
    key, version = draw(st.sampled_from(SERVED))
    body = draw(_bounded_request(key, version))
    corr = draw(st.integers(-2**31, 2**31 - 1))
    frame = _frame(key, version, corr, draw(_client_ids()), body)
    ops = draw(st.lists(_mutation, min_size=1, max_size=4))
    return _with_prefix(_mutate(frame[4:], ops), draw(_prefix))


def _run_garbage(fz, strategy, max_examples: int) -> dict:
    """Run ``_check_garbage`` on ``max_examples`` drawn frames; returns how many were
    answered (at least one answer) and how many only closed."""
    stats = {"answered": 0, "closed": 0}

    @fuzz(max_examples)
    @given(wire=strategy)
    def run(wire):
        answered = _check_garbage(fz, wire)
        stats["answered" if answered else "closed"] += 1

    run()
    assert fz.intact_problems() == []
    return stats


def test_mutated_frames_answer_or_close_one_connection(fz):
    stats = _run_garbage(fz, _mutated_frames(), 300)
    # Both ways out were taken: mutated requests that still decode are answered, the
    # others close their connection.
    assert stats["answered"] > 0 and stats["closed"] > 0, stats


@pytest.mark.long
def test_mutated_frames_answer_or_close_one_connection_long(fz):
    stats = _run_garbage(fz, _mutated_frames(), 1200)
    assert stats["answered"] > 0 and stats["closed"] > 0, stats


def _random_header_frame(t) -> bytes:
    key, version, corr, client_id, body = t
    if client_id is None:
        cid = struct.pack(">h", -1)
    else:
        raw = client_id.encode()
        cid = struct.pack(">h", len(raw)) + raw
    payload = struct.pack(">hhi", key, version, corr) + cid + body
    return struct.pack(">i", len(payload)) + payload


_int16 = st.integers(-2**15, 2**15 - 1)
_random_wire = st.one_of(
    st.binary(max_size=300),                                                  # no prefix
    st.binary(max_size=300).map(lambda b: struct.pack(">i", len(b)) + b),     # a true prefix
    st.tuples(st.one_of(st.sampled_from(sorted(SERVED_VERSIONS)), _int16),    # a header
              st.one_of(st.integers(-1, 16), _int16),
              st.integers(-2**31, 2**31 - 1), _client_ids(),
              st.binary(max_size=200)).map(_random_header_frame),
)


def test_random_bytes_answer_or_close_one_connection(fz):
    stats = _run_garbage(fz, _random_wire, 300)
    # Random headers of served APIs with bodies that do not decode close the connection;
    # unserved API keys and versions are answered (UNSUPPORTED_VERSION).
    assert stats["answered"] > 0 and stats["closed"] > 0, stats


@pytest.mark.long
def test_random_bytes_answer_or_close_one_connection_long(fz):
    stats = _run_garbage(fz, _random_wire, 2000)
    assert stats["answered"] > 0 and stats["closed"] > 0, stats


def test_fresh_client_served_and_stored_data_unchanged_after_the_fuzz(fz):
    """Last in the module: after everything above, the stored records and offsets are as
    they were, a fresh client is served, and ApiVersions still advertises exactly the
    served table."""
    assert fz.intact_problems() == []
    # The fuzz reached the stored data: some fuzzed request changed it (and it was
    # checked to have changed exactly as the answer said, then stored again).
    assert fz.restored > 0
    with fz.connect() as s:
        s.sendall(_frame(ApiKey.API_VERSIONS, 3, 5, "after", m.ApiVersionsRequest(
            client_software_name="after", client_software_version="1")))
        got, resp = decode_response(ApiKey.API_VERSIONS, 3, read_frame(s))
    assert got == 5 and resp.error_code == 0
    assert {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys} == SERVED_VERSIONS
