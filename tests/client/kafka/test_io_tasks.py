"""I/O tasks of the network client, and the remote producer sending from the I/O thread.

NetworkClient.add_task: a woken step runs on the I/O thread (a wake from the step itself
too), a step that asks for a timer runs again without a wake and one that does not
waits for the next wake, an exception in a step is logged and the task keeps working,
``on_close`` runs when the client stops unless the task was cancelled, a cancelled task
never runs and leaves no wake queued, and a closed client refuses new tasks.

The producer over KafkaTransport: its Produce requests are built and sent on the I/O
thread (from a send at once, after a linger), while the handles' callbacks run on the
sender thread as documented; a step that finds the sender holding its state asks the
sender for the step and sends nothing meanwhile; a transport closed under the producer
hands every step to the sender, which fails the sends instead of leaving them queued.
"""

from __future__ import annotations

import logging
import threading

import pytest

from pylog.client.kafka.transport import KafkaTransport
from pylog.client.producer import Producer
from pylog.errors import IllegalStateError, PylogError
from pylog.protocol import messages as m
from pylog.protocol.apis import ApiKey
from tests.server.util import unique

WAIT_S = 30


def _round_trip(client) -> None:
    """One request answered: the I/O loop has turned since the call."""
    client.send_to_any(ApiKey.METADATA, m.MetadataRequest(topics=[])).result(WAIT_S)


def test_a_woken_step_runs_on_the_io_thread_and_what_it_sends_is_answered(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    _round_trip(client)
    threads: list[threading.Thread] = []
    futures = []
    ran = threading.Event()

    def step():
        threads.append(threading.current_thread())
        futures.append(client.send_to_any(ApiKey.METADATA, m.MetadataRequest(topics=[])))
        ran.set()
        return None

    task = client.add_task(step)
    task.wake()
    assert ran.wait(WAIT_S)
    assert threads == [client._thread]
    assert futures[0].result(WAIT_S).brokers


def test_a_step_asking_for_its_timer_runs_again_unwoken_and_one_that_does_not_waits(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    runs = []
    third, fourth = threading.Event(), threading.Event()

    def step():
        runs.append(1)
        if len(runs) < 3:
            return 0.0          # again as soon as the loop turns
        (third if len(runs) == 3 else fourth).set()
        return None             # only when woken

    task = client.add_task(step)
    task.wake()
    assert third.wait(WAIT_S)
    _round_trip(client)
    _round_trip(client)
    assert len(runs) == 3       # no timer asked for: the loop turned without it
    task.wake()
    assert fourth.wait(WAIT_S) and len(runs) == 4


def test_a_wake_from_the_step_itself_runs_it_once_more(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    runs = []
    again = threading.Event()
    holder = {}

    def step():
        runs.append(1)
        if len(runs) == 1:
            holder["task"].wake()
            holder["task"].wake()       # (several wakes before it runs make one run)
        else:
            again.set()
        return None

    holder["task"] = task = client.add_task(step)
    task.wake()
    assert again.wait(WAIT_S)
    _round_trip(client)
    assert len(runs) == 2


def test_a_failing_step_is_logged_and_the_task_keeps_working(kafka_server, make_client, caplog):
    client = make_client(kafka_server.bootstrap)
    runs = []
    second = threading.Event()

    def step():
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("a bug of the layer above")
        second.set()
        return None

    task = client.add_task(step)
    with caplog.at_level(logging.ERROR, logger="pylog.client.kafka"):
        task.wake()
        _round_trip(client)
        assert len(runs) == 1
        task.wake()
        assert second.wait(WAIT_S)
    assert any("I/O task" in r.getMessage() and r.exc_info for r in caplog.records)
    _round_trip(client)         # the I/O thread is alive


def test_a_cancelled_task_never_runs_and_leaves_no_wake_behind(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    runs = []
    woken_then_cancelled = client.add_task(lambda: runs.append("a"))
    cancelled_then_woken = client.add_task(lambda: runs.append("b"))
    done = threading.Event()

    def on_io_thread():             # (no step can run meanwhile: this is the I/O thread)
        woken_then_cancelled.wake()
        woken_then_cancelled.cancel()
        done.set()

    driver = client.add_task(on_io_thread)
    driver.wake()
    assert done.wait(WAIT_S)
    driver.cancel()
    cancelled_then_woken.cancel()
    cancelled_then_woken.wake()
    _round_trip(client)
    assert runs == [] and not client._tasks
    assert not client._woken    # (a wake left queued would keep the loop from sleeping)


def test_on_close_runs_when_the_client_stops_unless_cancelled(kafka_server, make_client):
    client = make_client(kafka_server.bootstrap)
    closed: list[tuple[str, threading.Thread]] = []
    kept = client.add_task(lambda: None, lambda: closed.append(("kept", threading.current_thread())))
    dropped = client.add_task(lambda: None, lambda: closed.append(("dropped", threading.current_thread())))
    dropped.cancel()
    io_thread = client._thread
    client.close()
    assert closed == [("kept", io_thread)]
    kept.wake()                 # harmless once closed
    with pytest.raises(IllegalStateError):
        client.add_task(lambda: None)


# ----------------------------------------------------------------------- the producer


@pytest.fixture
def transport(kafka_server):
    t = KafkaTransport(kafka_server.bootstrap, request_timeout_ms=WAIT_S * 1000)
    yield t
    t.close()


def _spy_produce(t: KafkaTransport) -> list[threading.Thread]:
    """The threads that call produce_async from now on (the producer binds it when made)."""
    threads: list[threading.Thread] = []
    real = t.produce_async

    def spy(work, **kw):
        threads.append(threading.current_thread())
        return real(work, **kw)

    t.produce_async = spy       # type: ignore[method-assign]
    return threads


@pytest.mark.parametrize("linger_ms", [0, 20])
def test_the_remote_producer_sends_on_the_io_thread_and_calls_back_on_the_sender(transport, linger_ms):
    topic = unique("io-send")
    transport.create_topic(topic, 1)
    threads = _spy_produce(transport)
    p = Producer(transport, linger_ms=linger_ms)
    try:
        called = []
        done = threading.Event()
        h = p.send(topic, b"a").add_callback(lambda md: (called.append(threading.current_thread()), done.set()))
        assert h.result(WAIT_S).offset == 0
        assert done.wait(WAIT_S)
        more = [p.send(topic, b"%d" % i) for i in range(20)]
        assert [x.result(WAIT_S).offset for x in more] == list(range(1, 21))
    finally:
        p.close()
    # The I/O thread sends; the sender thread sends too when it held the sender's state
    # as a send came (its first step, a metadata refresh), by design (Producer._io_step),
    # so only "the I/O thread sent" is certain.
    assert threads and transport.net._thread in threads
    assert set(threads) <= {transport.net._thread, p._thread}
    assert called == [p._thread]


def test_the_io_step_hands_over_to_the_sender_while_the_sender_holds_its_state(transport):
    topic = unique("io-handover")
    transport.create_topic(topic, 1)
    threads = _spy_produce(transport)
    p = Producer(transport, linger_ms=0)
    try:
        assert p.send(topic, b"first").result(WAIT_S).offset == 0
        asked = threading.Event()
        want = p._want_sender

        def spy_want():
            want()
            asked.set()

        p._want_sender = spy_want       # type: ignore[method-assign]
        _round_trip(transport.net)      # the step woken by the first answer has run
        sent_before = len(threads)
        with p._step_lock:              # the sender's state is held (as by a sender step)
            h = p.send(topic, b"second")
            assert asked.wait(WAIT_S)   # the I/O step could not take it: the sender is asked
            assert len(threads) == sent_before and not h.done()
        # Sent once the state is free (by the sender's step, or by a step of the I/O
        # thread woken meanwhile: both take the state first), and only once.
        assert h.result(WAIT_S).offset == 1
        assert p.send(topic, b"third").result(WAIT_S).offset == 2
        assert threads[-1] is transport.net._thread  # the I/O thread sends again
    finally:
        p.close()


def test_a_transport_closed_under_the_producer_fails_its_sends(kafka_server):
    topic = unique("io-closed")
    t = KafkaTransport(kafka_server.bootstrap, request_timeout_ms=WAIT_S * 1000)
    t.create_topic(topic, 1)
    p = Producer(t, linger_ms=0)
    try:
        assert p.send(topic, b"a").result(WAIT_S).offset == 0
        t.close()                       # the I/O thread stops: the sender takes every step
        assert p._io is None
        h = p.send(topic, b"b")
        with pytest.raises(PylogError):
            h.result(WAIT_S)
    finally:
        p.close(timeout=WAIT_S)
        t.close()
