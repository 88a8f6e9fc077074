"""The producer's sender keeps requests moving while others are out (issue #12).

A proxy stands in front of a real ``pylog serve`` as a two-broker cluster: it listens as
node 0 and node 1, forwards every request to the one server, and rewrites Metadata so
even partitions are led by node 0 and odd ones by node 1.  Its hooks hold a Produce
answer, refuse a Produce without forwarding it (NOT_LEADER_OR_FOLLOWER: nothing
appended) or replace an answer after the server appended it (a lost answer).  That shows
what the sender does: a leader that does not answer holds back only its own partitions;
several requests of one partition are out at once; a retriable failure of an early
request, with later ones of the same partition out (and refused by the broker as
OUT_OF_ORDER_SEQUENCE), ends with every record appended once, in order; so do random
failures on both leaders (refusals, lost answers, a broker that lost the producer's
state) with batches of every partition out.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import deque

import pytest

from pylog.client.kafka.transport import KafkaTransport
from pylog.client.producer import Producer
from pylog.protocol import decode_request, decode_response, encode_response, messages as m, segments_to_bytes
from pylog.protocol.apis import ApiKey
from pylog.protocol.produce_reply import produce_response_frame
from tests.client.helpers import records_of
from tests.client.kafka.fakes import _recv_exact

NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
WAIT_S = 30


def _read_frame(sock: socket.socket) -> bytes | None:
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    return _recv_exact(sock, struct.unpack(">i", head)[0])


class _Pending:
    """A request a proxy connection answers in turn: forwarded (its answer read from
    upstream) or answered by the proxy (``frame``)."""

    __slots__ = ("api_key", "version", "corr", "parts", "action", "hold")

    def __init__(self, header, parts, action, hold):
        self.api_key, self.version, self.corr = header.api_key, header.api_version, header.correlation_id
        self.parts = parts
        self.action = action
        self.hold = hold


class ClusterProxy:
    """Two proxy brokers in front of one server (see the module docstring).

    ``on_produce(n, node, parts)`` decides for the ``n``-th Produce request (from 0;
    ``parts``: its ``(topic, partition)`` list), in the order requests arrive on a
    connection: an action, ``"forward"``, ``"refuse"`` (answer NOT_LEADER_OR_FOLLOWER for
    every partition without forwarding: nothing appended), ``"refuse_sequence"`` (the same
    with OUT_OF_ORDER_SEQUENCE_NUMBER: a broker that lost the producer's state) or
    ``"lose_answer"`` (forward, then answer REQUEST_TIMED_OUT: appended, but the
    producer cannot know), or ``(action, event)``: the answer is held until
    the event is set (the connection's later answers wait behind it, as a broker's do).
    ``produced`` lists ``(node, parts)`` of every Produce request received; ``answered``
    counts the Produce answers handed back.  An ``on_produce`` taking a fourth argument
    also gets the request's batches as ``(topic, partition, producer_id, epoch,
    base_sequence)``; ``batches_seen`` holds those of the requests forwarded.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.on_produce = lambda n, node, parts: "forward"
        self.produced: list[tuple[int, list[tuple[str, int]]]] = []
        self.batches_seen: set[tuple[str, int, int, int, int]] = set()
        self.answered = 0
        self.cond = threading.Condition()
        self._listeners = []
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._holds: list[threading.Event] = []
        self._stopping = False
        for _ in (0, 1):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            self._listeners.append(s)
        self.ports = [s.getsockname()[1] for s in self._listeners]
        for node, s in enumerate(self._listeners):
            self._start(self._accept, node, s)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    def wait_for_requests(self, n: int) -> None:
        """Until ``n`` Produce requests have arrived."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.produced) >= n, WAIT_S):
                raise AssertionError(f"the proxy did not see {n} produce requests within {WAIT_S} s: "
                                     f"{self.produced}")

    def stop(self) -> None:
        self._stopping = True
        for e in self._holds:
            e.set()
        for s in self._listeners:
            try:
                s.shutdown(socket.SHUT_RDWR)     # wakes the accept() (close alone does not)
            except OSError:
                pass
            s.close()
        for s in list(self._socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(WAIT_S)
        for s in self._socks:
            s.close()

    # -- inside

    def _start(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self, node: int, listener: socket.socket) -> None:
        while not self._stopping:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._socks += [client, upstream]
            pending: deque[_Pending | None] = deque()
            have = threading.Condition()
            self._start(self._requests, node, client, upstream, pending, have)
            self._start(self._answers, client, upstream, pending, have)

    def _requests(self, node, client, upstream, pending, have) -> None:
        try:
            while (frame := _read_frame(client)) is not None:
                header, body = decode_request(frame)
                parts: list[tuple[str, int]] = []
                action, hold = "forward", None
                if header.api_key == ApiKey.PRODUCE:
                    parts = [(t.name, p.index) for t in body.topic_data for p in t.partition_data]
                    batches = [(t.name, p.index) + struct.unpack_from(">qhi", bytes(p.records), 43)
                               for t in body.topic_data for p in t.partition_data]
                    with self.cond:
                        if self.on_produce.__code__.co_argcount == 4:
                            action = self.on_produce(len(self.produced), node, parts, batches)
                        else:
                            action = self.on_produce(len(self.produced), node, parts)
                        if isinstance(action, tuple):
                            action, hold = action
                            self._holds.append(hold)
                        self.produced.append((node, parts))
                        self.cond.notify_all()
                if not action.startswith("refuse"):
                    if header.api_key == ApiKey.PRODUCE:
                        self.batches_seen.update(batches)
                    upstream.sendall(struct.pack(">i", len(frame)) + frame)
                with have:
                    pending.append(_Pending(header, parts, action, hold))
                    have.notify()
        except OSError:
            pass
        with have:
            pending.append(None)
            have.notify()

    def _answers(self, client, upstream, pending, have) -> None:
        try:
            while True:
                with have:
                    have.wait_for(lambda: pending)
                    entry = pending.popleft()
                if entry is None:
                    return
                refused = entry.action.startswith("refuse")
                answer = None if refused else _read_frame(upstream)
                if answer is None and not refused:
                    return
                if entry.hold is not None:
                    entry.hold.wait(WAIT_S)
                if entry.action == "refuse_sequence":
                    out = self._produce_error(entry, OUT_OF_ORDER_SEQUENCE_NUMBER)
                elif entry.action == "lose_answer":
                    out = self._produce_error(entry, REQUEST_TIMED_OUT)
                elif entry.action == "refuse":
                    out = self._produce_error(entry, NOT_LEADER_OR_FOLLOWER)
                else:
                    out = self._rewrite(entry, answer)
                if entry.api_key == ApiKey.PRODUCE:
                    with self.cond:
                        self.answered += 1
                        self.cond.notify_all()
                client.sendall(out)
        except OSError:
            return

    @staticmethod
    def _produce_error(entry: _Pending, code: int) -> bytes:
        topics: dict[str, list] = {}
        for topic, partition in entry.parts:
            topics.setdefault(topic, []).append((partition, code, -1, -1, -1, "moved (proxy)"))
        return produce_response_frame(entry.version, entry.corr, list(topics.items()))

    def _rewrite(self, entry: _Pending, answer: bytes) -> bytes:
        """Metadata names the two proxies and spreads the leaders; the rest goes as is."""
        if entry.api_key != ApiKey.METADATA:
            return struct.pack(">i", len(answer)) + answer
        _, resp = decode_response(entry.api_key, entry.version, answer)
        B = m.MetadataResponse.MetadataResponseBroker
        resp.brokers = [B(node_id=n, host="127.0.0.1", port=port) for n, port in enumerate(self.ports)]
        resp.controller_id = 0
        for t in resp.topics:
            for p in t.partitions:
                p.leader_id = p.partition_index % 2
                p.replica_nodes = p.isr_nodes = [p.leader_id]
        return segments_to_bytes(encode_response(entry.api_key, entry.version, entry.corr, resp))


class _Client:
    """What tests.client.helpers.records_of needs of a client."""

    def __init__(self, transport):
        self.transport = transport

    def num_partitions(self, topic):
        return self.transport.topic_metadata(topic)[0]


def _values(transport, topic, partition=0):
    return [r.value for r in records_of(_Client(transport), topic)[partition]]


@pytest.fixture
def proxy(kafka_server):
    px = ClusterProxy(kafka_server.port)
    yield px
    px.stop()


@pytest.fixture
def transport(proxy):
    t = KafkaTransport(proxy.bootstrap, request_timeout_ms=WAIT_S * 1000)
    yield t
    t.close()


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_leader_holding_its_answer_does_not_delay_another_leaders_partitions(proxy, transport, idempotent):
    topic = f"pipe-leaders-{idempotent}"
    transport.create_topic(topic, 2)
    gate = threading.Event()
    proxy.on_produce = lambda n, node, parts: ("forward", gate) if node == 0 else "forward"
    config = {} if idempotent else {"acks": 1, "enable_idempotence": False}
    p = Producer(transport, linger_ms=0, **config)
    try:
        held = p.send(topic, b"held", partition=0)     # node 0 leads partition 0
        proxy.wait_for_requests(1)
        # Partition 1's leader answers while partition 0's request is out.
        others = [p.send(topic, b"other-%d" % i, partition=1) for i in range(3)]
        assert [h.result(timeout=WAIT_S).offset for h in others] == [0, 1, 2]
        assert not held.done()
        gate.set()
        assert held.result(timeout=WAIT_S).offset == 0
    finally:
        gate.set()
        p.close()
    assert _values(transport, topic, 0) == [b"held"]


def test_several_requests_of_one_partition_are_out_at_once(proxy, transport):
    transport.create_topic("pipe-in-flight", 1)
    gate = threading.Event()
    # The epoch's first batch is appended before the partition pipelines; hold the rest.
    proxy.on_produce = lambda n, node, parts: "forward" if n == 0 else ("forward", gate)
    p = Producer(transport, linger_ms=0, max_in_flight=5)
    try:
        assert p.send("pipe-in-flight", b"first").result(timeout=WAIT_S).offset == 0
        handles = []
        for i in range(3):
            handles.append(p.send("pipe-in-flight", b"%d" % i))
            proxy.wait_for_requests(i + 2)       # each goes while the ones before are out
        assert proxy.answered == 1 and not any(h.done() for h in handles)
        gate.set()
        assert [h.result(timeout=WAIT_S).offset for h in handles] == [1, 2, 3]
    finally:
        gate.set()
        p.close()
    assert _values(transport, "pipe-in-flight") == [b"first", b"0", b"1", b"2"]


@pytest.mark.parametrize("config", [{"max_in_flight": 1}, {"acks": 1, "enable_idempotence": False}],
                         ids=["max_in_flight_1", "not_idempotent"])
def test_one_request_of_a_partition_out_with_max_in_flight_1_or_without_idempotence(proxy, transport, config):
    """Without sequence numbers a retried request could overtake a later one: a partition
    of a producer without idempotence has one request out, as with max_in_flight=1."""
    topic = f"pipe-one-{len(config)}"
    transport.create_topic(topic, 2)
    gate = threading.Event()
    proxy.on_produce = lambda n, node, parts: ("forward", gate) if n == 1 else "forward"
    p = Producer(transport, linger_ms=0, **config)
    try:
        assert p.send(topic, b"first", partition=0).result(timeout=WAIT_S).offset == 0
        second = p.send(topic, b"second", partition=0)
        proxy.wait_for_requests(2)
        third = p.send(topic, b"third", partition=0)
        # A record of the other leader's partition, sent after the third: once it is
        # answered the sender has been past the third, which did not go (still 3 requests).
        assert p.send(topic, b"other", partition=1).result(timeout=WAIT_S).offset == 0
        assert transport.requests_sent[ApiKey.PRODUCE] == 3 and not third.done()
        gate.set()
        assert [second.result(timeout=WAIT_S).offset, third.result(timeout=WAIT_S).offset] == [1, 2]
    finally:
        gate.set()
        p.close()


@pytest.mark.parametrize("failure", ["refuse", "lose_answer", "refuse_sequence"])
def test_a_failure_with_later_requests_out_keeps_order_exactly_once(proxy, transport, failure):
    """The second request fails while the three after it are out: ``refuse`` does not
    append it, so the broker refuses the later ones as OUT_OF_ORDER_SEQUENCE (to be
    retried with it, not failed); ``lose_answer`` appends it, and the later ones too, and
    only the answer says otherwise (the retry is recognised as a duplicate).  Neither
    needs a new epoch.  ``refuse_sequence`` answers it OUT_OF_ORDER_SEQUENCE itself (the
    broker lost track of the producer): once the later answers are in, the producer
    bumps its epoch and sends all four again, renumbered.  Every time, every record is
    appended once, in order."""
    topic = f"pipe-retry-{failure}"
    transport.create_topic(topic, 1)
    hold = threading.Event()
    proxy.on_produce = lambda n, node, parts: (failure, hold) if n == 1 else "forward"
    p = Producer(transport, linger_ms=0, max_in_flight=5, retry_backoff_ms=1, retry_backoff_max_ms=5)
    try:
        assert p.send(topic, b"0").result(timeout=WAIT_S).offset == 0
        epoch = p.producer_epoch        # (the producer id comes before the first batch)
        handles = []
        for i in range(1, 5):
            handles.append(p.send(topic, b"%d" % i))
            proxy.wait_for_requests(i + 1)
        assert not any(h.done() for h in handles)
        hold.set()        # the failure, then the three answers queued behind it
        offsets = [h.result(timeout=WAIT_S).offset for h in handles]
    finally:
        hold.set()
        p.close()
    assert offsets == [1, 2, 3, 4]
    assert len(proxy.produced) > 5                      # sent again
    assert p.producer_epoch == (epoch + 1 if failure == "refuse_sequence" else epoch)
    assert _values(transport, topic) == [b"%d" % i for i in range(5)]     # once each, in order


@pytest.mark.parametrize("seed", range(1, 9))
def test_random_failures_with_requests_out_lose_and_duplicate_nothing(proxy, transport, seed):
    """Random Produce failures (refused, answer lost, OUT_OF_ORDER_SEQUENCE) on two
    leaders while batches of every partition are out: each partition's log is what was
    sent to it, once, in send order."""
    import random
    rng = random.Random(seed)
    topic = f"pipe-random-{seed}"
    transport.create_topic(topic, 4)
    actions = ["forward"] * 14 + ["refuse", "refuse", "lose_answer", "lose_answer", "refuse_sequence"]

    def plan(n, node, parts, batches):
        action = rng.choice(actions) if n else "forward"
        if action == "refuse_sequence" and any(b in proxy.batches_seen for b in batches):
            # A broker that lost the producer's state loses it for batches it never
            # saw too; for a retry of one it appended it would answer "duplicate".
            return "forward"
        return action

    proxy.on_produce = plan
    p = Producer(transport, linger_ms=0, batch_size=256, max_in_flight=5, retry_backoff_ms=1,
                 retry_backoff_max_ms=2)
    sent: dict[int, list[bytes]] = {i: [] for i in range(4)}
    try:
        handles = []
        for i in range(1500):
            part = rng.randrange(4)
            value = b"%d-%05d" % (part, i)
            sent[part].append(value)
            handles.append(p.send(topic, value, partition=part))
        p.flush(WAIT_S)
        failed = [h.exception() for h in handles if h.failed()]
    finally:
        p.close()
    assert not failed, f"seed {seed}: {failed[:3]}"
    assert sum(1 for _, parts in proxy.produced) > 20
    for part in range(4):
        assert _values(transport, topic, part) == sent[part], f"seed {seed}, partition {part}"
