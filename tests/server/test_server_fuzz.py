"""Hypothesis against one live in-process server: well-formed requests of every served
API and version, mutated frames, random bytes and random headers.

What must hold (the issue's words): a well-formed request is answered with a frame
carrying its correlation id (Produce with acks=0: nothing, and the connection goes on);
garbage gets Kafka's error code or closes that one connection with at most one log line;
no handler ever crashes (nothing logged at ERROR); the server keeps serving a fresh
client; records and offsets stored before the fuzz are byte-for-byte unchanged.

Long polls are bounded in the generated requests (Fetch ``max_wait_ms``, JoinGroup
session/rebalance timeouts) so a well-formed request is answered within seconds; values
below zero are kept, so the error paths still see them.  CI runs derandomized (the
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
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey, api_name
from pylog.protocol.codec import decode_response, encode_request
from pylog.protocol.segments import segments_to_bytes
from pylog.records import RecordBatchBuilder
from pylog.server.config import ServerConfig
from pylog.server.handlers import SERVED_VERSIONS
from pylog.server.server import ServerThread
from pylog.server.wire_client import WireClient
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

#: Names longer than the fuzz's strings (at most 12 characters): no generated request
#: can name them, so nothing the fuzz does may change them.
KNOWN_TOPIC = "fuzz-known-records"
KNOWN_GROUP = "fuzz-known-group"
SCRATCH_TOPIC = "fuzz-scratch-topic"
KNOWN_PARTITIONS = 3

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


class Fuzzed:
    def __init__(self, thread: ServerThread, capture: _Capture) -> None:
        self.thread = thread
        self.capture = capture
        self.host, self.port = thread.address
        self.bootstrap = f"{self.host}:{self.port}"
        self.stored: dict[int, tuple] = {}
        self.committed: dict = {}

    def connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=ANSWER_TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def snapshot(self, c: WireClient) -> tuple[dict, dict]:
        parts = {}
        for p in range(KNOWN_PARTITIONS):
            pd = c.fetch(KNOWN_TOPIC, p, 0, max_wait_ms=0)
            assert pd.error_code == 0
            parts[p] = (bytes(pd.records), pd.high_watermark, pd.log_start_offset)
        committed = c.committed(KNOWN_GROUP, {KNOWN_TOPIC: list(range(KNOWN_PARTITIONS))})
        return parts, committed

    def intact_problems(self) -> list[str]:
        """What is wrong after the fuzz, empty when nothing is: a fresh client gets
        Metadata, reads the stored records byte-for-byte as they were, sees the same
        committed offsets, and can still produce and fetch."""
        problems = []
        with WireClient(self.bootstrap, client_id="after-fuzz", timeout=ANSWER_TIMEOUT) as c:
            md = c.metadata([KNOWN_TOPIC])
            if (md.brokers[0].host, md.brokers[0].port) != (self.host, self.port):
                problems.append(f"metadata names broker {md.brokers[0]!r}")
            if md.topics[0].error_code != 0 or len(md.topics[0].partitions) != KNOWN_PARTITIONS:
                problems.append(f"metadata of {KNOWN_TOPIC}: {md.topics[0]!r}")
            parts, committed = self.snapshot(c)
            if parts != self.stored:
                problems.append("the stored records changed")
            if committed != self.committed:
                problems.append(f"the committed offsets changed: {committed} != {self.committed}")
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
        with WireClient(f.bootstrap) as c:
            c.create_topic(KNOWN_TOPIC, KNOWN_PARTITIONS)
            c.create_topic(SCRATCH_TOPIC, 1)
            for p in range(KNOWN_PARTITIONS):
                for i in range(3):
                    values = [f"stored-{p}-{i}-{j}".encode() * (j + 1) for j in range(5)]
                    assert c.produce(KNOWN_TOPIC, p, _batch(values, key=b"k%d" % p,
                                                            headers=[("h", b"v")])).error_code == 0
            c.commit(KNOWN_GROUP, {(KNOWN_TOPIC, 0): 4, (KNOWN_TOPIC, 1): 9, (KNOWN_TOPIC, 2): 15})
            f.stored, f.committed = f.snapshot(c)
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
    s = message_strategy(key, "request", version)
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
        if key == ApiKey.PRODUCE and body.acks == 0:
            key, version = ApiKey.API_VERSIONS, 0
            corr = corr + 1 if corr < 2**31 - 1 else 0
            s.sendall(_frame(key, version, corr, "fuzz", m.ApiVersionsRequest()))
        try:
            answer = read_frame(s)
        except socket.timeout:
            return "timeout", corr, None
        except ConnectionError:
            return "closed", corr, None
        got, _resp = decode_response(key, version, answer)
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
        assert any(len(f) >= 8 and f[4:8] == answer[:4] for f in pending), \
            f"an answer {answer[:16]!r} whose correlation id is no request's"
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
    with fz.connect() as s:
        s.sendall(_frame(ApiKey.API_VERSIONS, 3, 5, "after", m.ApiVersionsRequest(
            client_software_name="after", client_software_version="1")))
        got, resp = decode_response(ApiKey.API_VERSIONS, 3, read_frame(s))
    assert got == 5 and resp.error_code == 0
    assert {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys} == SERVED_VERSIONS
