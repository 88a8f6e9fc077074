"""Kafka Streams' exception handlers: deserialization, processing and production
handlers with CONTINUE / FAIL and the dead letter queue (KIP-1034 headers), and the
uncaught exception handler (REPLACE_THREAD, SHUTDOWN_CLIENT, SHUTDOWN_APPLICATION)
with the app's states."""

from __future__ import annotations

import threading

import pytest

import pylog
from pylog.streams import (Processor, PunctuationType, Serdes, StreamsBuilder, StreamsError, Topology,
                           TopologyTestDriver)
from pylog.streams.errors import (CONTINUE, FAIL, Response, State, StreamThreadExceptionResponse,
                                  build_dead_letter_queue_record)

from .test_runtime import read_all

S = Serdes.string()
I = Serdes.integer()
B = Serdes.bytes()


def _driver(config, build):
    b = StreamsBuilder()
    build(b)
    cfg = {"application.id": "h", **config}
    return TopologyTestDriver(b.build(), cfg)


def _headers(record):
    return {k: v.decode() for k, v in record.headers}


@pytest.mark.parametrize("handler", ["log_and_continue", "log_and_fail"])
def test_deserialization_errors_go_to_the_dead_letter_queue_with_kafkas_headers(handler):
    def build(b):
        b.stream("in", key_serde=S, value_serde=I).map_values(lambda v: v + 1).to("out", key_serde=S, value_serde=I)
    with _driver({"deserialization.exception.handler": handler, "errors.dead.letter.queue.topic.name": "dlq"},
                 build) as d:
        inp = d.create_input_topic("in", key_serde=B, value_serde=B)
        out = d.create_output_topic("out", key_serde=S, value_serde=I)
        dlq = d.create_output_topic("dlq", key_serde=B, value_serde=B)
        inp.pipe_input(b"k1", I.serialize(1), timestamp=10)
        if handler == "log_and_fail":
            with pytest.raises(StreamsError, match="deserialization"):
                inp.pipe_input(b"k2", b"bad", timestamp=20)
        else:
            inp.pipe_input(b"k2", b"bad", timestamp=20)
            inp.pipe_input(b"k3", I.serialize(3), timestamp=30)
        [r] = dlq.read_records_to_list()
        assert (r.key, r.value, r.timestamp) == (b"k2", b"bad", 20)
        h = _headers(r)
        assert sorted(h) == ["__streams.errors.exception", "__streams.errors.message", "__streams.errors.offset",
                             "__streams.errors.partition", "__streams.errors.stacktrace", "__streams.errors.topic"]
        assert h["__streams.errors.topic"] == "in" and h["__streams.errors.partition"] == "0"
        assert h["__streams.errors.offset"] == "1"
        assert h["__streams.errors.exception"].startswith("pylog.streams.serdes.SerializationError")
        assert h["__streams.errors.message"] in h["__streams.errors.exception"]
        assert "Traceback" in h["__streams.errors.stacktrace"]
        expected = [("k1", 2), ("k3", 4)] if handler == "log_and_continue" else [("k1", 2)]
        assert [(r.key, r.value) for r in out.read_records_to_list()] == expected


def test_a_custom_processing_handler_sees_the_failure_and_decides():
    seen = []

    def handler(context, record, exc):
        seen.append((context.topic, context.offset, context.processor_node_id, record.value, repr(exc)))
        if record.value == b"skip":
            return Response.resume([build_dead_letter_queue_record("my-dlq", b"K", record.value, context, exc)])
        return FAIL

    def build(b):
        b.stream("in", key_serde=B, value_serde=B).map_values(lambda v: v if v == b"ok" else 1 / 0,
                                                               named="divide").to("out")
    with _driver({"processing.exception.handler": handler}, build) as d:
        inp = d.create_input_topic("in", key_serde=B, value_serde=B)
        out = d.create_output_topic("out", key_serde=B, value_serde=B)
        dlq = d.create_output_topic("my-dlq", key_serde=B, value_serde=B)
        inp.pipe_input(b"a", b"ok", timestamp=1)
        inp.pipe_input(b"b", b"skip", timestamp=2)
        inp.pipe_input(b"c", b"ok", timestamp=3)
        with pytest.raises(StreamsError, match="divide"):
            inp.pipe_input(b"d", b"fail", timestamp=4)
        assert [r.value for r in out.read_records_to_list()] == [b"ok", b"ok"]
        [r] = dlq.read_records_to_list()
        assert (r.key, r.value, _headers(r)["__streams.errors.offset"]) == (b"K", b"skip", "1")
        assert [s[:4] for s in seen] == [("in", 1, "divide", b"skip"), ("in", 3, "divide", b"fail")]
        assert "ZeroDivisionError" in seen[0][4]


class _Refuse:
    """A production handler that drops what cannot be serialised."""

    def __init__(self):
        self.calls = []

    def handle_error(self, context, record, exc):
        self.calls.append(("send", record.topic))
        return CONTINUE

    def handle_serialization_error(self, context, record, exc, origin):
        self.calls.append(("serialization", origin, record.topic, record.key, record.value))
        return CONTINUE


def _int_sink(b):
    b.stream("in", key_serde=S, value_serde=S).map_values(str.upper).to("out", key_serde=S, value_serde=I)


def _int_key_sink(b):
    b.stream("in", key_serde=S, value_serde=S).to("out", key_serde=I, value_serde=S)


def test_production_handler_serialization_errors_default_fail_custom_continue():
    with _driver({}, _int_sink) as d:
        inp = d.create_input_topic("in", key_serde=S, value_serde=S)
        with pytest.raises(StreamsError, match="serialization"):
            inp.pipe_input("k", "not an int", timestamp=1)
    handler = _Refuse()
    with _driver({"production.exception.handler": handler}, _int_sink) as d:
        inp = d.create_input_topic("in", key_serde=S, value_serde=S)
        out = d.create_output_topic("out", key_serde=S, value_serde=S)
        inp.pipe_input("k", "not an int", timestamp=1)
        assert out.read_records_to_list() == []
        # the record as the sink was given it, not yet serialised
        assert handler.calls == [("serialization", "VALUE", "out", "k", "NOT AN INT")]
    handler = _Refuse()
    with _driver({"production.exception.handler": handler}, _int_key_sink) as d:
        d.create_input_topic("in", key_serde=S, value_serde=S).pipe_input("x", "v", timestamp=1)
        assert handler.calls == [("serialization", "KEY", "out", "x", "v")]
        # a batch through the fused loop (the runtime's path) tells the handler the same
        d.task.process_batch("in", [b"y", b"z"], [b"w", b"u"], [2, 3], [1, 2])
        assert handler.calls[1:] == [("serialization", "KEY", "out", "y", "w"), ("serialization", "KEY", "out", "z", "u")]
        assert d.task._fused["in"] is not None


def test_a_record_too_large_goes_to_the_production_handler(tmp_path):
    handler = _Refuse()
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("in", 1)
        client.create_topic("out", 1)
        p = client.producer()
        for v in (b"small", b"huge", b"tiny"):
            p.send("in", key=b"k", value=v)
        p.flush()
        p.close()
        b = StreamsBuilder()
        b.stream("in", key_serde=B, value_serde=B).map_values(
            lambda v: v * 2_000_000 if v == b"huge" else v).to("out", key_serde=B, value_serde=B)
        app = b.build(application_id="too-large", config={"production.exception.handler": handler,
                                                            "state.dir": str(tmp_path / "state")})
        app.run(client, until_idle=True)
        assert handler.calls == [("send", "out")]
        assert [r.value for r in _read_all(client, "out")] == [b"small", b"tiny"]
        assert app.state is State.NOT_RUNNING


def _read_all(client, topic):
    return sorted(read_all(client, topic), key=lambda r: (r.partition, r.offset))


def _produce(client, topic, values, partition=None):
    p = client.producer()
    for v in values:
        p.send(topic, key=b"k", value=v, partition=partition)
    p.flush()
    p.close()


def _failing_app(tmp_path, name, boom, fail_times=None):
    """in -> upper-case -> out; a value of ``boom`` raises (the first ``fail_times``
    times; always without)."""
    failures = []

    def upper(v):
        if v == boom and (fail_times is None or len(failures) < fail_times):
            failures.append(v)
            raise RuntimeError(f"cannot process {v!r}")
        return v.upper()
    b = StreamsBuilder()
    b.stream("in", key_serde=B, value_serde=B).map_values(upper).to("out", key_serde=B, value_serde=B)
    app = b.build(application_id=name, config={"commit.interval.ms": 60_000, "state.dir": str(tmp_path / name)})
    states = []
    app.set_state_listener(lambda new, old: states.append((old, new)))
    return app, failures, states


def test_replace_thread_rebuilds_and_processes_again_at_least_once(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("in", 1)
        client.create_topic("out", 1)
        _produce(client, "in", [b"a", b"b", b"boom", b"c"])
        app, failures, states = _failing_app(tmp_path, "replace", b"boom", fail_times=1)
        handled = []
        app.set_uncaught_exception_handler(
            lambda exc: handled.append(exc) or StreamThreadExceptionResponse.REPLACE_THREAD)
        app.run(client, until_idle=True, idle_polls=10)
        assert len(handled) == 1 and isinstance(handled[0], StreamsError)
        # nothing was committed before the failure: a and b are processed again
        assert [r.value for r in _read_all(client, "out")] == [b"A", b"B", b"A", b"B", b"BOOM", b"C"]
        assert app.state is State.NOT_RUNNING
        assert (State.RUNNING, State.REBALANCING) in states
        assert states[-2:] == [(State.RUNNING, State.PENDING_SHUTDOWN), (State.PENDING_SHUTDOWN, State.NOT_RUNNING)]
        # the committed offsets are past everything: a rerun writes nothing more
        app2, _, _ = _failing_app(tmp_path, "replace", b"never")
        app2.run(client, until_idle=True)
        assert len(_read_all(client, "out")) == 6


def test_shutdown_client_stops_this_instance_in_error(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("in", 1)
        client.create_topic("out", 1)
        _produce(client, "in", [b"a", b"boom", b"c"])
        app, failures, states = _failing_app(tmp_path, "shut", b"boom")
        app.set_uncaught_exception_handler(lambda exc: StreamThreadExceptionResponse.SHUTDOWN_CLIENT)
        app.run(client, until_idle=True, idle_polls=10)
        assert app.state is State.ERROR
        assert states[-2:] == [(State.RUNNING, State.PENDING_ERROR), (State.PENDING_ERROR, State.ERROR)]
        assert failures == [b"boom"] and app.tasks == {}
        # no handler: run raises, and the app ends in ERROR too
        app2, _, _ = _failing_app(tmp_path, "shut", b"boom")
        with pytest.raises(StreamsError, match="cannot process"):
            app2.run(client, until_idle=True)
        assert app2.state is State.ERROR


def test_shutdown_application_stops_the_other_instance_too(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("in", 2)
        client.create_topic("out", 2)
        apps = []
        running = []
        for i in range(2):
            app, failures, states = _failing_app(tmp_path / str(i), "whole-app", b"boom")
            responses = []
            app.set_uncaught_exception_handler(
                lambda exc, r=responses: r.append(exc) or StreamThreadExceptionResponse.SHUTDOWN_APPLICATION)
            up = threading.Event()
            app.set_state_listener(lambda new, old, s=states, up=up: (s.append((old, new)),
                                                                     new is State.RUNNING and up.set()))
            apps.append((app, failures, states, responses))
            running.append(up)
        threads = [threading.Thread(target=a[0].run, args=(client,), daemon=True) for a in apps]
        threads[0].start()
        assert running[0].wait(30)
        threads[1].start()
        assert running[1].wait(30)
        # both are members now (the second has an assignment): one partition each
        _produce(client, "in", [b"boom"], partition=0)
        for t in threads:
            t.join(60)
        alive = [t.is_alive() for t in threads]
        for app, *_ in apps:
            app.stop()
        assert alive == [False, False]
        assert [app.state for app, *_ in apps] == [State.ERROR, State.ERROR]
        assert sorted(len(a[3]) for a in apps) == [0, 1]     # one failed, the other was told
        # the first instance went through the rebalance the second one's join caused
        first = apps[0][2]
        assert first[:2] == [(State.CREATED, State.REBALANCING), (State.REBALANCING, State.RUNNING)]
        assert (State.RUNNING, State.REBALANCING) in first[2:]
        for app, failures, states, responses in apps:
            # the failing instance stops from RUNNING; the other one on the assignment
            # that carries the request (a rebalance ending)
            before = State.RUNNING if responses else State.REBALANCING
            assert states[-2:] == [(before, State.PENDING_ERROR), (State.PENDING_ERROR, State.ERROR)]


def test_replace_thread_under_exactly_once_aborts_and_the_output_is_exact(tmp_path):
    """A count per key, failing once on one record: the replaced thread's transaction
    is aborted, the store is rebuilt from the committed changelog, and read_committed
    sees each count once."""
    failures = []

    def check(k, v):
        if v == b"boom" and not failures:
            failures.append(v)
            raise RuntimeError("once")
        return v
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("in", 1)
        client.create_topic("counts", 1)
        _produce(client, "in", [b"a", b"boom", b"c", b"d"])
        b = StreamsBuilder()
        (b.stream("in", key_serde=S, value_serde=B).map_values(check, named="check").group_by_key()
         .count(materialized="n").to_stream().to("counts", key_serde=S, value_serde=Serdes.long()))
        app = b.build(application_id="eos-replace", config={"processing_guarantee": "exactly_once_v2",
                                                             "state.dir": str(tmp_path / "state")})
        app.set_uncaught_exception_handler(lambda exc: StreamThreadExceptionResponse.REPLACE_THREAD)
        app.run(client, until_idle=True, idle_polls=10)
        c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False, isolation_level="read_committed")
        c.assign([("counts", 0)])
        end = c.end_offsets([("counts", 0)])[("counts", 0)]
        seen = []
        while c.position(("counts", 0)) < end:
            seen.extend(Serdes.long().deserialize(r.value) for r in c.poll(timeout_ms=200))
        c.close(autocommit=False)
        assert failures == [b"boom"]
        assert seen == [1, 2, 3, 4]
        assert app.state is State.NOT_RUNNING


class _Ticker(Processor):
    """A wall-clock punctuator that raises on its first call."""

    calls = []

    def init(self, context):
        super().init(context)
        context.schedule(10, PunctuationType.WALL_CLOCK_TIME, self.tick)

    def tick(self, now):
        self.calls.append(now)
        if len(self.calls) == 1:
            raise ValueError("first tick")

    def process(self, record):
        pass


@pytest.mark.parametrize("handler", ["log_and_continue", "log_and_fail"])
def test_punctuation_errors_go_to_the_processing_handler(handler):
    seen = []

    def decide(context, record, exc):
        seen.append((context.processor_node_id, context.topic, record, repr(exc)))
        return CONTINUE if handler == "log_and_continue" else FAIL
    _Ticker.calls = []
    topo = Topology().add_source("src", "in").add_processor("ticker", _Ticker, "src")
    with TopologyTestDriver(topo, {"application.id": "p", "processing.exception.handler": decide},
                            initial_wall_clock_time_ms=0) as d:
        if handler == "log_and_fail":
            with pytest.raises(StreamsError, match="punctuate"):
                d.advance_wall_clock_time(10)
        else:
            for _ in range(3):
                d.advance_wall_clock_time(10)
            assert _Ticker.calls == [10, 20, 30]
        assert seen == [("ticker", None, None, "ValueError('first tick')")]
