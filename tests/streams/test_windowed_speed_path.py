"""The fused windowed aggregation (StreamTask.process_batch over a time-window count,
reduce or aggregate, see pylog.streams._fused) against StreamTask.process record by
record: on the same seeded input (out of order, late, null keys and values, negative
timestamps) both give the same output and changelog records per topic, the same store
contents, stream time, metrics and errors, with the in-memory and the RocksDB store."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pylog.streams import Serdes, StreamsBuilder, StreamsError, TimeWindows
from pylog.streams.options import Materialized
from pylog.streams.task import StreamTask

S, L, B = Serdes.string(), Serdes.long(), Serdes.bytes()


class _Sends:
    """A record collector that keeps what is sent, by topic."""

    def __init__(self) -> None:
        self.by_topic: dict = {}

    def send(self, topic, key, value, timestamp, headers, partitioner, partition) -> None:
        self.by_topic.setdefault(topic, []).append((key, value, timestamp, tuple(headers or ()), partition))

    def send_many(self, topic, keys, values, timestamps, partitioner) -> None:
        for k, v, t in zip(keys, values, timestamps):
            self.send(topic, k, v, t, (), partitioner, None)


def _records(seed, n=400, nulls=True):
    r = random.Random(seed)
    keys, values, tss = [], [], []
    t = 1000
    for _ in range(n):
        keys.append(None if nulls and r.random() < 0.03 else b"k%d" % r.randrange(15))
        values.append(None if nulls and r.random() < 0.03 else str(r.randrange(-5, 100)).encode())
        t += r.randrange(0, 40)
        late = r.random() < 0.2
        tss.append(-1 if nulls and r.random() < 0.01 else max(0, t - r.randrange(0, 400)) if late else t)
    return keys, values, tss


def _count(windows, store_type="in_memory", logged=True, pre_filter=False, serde=S, out_value=L):
    def build():
        b = StreamsBuilder()
        s = b.stream("in", key_serde=serde, value_serde=serde)
        if pre_filter:
            s = s.filter(lambda k, v: v is None or not v.endswith("7"))
        m = Materialized("w", store_type=store_type)
        if not logged:
            m = m.with_logging_disabled()
        s.group_by_key().windowed_by(windows).count(materialized=m).to_stream().to("out", value_serde=out_value)
        return b.build()
    return build


def _aggregate(windows, store_type="in_memory", fail_on=None):
    def agg(k, v, a):
        if fail_on is not None and v == fail_on:
            raise ValueError(f"cannot add {v!r}")
        return a + [int(v)]

    def build():
        b = StreamsBuilder()
        (b.stream("in", key_serde=S, value_serde=S).group_by_key().windowed_by(windows)
         .aggregate(lambda: [], agg, materialized=Materialized("w", store_type=store_type))
         .to_stream().to("out", value_serde=Serdes.json()))
        return b.build()
    return build


def _reduce(windows, store_type="in_memory"):
    def build():
        b = StreamsBuilder()
        (b.stream("in", key_serde=S, value_serde=S).group_by_key().windowed_by(windows)
         .reduce(lambda a, v: str(max(int(a), int(v))), materialized=Materialized("w", store_type=store_type))
         .to_stream().to("out"))
        return b.build()
    return build


def _task(topology, collector, state_dir, handler):
    return StreamTask(topology, topology.nodes, application_id="app", task_id="0_0", collector=collector,
                      state_dir=state_dir, config={"processing.exception.handler": handler,
                                                   "default.key.serde": S, "default.value.serde": S})


def _compare(build, seed, tmp_path, handler="log_and_fail", nulls=True, headers_every=0, native=None):
    """Per record in one task; in batches of random size (some with headers: the
    per-record path, in between) in the other; flushes in between.  ``native``: whether
    the batches must run in pylog._core.window_count_batch (None: either)."""
    keys, values, tss = _records(seed, nulls=nulls)
    offsets = np.arange(len(tss), dtype=np.int64)
    one, many = _Sends(), _Sends()
    t1 = _task(build(), one, str(tmp_path / "one"), handler)
    t2 = _task(build(), many, str(tmp_path / "many"), handler)
    r = random.Random(seed)
    err1 = err2 = None
    try:
        for i in range(len(tss)):
            t1.process("in", keys[i], values[i], tss[i], (), i)
    except StreamsError as exc:
        err1 = str(exc)
    try:
        start, n = 0, 0
        while start < len(tss):
            stop = min(len(tss), start + r.randrange(1, 120))
            hdrs = None
            n += 1
            if headers_every and n % headers_every == 0:
                hdrs = [()] * (stop - start)
            t2.process_batch("in", keys[start:stop], values[start:stop], tss[start:stop], offsets[start:stop], hdrs)
            if r.random() < 0.2:
                t2.flush()
            start = stop
    except StreamsError as exc:
        err2 = str(exc)
    assert t2._fused["in"] is not None, "the chain was not fused"
    if native is not None:
        assert t2._fused["in"].native is native
    assert err1 == err2
    assert many.by_topic == one.by_topic
    assert t2.stream_time == t1.stream_time
    assert t2.metrics.counts == t1.metrics.counts
    s1, s2 = t1.stores["w"], t2.stores["w"]
    assert list(s2.fetch_all(0, 1 << 40)) == list(s1.fetch_all(0, 1 << 40))
    assert s2.observed_stream_time == s1.observed_stream_time
    t1.close()
    t2.close()
    return one.by_topic


WINDOWS = [TimeWindows.of_size_with_no_grace(100), TimeWindows.of_size_and_grace(100, 150),
           TimeWindows.of_size_and_grace(100, 60).advance_by(30)]


@pytest.mark.parametrize("store_type", ["in_memory", "persistent"])
@pytest.mark.parametrize("windows", WINDOWS, ids=["tumbling", "tumbling-grace", "hopping"])
def test_count_batches_equal_records(tmp_path, store_type, windows):
    for seed in range(3):
        sent = _compare(_count(windows, store_type), seed, tmp_path / str(seed))
        assert sent["out"] and sent["app-w-changelog"]


@pytest.mark.parametrize("store_type", ["in_memory", "persistent"])
@pytest.mark.parametrize("windows", WINDOWS, ids=["tumbling", "tumbling-grace", "hopping"])
def test_a_bytes_keyed_count_runs_natively_and_equals_records(tmp_path, store_type, windows):
    # bytes keys and values, long counts, windowed bytes keys out: pylog._core's loop
    # (out of order, late, null keys and values, negative timestamps; unlogged too)
    for seed in range(3):
        sent = _compare(_count(windows, store_type, serde=B), seed, tmp_path / str(seed), native=True)
        assert sent["out"] and sent["app-w-changelog"]
    _compare(_count(windows, store_type, logged=False, serde=B), 3, tmp_path / "nolog", native=True)
    _compare(_count(windows, store_type, serde=B), 4, tmp_path / "headers", headers_every=3, native=True)


def test_a_reopened_store_ahead_of_the_native_count(tmp_path):
    for i, w in enumerate(WINDOWS):
        _compare(_count(w, "persistent", serde=B), 1, tmp_path / str(i), native=True)
        _compare(_count(w, "persistent", serde=B), 2, tmp_path / str(i), native=True)


@pytest.mark.parametrize("seed", range(2))
def test_count_variants(tmp_path, seed):
    w = WINDOWS[1]
    _compare(_count(w, logged=False), seed, tmp_path / "nolog")
    _compare(_count(w, pre_filter=True), seed, tmp_path / "filter")
    _compare(_count(w, serde=B, out_value=L), seed, tmp_path / "bytes", native=True)
    _compare(_count(w, out_value=Serdes.integer()), seed, tmp_path / "int", native=False)  # the sink's own value serde
    _compare(_count(w, serde=B, out_value=Serdes.integer()), seed, tmp_path / "bint", native=False)
    _compare(_count(w, pre_filter=True, serde=B), seed, tmp_path / "bfilter", native=False)
    _compare(_count(w, "persistent"), seed, tmp_path / "headers", headers_every=3)  # per-record batches between


@pytest.mark.parametrize("store_type", ["in_memory", "persistent"])
def test_aggregate_and_reduce(tmp_path, store_type):
    for i, w in enumerate(WINDOWS):
        _compare(_aggregate(w, store_type), 7, tmp_path / f"agg{i}", nulls=False)
        _compare(_reduce(w, store_type), 8, tmp_path / f"red{i}", nulls=False)


def test_a_reopened_store_ahead_of_the_processor(tmp_path):
    # The RocksDB store keeps its stream time across a restart; the processor's starts
    # over, so windows the store has expired are read as absent and not kept.
    for i, w in enumerate(WINDOWS):
        _compare(_count(w, "persistent"), 1, tmp_path / str(i))
        _compare(_count(w, "persistent"), 2, tmp_path / str(i))


@pytest.mark.parametrize("handler", ["log_and_continue", "log_and_fail"])
def test_an_aggregator_that_raises_goes_to_the_processing_handler_as_per_record(tmp_path, handler):
    for i, w in enumerate(WINDOWS):
        sent = _compare(_aggregate(w, fail_on="13"), 3, tmp_path / f"{handler}{i}", handler=handler,
                        nulls=False)
        assert "out" in sent


def test_a_sink_serde_that_fails_goes_to_the_production_handler_as_per_record(tmp_path):
    # the integer serde cannot hold a count past 2**31: not reached; a value serde that
    # refuses odd counts stands in for one that fails
    def odd(n):
        if n % 2:
            raise ValueError("odd")
        return str(n).encode()
    picky = Serdes.from_fns(odd, lambda b: int(b), "picky")
    for i, w in enumerate(WINDOWS):
        _compare(_count(w, out_value=picky), 5, tmp_path / str(i))


@pytest.mark.parametrize("store_type", ["in_memory", "persistent"])
def test_a_fused_count_keeps_its_cache_out_of_the_garbage_collectors_sight(tmp_path, store_type):
    # bytes keys, int counts and timestamps: dicts the collector does not track, so a
    # full collection does not walk the (up to 100k-window) cache; expired starts go
    import gc

    from pylog.streams.windowed import TimeWindowAggregate

    keys, values, tss = _records(4, nulls=False)
    task = _task(_count(WINDOWS[2], store_type, serde=B)(), _Sends(), str(tmp_path), "log_and_fail")
    task.process_batch("in", keys, values, tss, np.arange(len(tss), dtype=np.int64))
    proc = next(n.processor for n in task.nodes.values() if type(n.processor) is TimeWindowAggregate)
    assert proc.fused_cache.keys() == proc.fused_cache_ts.keys()
    # only the starts the store has not expired stay (hopping 100/30, grace 60)
    store = task.stores["w"]
    assert min(proc.fused_cache) >= store.observed_stream_time - store.retention_ms + 1
    for start, windows in proc.fused_cache.items():
        assert windows and windows.keys() == proc.fused_cache_ts[start].keys()
        assert not gc.is_tracked(windows) and not gc.is_tracked(proc.fused_cache_ts[start])
    task.close()


def test_emit_on_close_and_a_mapped_to_stream_are_not_fused(tmp_path):
    from pylog.streams import EmitStrategy
    b = StreamsBuilder()
    (b.stream("in", key_serde=S, value_serde=S).group_by_key().windowed_by(WINDOWS[0])
     .emit_strategy(EmitStrategy.on_window_close()).count().to_stream().to("out", value_serde=L))
    t = _task(b.build(), _Sends(), str(tmp_path), "log_and_fail")
    assert t._fuse("in") is None
    b = StreamsBuilder()
    (b.stream("in", key_serde=S, value_serde=S).group_by_key().windowed_by(WINDOWS[0])
     .count().to_stream(lambda w, v: w.key).to("out", value_serde=L))
    t = _task(b.build(), _Sends(), str(tmp_path), "log_and_fail")
    assert t._fuse("in") is None


@pytest.mark.bench
def test_the_windowed_batches_benchmark_runs(monkeypatch):
    import importlib

    monkeypatch.setenv("PYLOG_BENCH_SMALL", "1")
    from benches import bench_streams

    mod = importlib.reload(bench_streams)
    w = mod.WindowedCountBatches()
    for store in ("in_memory", "persistent"):
        w.setup(store, 1_000)
        try:
            assert w._run(store, 1_000) == 2 * mod.N   # one update and one changelog record per record
        finally:
            w.teardown(store, 1_000)


def _read(client, topic):
    """{partition: [(key, value, timestamp), ...]} of every record of ``topic`` now."""
    c = client.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
    tps = [(topic, p) for p in range(client.num_partitions(topic))]
    c.assign(tps)
    ends = c.end_offsets(tps)
    out: dict = {p: [] for _, p in tps}
    while any(c.position(tp) < ends[tp] for tp in tps):
        for r in c.poll(timeout_ms=200):
            out[r.partition].append((r.key, r.value, r.timestamp))
    c.close()
    return out


@pytest.mark.parametrize("store_type", ["in_memory", "persistent"])
def test_the_runtime_writes_what_the_per_record_path_writes(tmp_path, store_type):
    # Through StreamsApp on pylog.open (polled batches, the fused loop, the delivery
    # watch, the changelog sent to the task's partition): the same output per key and
    # the same changelog per partition as a task fed each input partition record by record.
    import pylog

    build = _count(WINDOWS[2], store_type, serde=B)
    r = random.Random(11)
    with pylog.open(str(tmp_path / "data")) as client:
        client.create_topic("in", 2)
        client.create_topic("out", 2)
        p = client.producer(linger_ms=0)
        t = 1000
        for i in range(600):
            t += r.randrange(0, 30)
            p.send("in", key=b"k%d" % r.randrange(12), value=b"v%d" % i,
                   timestamp_ms=max(0, t - r.randrange(0, 300)) if r.random() < 0.2 else t)
        p.flush()
        p.close()
        inputs = _read(client, "in")
        from pylog.streams.runtime import StreamsApp
        StreamsApp(build(), "app", {"state.dir": str(tmp_path / "state")}).run(
            client, until_idle=True, idle_polls=2, poll_timeout_ms=20)
        out, changelog = _read(client, "out"), _read(client, "app-w-changelog")
    by_key: dict = {}
    for recs in out.values():
        for k, v, ts in recs:
            by_key.setdefault(k, []).append((v, ts))
    want_by_key: dict = {}
    for partition, recs in inputs.items():
        sends = _Sends()
        topology = build()
        task = StreamTask(topology, topology.nodes, application_id="app", task_id=f"0_{partition}", collector=sends,
                          state_dir=str(tmp_path / f"model{partition}"), partition=partition, config={})
        for offset, (k, v, ts) in enumerate(recs):
            task.process("in", k, v, ts, (), offset)
        for k, v, ts, _h, _p in sends.by_topic.get("out", []):
            want_by_key.setdefault(k, []).append((v, ts))
        assert changelog[partition] == [(k, v, ts) for k, v, ts, _h, _p in sends.by_topic["app-w-changelog"]]
        task.close()
    assert by_key == want_by_key
