"""StreamTask.process_batch (fused stateless chains) against StreamTask.process, record by
record: the same output, stream time, metrics and errors on the same seeded input."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pylog.streams import Serdes, StreamsBuilder, StreamsError
from pylog.streams.processor import PunctuationType
from pylog.streams.task import StreamTask

S, L, B = Serdes.string(), Serdes.long(), Serdes.bytes()


class _Sends:
    """A record collector that keeps what is sent (one by one)."""

    def __init__(self) -> None:
        self.sent: list = []

    def send(self, topic, key, value, timestamp, headers, partitioner, partition) -> None:
        self.sent.append((topic, key, value, timestamp, tuple(headers or ()), partition))


class _BatchSends(_Sends):
    """... and one that also takes a batch's output at once, as the runtime's does."""

    def send_many(self, topic, keys, values, timestamps, partitioner) -> None:
        for k, v, t in zip(keys, values, timestamps):
            self.send(topic, k, v, t, (), partitioner, None)


def _task(topology, collector, handler="log_and_fail"):
    config = {"default.deserialization.exception.handler": handler, "processing.exception.handler": handler}
    return StreamTask(topology, topology.nodes, application_id="app", task_id="0_0", config=config,
                      collector=collector)


def _records(seed, n=300, bad_every=0):
    r = random.Random(seed)
    keys, values, tss = [], [], []
    for i in range(n):
        keys.append(None if r.random() < 0.05 else b"k%d" % r.randrange(20))
        if bad_every and i % bad_every == bad_every - 1:
            values.append(b"\xff\xfe")          # not UTF-8: the string serde fails on it
        else:
            values.append(None if r.random() < 0.05 else str(r.randrange(-5, 100)).encode())
        tss.append(-1 if r.random() < 0.02 else r.randrange(1000))
    return keys, values, tss


def _compare(build, seed, handler="log_and_fail", bad_every=0, fused=True, collector=_BatchSends):
    keys, values, tss = _records(seed, bad_every=bad_every)
    offsets = np.arange(100, 100 + len(tss), dtype=np.int64)
    one, many = _Sends(), collector()
    t1, t2 = _task(build(), one, handler), _task(build(), many, handler)
    err1 = err2 = None
    try:
        for i in range(len(tss)):
            t1.process("in", keys[i], values[i], tss[i], (), int(offsets[i]))
    except StreamsError as exc:
        err1 = str(exc)
    try:
        t2.process_batch("in", keys, values, tss, offsets)
    except StreamsError as exc:
        err2 = str(exc)
    assert (t2._fused["in"] is not None) == fused
    assert err1 == err2
    assert many.sent == one.sent
    assert t2.stream_time == t1.stream_time
    assert t2.metrics.counts == t1.metrics.counts
    return one.sent, err1


def _chain():
    b = StreamsBuilder()
    (b.stream("in", key_serde=S, value_serde=S)
     .filter(lambda k, v: v is not None and len(v) > 1)
     .filter_not(lambda k, v: v.startswith("9"))
     .map_values(lambda v: int(v) * 2)
     .map_values(lambda k, v: f"{k}:{v}")
     .select_key(lambda k, v: v[-1:])
     .map(lambda k, v: (k + "!", v.upper()))
     .peek(lambda k, v: None)
     .to("out", key_serde=S, value_serde=S))
    return b.build()


def _bytes_chain():
    # the bytes serdes are not called in the loop: their checks are inlined
    b = StreamsBuilder()
    (b.stream("in", key_serde=B, value_serde=B)
     .filter(lambda k, v: v is None or len(v) != 2)
     .map_values(lambda v: v if v is None or v[:1] != b"7" else v.decode())   # str: the sink's serde refuses it
     .to("out", key_serde=B, value_serde=B))
    return b.build()


def _division():
    b = StreamsBuilder()
    (b.stream("in", key_serde=B, value_serde=S)
     .map_values(lambda v: 1000 // int(v))
     .to("out", value_serde=L))
    return b.build()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("collector", [_Sends, _BatchSends])
def test_stateless_chain_matches_record_by_record(seed, collector):
    sent, err = _compare(_chain, seed, collector=collector)
    assert sent and err is None


@pytest.mark.parametrize("handler", ["log_and_fail", "log_and_continue"])
def test_bytes_chain_and_its_serialization_error(handler):
    sent, err = _compare(_bytes_chain, 3, handler)
    # a serialization error fails the task under either handler, as record by record
    assert err is not None and "SerializationError" in err and "KSTREAM-SINK" in err


@pytest.mark.parametrize("handler", ["log_and_fail", "log_and_continue"])
@pytest.mark.parametrize("seed", range(3))
def test_exception_handlers_match(handler, seed):
    # values 0 raise ZeroDivisionError in the user's function; every 37th value does not
    # deserialise
    sent, err = _compare(_division, seed, handler, bad_every=37)
    if handler == "log_and_fail":
        assert err is not None and "offset=" in err
    else:
        assert err is None and sent


def test_foreach_ends_a_chain():
    seen = []

    def build():
        seen.clear()
        b = StreamsBuilder()
        b.stream("in", key_serde=S, value_serde=S).filter(lambda k, v: k is not None).foreach(
            lambda k, v: seen.append((k, v)))
        return b.build()

    keys, values, tss = _records(7)
    expected = [(None if k is None else k.decode(), None if v is None else v.decode())
                for k, v, t in zip(keys, values, tss) if k is not None and t >= 0]
    t = _task(build(), _Sends())
    t.process_batch("in", keys, values, tss, np.arange(len(tss)))
    assert t._fused["in"] is not None and seen == expected


def test_other_shapes_go_record_by_record():
    def flat():
        b = StreamsBuilder()
        b.stream("in", key_serde=S, value_serde=S).flat_map_values(lambda v: [v, v]).to("out")
        return b.build()

    def fan_out():
        b = StreamsBuilder()
        s = b.stream("in", key_serde=S, value_serde=S)
        s.to("a")
        s.map_values(lambda v: v).to("b")
        return b.build()

    _compare(flat, 1, fused=False)
    _compare(fan_out, 2, fused=False)


def test_stream_time_punctuation_goes_record_by_record():
    fired = []

    class Punctuated:
        def init(self, context):
            self.context = context
            context.schedule(100, PunctuationType.STREAM_TIME, fired.append)

        def process(self, record):
            self.context.forward(record)

    b = StreamsBuilder()
    (b.stream("in", key_serde=S, value_serde=S).process(Punctuated)
     .map_values(lambda v: v).to("out", key_serde=S, value_serde=S))
    topology = b.build()
    one, many = _Sends(), _BatchSends()
    keys, values, tss = _records(5)
    t1 = _task(topology, one)
    for i in range(len(tss)):
        t1.process("in", keys[i], values[i], tss[i], (), i)
    expected = list(fired)
    fired.clear()
    _task(topology, many).process_batch("in", keys, values, tss, np.arange(len(tss)))
    assert fired == expected and many.sent == one.sent


def test_runtime_output_keeps_timestamps_order_and_headers(tmp_path):
    """End to end on pylog.open: runs of equal timestamps go out through send_batch, the
    rest (keyless records, headers) one by one; per partition the output is the input
    filtered and mapped, in order, timestamps and headers kept."""
    import pylog

    r = random.Random(11)
    # produced in parts, one flush each, so that the fetched batches are: keyed runs of
    # equal timestamps; records with headers; one timestamp each; some keyless
    parts = [[(b"k%d" % r.randrange(50), 1_000 + i // 40, None) for i in range(1000)],
             [(b"h", 2_000 + i, [("h", b"%d" % i)]) for i in range(10)],
             [(b"k%d" % r.randrange(50), 3_000 + i, None) for i in range(500)],
             [(None if i % 3 == 0 else b"k", 4_000 + i // 40, None) for i in range(500)]]
    rows = []
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("in", 1)
        client.create_topic("out", 1)
        p = client.producer()
        for part in parts:
            for k, ts, h in part:
                v = b"%05d" % len(rows)
                rows.append((k, v, ts, h))
                p.send("in", key=k, value=v, timestamp_ms=ts, headers=h)
            p.flush()
        p.close()
        b = StreamsBuilder()
        (b.stream("in", key_serde=B, value_serde=B).filter(lambda k, v: v[-1:] != b"3")
         .map_values(lambda v: v + b"!").to("out"))
        b.build(application_id="fused").run(client, until_idle=True, idle_polls=2, poll_timeout_ms=50)
        c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
        c.assign([("out", 0)])
        got = []
        while len(got) < sum(1 for row in rows if row[1][-1:] != b"3"):
            got.extend((m.key, m.value, m.timestamp, list(m.headers) or None) for m in c.poll(timeout_ms=200))
        c.close(autocommit=False)
    assert got == [(k, v + b"!", ts, h) for k, v, ts, h in rows if v[-1:] != b"3"]
