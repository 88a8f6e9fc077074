"""The restore listener and progress bar (Kafka Streams' StateRestoreListener): told the
changelog offsets a store restores from and to, each batch and the total, after a
restart; suspended when the app stops mid-restore; nothing for a caught-up store."""

from __future__ import annotations

import pylog
from pylog.streams import Materialized, Serdes, StreamsBuilder

S = Serdes.string()
L = Serdes.long()
TP = ("rl-counts-changelog", 0)


class Recorder:
    """Every callback, in order; ``on_start`` runs after ``on_restore_start`` is recorded."""

    def __init__(self, on_start=None):
        self.calls = []
        self.on_start = on_start

    def on_restore_start(self, tp, store, start, end):
        self.calls.append(("start", tp, store, start, end))
        if self.on_start is not None:
            self.on_start()

    def on_batch_restored(self, tp, store, batch_end_offset, n):
        self.calls.append(("batch", tp, store, batch_end_offset, n))

    def on_restore_end(self, tp, store, total):
        self.calls.append(("end", tp, store, total))

    def on_restore_suspended(self, tp, store, total):
        self.calls.append(("suspended", tp, store, total))


def count_app(state_dir, **config):
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    store_type = config.pop("store_type", "in_memory")
    (b.stream("words").group_by_key().count(materialized=Materialized("counts", store_type=store_type))
     .to_stream().to("counts", value_serde=L))
    return b.build(application_id="rl", config={"commit.interval.ms": 50, "state.dir": str(state_dir), **config})


def produce(client, topic, keys):
    p = client.producer()
    for k in keys:
        p.send(topic, key=k.encode(), value=b"")
    p.flush()
    p.close()


def last_counts(client):
    c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([("counts", 0)])
    end = c.end_offsets([("counts", 0)])[("counts", 0)]
    out = {}
    while c.position(("counts", 0)) < end:
        for r in c.poll(timeout_ms=200):
            out[S.deserialize(r.key)] = L.deserialize(r.value)
    c.close(autocommit=False)
    return out


def setup(client):
    client.create_topic("words", 1)
    client.create_topic("counts", 1)
    produce(client, "words", ["a", "b", "a", "c"])


def check_batches(calls, start, end, total):
    """start .. batches .. end: the batches' counts add up, their end offsets rise to
    the changelog's last record."""
    assert calls[0] == ("start", TP, "counts", start, end)
    assert calls[-1] == ("end", TP, "counts", total)
    batches = calls[1:-1]
    assert batches and all(c[0] == "batch" and c[1:3] == (TP, "counts") for c in batches)
    ends = [c[3] for c in batches]
    assert ends == sorted(set(ends)) and ends[-1] == end - 1
    assert sum(c[4] for c in batches) == total


def test_restart_restores_with_exact_offsets_and_counts(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        setup(client)
        count_app(tmp_path / "state").run(client, until_idle=True)
        changelog_end = client.consumer().end_offsets([TP])[TP]
        assert changelog_end == 4      # one update per word, caching off
        produce(client, "words", ["a"])
        listener = Recorder()
        app = count_app(tmp_path / "state")
        app.set_global_state_restore_listener(listener)
        app.run(client, until_idle=True)
        check_batches(listener.calls, 0, 4, 4)
        # the restored counts go on from where the first run left them
        assert last_counts(client) == {"a": 3, "b": 1, "c": 1}


def test_exactly_once_restores_from_the_checkpoint_and_not_at_all_when_caught_up(tmp_path):
    eos = {"processing.guarantee": "exactly_once_v2", "store_type": "persistent"}
    with pylog.open(tmp_path / "data") as client:
        setup(client)
        count_app(tmp_path / "state", **eos).run(client, until_idle=True)
        # a clean close checkpointed the store: nothing to restore, no call at all
        listener = Recorder()
        app = count_app(tmp_path / "state", **eos)
        app.set_global_state_restore_listener(listener)
        app.run(client, until_idle=True)
        assert listener.calls == []
        # two records the store does not hold yet, after its checkpointed offset
        lso = client.consumer(isolation_level="read_committed").end_offsets([TP])[TP]
        p = client.producer()
        p.send(TP[0], key=b"a", value=L.serialize(10), partition=0)
        p.send(TP[0], key=b"z", value=L.serialize(1), partition=0)
        p.flush()
        p.close()
        produce(client, "words", ["z"])
        listener = Recorder()
        app = count_app(tmp_path / "state", **eos)
        app.set_global_state_restore_listener(listener)
        app.run(client, until_idle=True)
        check_batches(listener.calls, lso, lso + 2, 2)
        assert last_counts(client)["z"] == 2


def test_stop_during_a_restore_suspends_it_and_the_next_start_restores_all(tmp_path, capsys):
    with pylog.open(tmp_path / "data") as client:
        setup(client)
        count_app(tmp_path / "state").run(client, until_idle=True)
        produce(client, "words", ["b"])
        app = count_app(tmp_path / "state")
        listener = Recorder(on_start=app.stop)
        app.set_global_state_restore_listener(listener)
        app.run(client, until_idle=True)
        assert listener.calls == [("start", TP, "counts", 0, 4), ("suspended", TP, "counts", 0)]
        assert app.active_tasks() == set()
        # the word read while stopping was not consumed: the next start counts it once
        listener = Recorder()
        app = count_app(tmp_path / "state", restore_progress=True)
        app.set_global_state_restore_listener(listener)
        app.run(client, until_idle=True)
        check_batches(listener.calls, 0, 4, 4)
        assert last_counts(client) == {"a": 2, "b": 2, "c": 1}
        assert "restoring counts rl-counts-changelog-0" in capsys.readouterr().err



def test_global_store_bootstrap_is_told_to_the_listener(tmp_path):
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    regions = b.global_table("regions", materialized="regions-store")
    b.stream("orders").join(regions, lambda o, r: f"{o}@{r}", key_selector=lambda k, v: v).to("out")
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("regions", 2)
        for t in ("orders", "out"):
            client.create_topic(t, 1)
        p = client.producer()
        for k, v in (("eu", "Europe"), ("us", "USA"), ("eu", "EU")):
            p.send("regions", key=k.encode(), value=v.encode(), partition=0)
        p.send("regions", key=b"ap", value=b"Asia", partition=1)
        p.flush()
        p.close()
        app = b.build("gl", {"commit.interval.ms": 50, "state.dir": str(tmp_path / "state")})
        listener = Recorder()
        app.set_global_state_restore_listener(listener)
        app.run(client, until_idle=True)
        zero = [c for c in listener.calls if c[1] == ("regions", 0)]
        one = [c for c in listener.calls if c[1] == ("regions", 1)]
        assert listener.calls == zero + one
        assert zero[0] == ("start", ("regions", 0), "regions-store", 0, 3)
        assert zero[-1] == ("end", ("regions", 0), "regions-store", 3)
        assert sum(c[4] for c in zero[1:-1]) == 3 and zero[-2][3] == 2
        assert one == [("start", ("regions", 1), "regions-store", 0, 1),
                       ("batch", ("regions", 1), "regions-store", 0, 1),
                       ("end", ("regions", 1), "regions-store", 1)]
