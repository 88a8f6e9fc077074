"""Production errors that a send's result reports (Kafka's RecordCollectorImpl send
callback), on the embedded broker and on ``pylog serve``: the production exception
handler is asked, CONTINUE drops the record and goes on, FAIL stops the app before the
input is committed past the record, and RETRY (KIP-1065) of a retriable error processes
again from the last committed offsets, so nothing is lost.

The broker refuses a record the producer accepted: the output topic's
``max.message.bytes`` (or ``min.insync.replicas``) is changed while the app runs, after
the app's producer has learnt the topic's limits, so the refusal comes back with the
batch's answer and not from ``send``.
"""

from __future__ import annotations

import pytest

import pylog
from pylog.errors import RecordTooLargeError
from pylog.streams import Serdes, StreamsBuilder, StreamsError
from pylog.streams.errors import DefaultProductionExceptionHandler, ErrorHandlerContext, ProducerRecord, Response

from server.conftest import serve  # noqa: F401  (the `pylog serve` factory fixture)

B = Serdes.bytes()
BIG = b"x" * 3000


def _topology(alter):
    b = StreamsBuilder()
    b.stream("in", key_serde=B, value_serde=B).peek(lambda k, v: alter(v)).to("out")
    return b


def _fill(client, values):
    client.create_topic("in", 1)
    client.create_topic("out", 1)
    p = client.producer(linger_ms=0)
    for i, v in enumerate(values):
        p.send("in", key=b"k%d" % i, value=v).result()
    p.close()


def _values(client, topic, isolation_level="read_uncommitted"):
    """Every record of ``topic`` (partition 0) up to its end now."""
    c = client.consumer(enable_auto_commit=False, auto_offset_reset="earliest", isolation_level=isolation_level)
    c.assign([(topic, 0)])
    end = c.end_offsets([(topic, 0)])[(topic, 0)]
    out = []
    while c.position((topic, 0)) < end:     # (transaction markers hold offsets too)
        out.extend(r.value for r in c.poll(timeout_ms=200))
    c.close()
    return out


def _committed(client, app_id):
    got = client.fetch_offsets(app_id, {"in": [0]}).topics.get("in", {}).get(0)
    return None if got is None or got.offset < 0 else got.offset


class _Recorder:
    """A production handler (a plain function) that keeps what it was given."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def __call__(self, context, record, exc):
        self.calls.append((context, record, exc))
        return self.answer(context, record, exc)


def _run(client, alter, handler, app_id="app", **config):
    # one record per batch, so the broker refuses the big record alone
    cfg = {"max.poll.records": 1, "production.exception.handler": handler, "producer.batch.size": 1, **config}
    _topology(alter).build(application_id=app_id, config=cfg).run(client, until_idle=True, idle_polls=2,
                                                                   poll_timeout_ms=20)


def _shrink_out_on(client, marker, **configs):
    done = []

    def alter(v):
        if v == marker and not done:
            done.append(True)
            client.alter_configs("out", configs or {"max.message.bytes": "1000"})
    return alter


def test_continue_drops_the_refused_record_and_goes_on(tmp_path):
    with pylog.open(str(tmp_path / "data")) as client:
        _fill(client, [b"a", b"alter", BIG, b"b"])
        handler = _Recorder(lambda c, r, e: Response.resume())
        _run(client, _shrink_out_on(client, b"alter"), handler, state_dir=str(tmp_path / "state"))
        assert _values(client, "out") == [b"a", b"alter", b"b"]
        assert _committed(client, "app") == 4
        (context, record, exc), = handler.calls
        assert isinstance(exc, RecordTooLargeError)
        assert isinstance(context, ErrorHandlerContext) and isinstance(record, ProducerRecord)
        assert (record.topic, record.key, record.value) == ("out", b"k2", BIG)
        # where the task is when it hears of the failure (Kafka's callback reads the
        # task's context then): the refused record's input or a later one
        assert (context.topic, context.task_id) == ("in", "0_0") and context.offset >= 2


def test_fail_stops_the_app_before_the_input_is_committed_past_the_record(tmp_path):
    with pylog.open(str(tmp_path / "data")) as client:
        _fill(client, [b"a", b"alter", BIG, b"b", b"c"])
        with pytest.raises(StreamsError, match="RecordTooLargeError"):
            _run(client, _shrink_out_on(client, b"alter"), "default", commit_interval_ms=0)
        committed = _committed(client, "app")
        assert committed is None or committed <= 2


def test_retry_of_an_error_that_is_not_retriable_is_fail(tmp_path):
    with pylog.open(str(tmp_path / "data")) as client:
        _fill(client, [b"a", b"alter", BIG, b"b"])
        handler = _Recorder(lambda c, r, e: Response.retry())
        with pytest.raises(StreamsError, match="RecordTooLargeError"):
            _run(client, _shrink_out_on(client, b"alter"), handler, commit_interval_ms=0)
        assert len(handler.calls) == 1
        committed = _committed(client, "app")
        assert committed is None or committed <= 2


def test_the_default_handler_retries_a_retriable_error_and_fails_any_other():
    h = DefaultProductionExceptionHandler()
    h.configure({})
    ctx = ErrorHandlerContext("in", 0, 5, (), "sink", "0_0", 1, None, None)
    rec = ProducerRecord("out", None, 1, b"k", b"v")
    from pylog.errors import NotEnoughReplicasError
    assert h.handle_error(ctx, rec, NotEnoughReplicasError()).result.name == "RETRY"
    assert h.handle_error(ctx, rec, RecordTooLargeError()).result.name == "FAIL"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_retry_of_a_retriable_error_processes_again_from_the_committed_offsets(tmp_path, guarantee):
    with pylog.open(str(tmp_path / "data")) as client:
        values = [b"a", b"alter", b"c", b"d"]
        _fill(client, values)

        def answer(context, record, exc):
            client.alter_configs("out", {"min.insync.replicas": "1"})   # the replicas are back
            return Response.retry()
        handler = _Recorder(answer)
        # acks=all refused while min.insync.replicas (2) is not met on one node: retried
        # by the producer until its delivery timeout, then reported
        _run(client, _shrink_out_on(client, b"alter", **{"min.insync.replicas": "2"}), handler,
             commit_interval_ms=0, state_dir=str(tmp_path / "state"), processing_guarantee=guarantee,
             **{"producer.delivery.timeout.ms": 300})
        assert handler.calls and all(exc.retriable for _, _, exc in handler.calls)
        out = _values(client, "out")
        if guarantee == "exactly_once_v2":     # each once: the aborted attempt is not read
            assert _values(client, "out", "read_committed") == values
        assert set(out) >= set(values)              # nothing lost (at-least-once: maybe twice)
        assert _committed(client, "app") == len(values)


def test_remote_producer_failures_reach_the_handler(serve, tmp_path):  # noqa: F811
    import threading

    from server.util import wait_for

    server = serve()
    with pylog.connect(server.bootstrap) as client:
        _fill(client, [b"a", b"alter", BIG, b"b"])
        handler = _Recorder(lambda c, r, e: Response.resume())
        app = _topology(_shrink_out_on(client, b"alter")).build(application_id="app", config={
            "max.poll.records": 1, "production.exception.handler": handler, "producer.batch.size": 1,
            "commit.interval.ms": 0, "state.dir": str(tmp_path / "state")})
        errors = []

        def run():
            try:
                app.run(client, poll_timeout_ms=20)
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)
        t = threading.Thread(target=run)
        t.start()
        try:      # the group's join over the network takes a while: wait for the commit
            wait_for(lambda: errors or _committed(client, "app") == 4, "the app to commit its input")
        finally:
            app.stop()
            t.join()
        assert not errors
        assert _values(client, "out") == [b"a", b"alter", b"b"]
        (context, record, exc), = handler.calls
        assert isinstance(exc, RecordTooLargeError) and record.value == BIG
        assert _committed(client, "app") == 4


def test_a_processing_handler_cannot_retry():
    # RETRY is a production handler's answer only (Kafka's processing handler has none):
    # from the processing handler it fails the task
    from pylog.streams import TopologyTestDriver

    def boom(k, v):
        raise ValueError("no")
    b = StreamsBuilder()
    b.stream("in", key_serde=B, value_serde=B).map_values(boom).to("out")
    calls = []

    def handler(context, record, exc):
        calls.append(exc)
        return Response.retry()
    with TopologyTestDriver(b.build(), {"application.id": "app", "processing.exception.handler": handler}) as d:
        with pytest.raises(StreamsError, match="ValueError"):
            d.pipe_raw("in", b"k", b"v", 1)
    assert len(calls) == 1


def test_retry_at_send_of_a_retriable_error_corrupts_the_task():
    # a retriable error raised by send itself: RETRY is TaskCorruptedError (a StreamsError,
    # so no processing handler sees it)
    from pylog.errors import NotEnoughReplicasError
    from pylog.streams.errors import TaskCorruptedError
    from pylog.streams.task import StreamTask

    class Refusing:
        def send(self, topic, key, value, timestamp, headers, partitioner, partition):
            raise NotEnoughReplicasError("out-0: 1 in sync, 2 needed")
    b = StreamsBuilder()
    b.stream("in", key_serde=B, value_serde=B).to("out")
    t = b.build()
    task = StreamTask(t, t.nodes, application_id="app", task_id="0_0", collector=Refusing(),
                      config={"processing.exception.handler": "log_and_continue"})
    with pytest.raises(TaskCorruptedError, match="RETRY") as info:
        task.process("in", b"k", b"v", 1)
    assert info.value.task_ids == ["0_0"]


def test_a_failed_send_batch_reports_each_of_its_records(tmp_path):
    from pylog.streams.errors import DeliveryWatch
    from pylog.streams.task import StreamTask

    with pylog.open(str(tmp_path / "data")) as client:
        client.create_topic("out", 1)
        producer = client.producer(linger_ms=0)
        producer.send("out", value=b"x").result()           # the producer learns the topic's limits
        client.alter_configs("out", {"max.message.bytes": "1000"})

        class Batches:
            """The runtime collector's send_many contract over the real producer."""

            def send_many(self, topic, keys, values, timestamps, partitioner):
                return [(producer.send_batch(topic, values, keys, None, timestamps[0]), 0, len(values))]
        handler = _Recorder(lambda c, r, e: Response.resume())
        b = StreamsBuilder()
        b.stream("in", key_serde=B, value_serde=B).to("out")
        t = b.build()
        watch = DeliveryWatch(Batches())
        task = StreamTask(t, t.nodes, application_id="app", task_id="0_0", collector=watch,
                          config={"production.exception.handler": handler})
        watch.task = task
        watch.send_many("out", [b"k1", b"k2"], [BIG, BIG + b"y"], [5, 5], None)
        producer.flush()
        watch.check()
        assert [(r.key, r.value, type(e)) for _, r, e in handler.calls] == [
            (b"k1", BIG, RecordTooLargeError), (b"k2", BIG + b"y", RecordTooLargeError)]
        assert task.metrics.get("dropped-records") == 2
        producer.close()


def test_retry_at_the_last_commit_leaves_the_input_for_the_next_run(tmp_path):
    # No commit in the loop: the refusal is handled at the last commit; run returns and
    # the input stays at the committed offsets, so the next run produces what was lost.
    with pylog.open(str(tmp_path / "data")) as client:
        values = [b"a", b"alter", b"c", b"d"]
        _fill(client, values)

        def answer(context, record, exc):
            client.alter_configs("out", {"min.insync.replicas": "1"})
            return Response.retry()
        handler = _Recorder(answer)
        alter = _shrink_out_on(client, b"alter", **{"min.insync.replicas": "2"})
        config = dict(commit_interval_ms=3_600_000, state_dir=str(tmp_path / "state"),
                      **{"producer.delivery.timeout.ms": 300})
        _run(client, alter, handler, **config)
        assert handler.calls and all(exc.retriable for _, _, exc in handler.calls)
        assert _committed(client, "app") in (None, len(values))
        _run(client, alter, handler, **config)
        assert _committed(client, "app") == len(values)
        assert set(_values(client, "out")) >= set(values)
