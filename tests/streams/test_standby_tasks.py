"""Standby tasks and restores across rebalances (embedded, two app instances on threads):
a standby's persistent store is checkpointed when it closes and a restarted standby
resumes from its checkpoint (it keeps records the changelog no longer has); a restore
cut short by a rebalance tells the listener ``on_restore_suspended`` and keeps what it
restored (the next restore resumes there, never from the beginning)."""

from __future__ import annotations

import os

import pylog
from pylog.streams import (HostInfo, KeyQueryMetadata, Materialized, QueryableStoreTypes, Serdes, StoreQueryParameters,
                           StreamsBuilder)
from pylog.streams.state.checkpoint import read_checkpoint
from server.conftest import wait_until

from .test_interactive_queries import Running
from .test_restore_listener import produce

S = Serdes.string()
COUNTS = StoreQueryParameters.from_name_and_type("counts", QueryableStoreTypes.key_value_store())


def start_active_and_standby(client, make_app):
    """Instances "one" and "two" of a one-task app, running until the task is active on
    one and a standby on the other: (apps, runs, active's name, standby's name)."""
    apps = {"one": make_app("one"), "two": make_app("two")}
    runs = {name: Running(a, client) for name, a in apps.items()}
    for r in runs.values():
        r.__enter__()
    try:
        wait_until(lambda: sum(len(a.tasks) for a in apps.values()) == 1
                   and sum(len(a.standbys) for a in apps.values()) == 1, what="one active task and one standby")
    except BaseException:
        for r in runs.values():
            r.__exit__(None, None, None)
        raise
    active = next(n for n, a in apps.items() if a.tasks)
    return apps, runs, active, next(n for n in apps if n != active)


def stale_counts(app, keys):
    try:
        view = app.store(COUNTS.enable_stale_stores())
        return {k: view.get(k) for k in keys}
    except pylog.errors.PylogError:
        return None


def test_a_standby_checkpoints_its_persistent_store_and_resumes_from_it_after_a_restart(tmp_path):
    def app(state):
        b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
        store = Materialized("counts", store_type="persistent").with_logging_enabled(
            {"cleanup.policy": "compact,delete"})
        b.stream("words").group_by_key().count(materialized=store)
        return b.build("sb", {"commit.interval.ms": 50, "state.dir": str(tmp_path / state),
                              "num.standby.replicas": 1})

    words = ["a", "b", "a", "c", "a"]
    expected = {"a": 3, "b": 1, "c": 1}
    changelog = ("sb-counts-changelog", 0)
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 1)
        produce(client, "words", words)
        apps, runs, _, name = start_active_and_standby(client, app)
        try:
            standby = apps[name]
            wait_until(lambda: stale_counts(standby, expected) == expected, what="the standby caught up")
            assert not standby.tasks and list(standby.standbys) == [(0, 0)]
            runs.pop(name).__exit__(None, None, None)
            # the standby instance stopped: its store's checkpoint holds the last offset applied
            end = client.consumer().end_offsets([changelog])[changelog]
            assert end == len(words)
            path = os.path.join(tmp_path, name, "sb", "0_0", ".checkpoint")
            assert read_checkpoint(path) == {changelog: end - 1}
            # the changelog loses everything it held: only the checkpointed store has it now
            client.delete_records(*changelog, end)
            again = app(name)
            runs[name] = Running(again, client)
            runs[name].__enter__()
            wait_until(lambda: (0, 0) in again.standbys, what="the standby reopened")
            assert not os.path.exists(path)     # taken when the standby opened
            assert stale_counts(again, expected) == expected
            produce(client, "words", ["b"])
            wait_until(lambda: stale_counts(again, expected) == {**expected, "b": 2}, what="the new count")
        finally:
            for r in runs.values():
                r.__exit__(None, None, None)


class Recorder:
    def __init__(self):
        self.calls = []
        self.on_start = None

    def on_restore_start(self, tp, store, start, end):
        self.calls.append(("start", store, start, end))
        if self.on_start is not None:
            self.on_start(store)

    def on_batch_restored(self, tp, store, batch_end_offset, n):
        pass

    def on_restore_end(self, tp, store, total):
        self.calls.append(("end", store, total))

    def on_restore_suspended(self, tp, store, total):
        self.calls.append(("suspended", store, total))


def test_a_restore_cut_short_by_a_rebalance_is_suspended_and_keeps_what_it_restored(tmp_path):
    def app():
        b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
        words = b.stream("words").group_by_key()
        words.count(materialized="counts")
        words.reduce(lambda old, new: old + "+" + new, materialized="joined")
        return b.build("rs", {"commit.interval.ms": 50, "state.dir": str(tmp_path / "state")})

    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 1)
        p = client.producer()
        for i, k in enumerate(["a", "b", "a", "c"]):
            p.send("words", key=k.encode(), value=str(i).encode())
        p.flush()
        p.close()
        app().run(client, until_idle=True)
        restarted = app()
        listener = Recorder()

        def rebalance_once(store):
            # "counts" is restored; the group rebalances as "joined" starts restoring
            if store == "joined":
                listener.on_start = None
                restarted.consumer.enforce_rebalance("test")
        listener.on_start = rebalance_once
        restarted.set_global_state_restore_listener(listener)
        with Running(restarted, client):
            wait_until(lambda: restarted.active_tasks() == {"0_0"}, what="the task built")
            view = restarted.store(StoreQueryParameters.from_name_and_type(
                "joined", QueryableStoreTypes.key_value_store()))
            assert view.get("a") == "0+2" and view.get("c") == "3"
            assert restarted.store(COUNTS).get("a") == 2
        calls = listener.calls
        assert calls[:4] == [("start", "counts", 0, 4), ("end", "counts", 4), ("start", "joined", 0, 4),
                             ("suspended", "joined", 0)]
        # "counts" was kept through the rebalance: never restored again
        assert [c for c in calls if c[1] == "counts"] == [("start", "counts", 0, 4), ("end", "counts", 4)]


def test_a_newcomer_far_behind_warms_up_first_and_takes_its_task_in_a_probing_rebalance(tmp_path):
    def app(state):
        b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
        b.stream("words").group_by_key().count(materialized="counts")
        return b.build("wu", {"commit.interval.ms": 50, "state.dir": str(tmp_path / state),
                              "acceptable.recovery.lag": 5})

    keys = [f"k{i}" for i in range(40)]
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 2)
        produce(client, "words", keys)
        first = app("one")
        with Running(first, client):
            wait_until(lambda: stale_counts(first, keys) == {k: 1 for k in keys}, what="the first instance counting")
            second = app("two")
            listener = Recorder()
            second.set_global_state_restore_listener(listener)
            with Running(second, client):
                # the newcomer is far behind (changelogs of ~20 records, acceptable lag 5):
                # the first instance keeps both tasks while a warm-up replica catches up
                wait_until(lambda: second.standbys and not second.tasks and len(first.tasks) == 2,
                           what="a warm-up replica on the newcomer")
                # a probing rebalance is due in probing.rebalance.interval.ms (10 minutes):
                # make it due now
                due = second.partition_assignor.next_probing_rebalance_ms
                assert due > 0 and first.partition_assignor.next_probing_rebalance_ms == due

                def warmed_up():
                    [((_, partition), sb)] = list(second.standbys.items())
                    end = client.list_offsets("wu-counts-changelog", partition, -1).offset
                    return sb.positions["counts"] == end
                wait_until(warmed_up, what="the warm-up replica caught up")
                second.partition_assignor.next_probing_rebalance_ms = 1
                wait_until(lambda: len(second.tasks) == 1 and len(first.tasks) == 1, what="the probing rebalance")
                assert second.standbys == {}
                # the task came with the warm-up's state: nothing restored from the beginning
                assert not [c for c in listener.calls if c[0] == "start" and c[2] == 0], listener.calls
                produce(client, "words", keys)

                def both():
                    return {k: v for a in (first, second) for k, v in (stale_counts(a, keys) or {}).items()
                            if v is not None}
                wait_until(lambda: both() == {k: 2 for k in keys}, what="both counting on")


def test_exactly_once_hand_over_to_a_standby_counts_every_word_once(tmp_path):
    """Under exactly_once_v2 a standby reads its changelog read_committed, so the state
    it hands the new active task holds committed writes only; the output counts each
    word exactly once across the move."""
    def app(state):
        b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
        (b.stream("words").group_by_key().count(materialized=Materialized("counts", store_type="persistent"))
         .to_stream().to("counts", value_serde=Serdes.long()))
        return b.build("eos-sb", {"processing.guarantee": "exactly_once_v2", "state.dir": str(tmp_path / state),
                                  "num.standby.replicas": 1})

    keys = [f"k{i}" for i in range(10)]
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 1)
        client.create_topic("counts", 1)
        produce(client, "words", keys)
        apps, runs, active, standby = start_active_and_standby(client, app)
        try:
            wait_until(lambda: stale_counts(apps[standby], keys) == {k: 1 for k in keys}, what="the standby caught up")
            listener = Recorder()
            apps[standby].set_global_state_restore_listener(listener)
            runs.pop(active).__exit__(None, None, None)
            wait_until(lambda: apps[standby].active_tasks() == {"0_0"}, what="the standby took the task")
            assert not [c for c in listener.calls if c[0] == "start" and c[2] == 0], listener.calls
            produce(client, "words", keys)
            wait_until(lambda: stale_counts(apps[standby], keys) == {k: 2 for k in keys}, what="counting on")
        finally:
            for r in runs.values():
                r.__exit__(None, None, None)
        c = client.consumer(auto_offset_reset="earliest", enable_auto_commit=False, isolation_level="read_committed")
        c.assign([("counts", 0)])
        end = c.end_offsets([("counts", 0)])[("counts", 0)]
        out = []
        while c.position(("counts", 0)) < end:
            out += [(S.deserialize(r.key), Serdes.long().deserialize(r.value)) for r in c.poll(timeout_ms=200)]
        c.close(autocommit=False)
        assert sorted(out) == sorted([(k, 1) for k in keys] + [(k, 2) for k in keys])


def test_routing_metadata_names_the_standby_hosts(tmp_path):
    def app(state):
        b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
        b.stream("words").group_by_key().count(materialized="counts")
        port = {"one": 7101, "two": 7102}[state]
        return b.build("meta-sb", {"commit.interval.ms": 50, "state.dir": str(tmp_path / state),
                                   "num.standby.replicas": 1, "application.server": f"127.0.0.1:{port}"})

    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 1)
        apps, runs, active, standby = start_active_and_standby(client, app)
        try:
            hosts = {"one": HostInfo("127.0.0.1", 7101), "two": HostInfo("127.0.0.1", 7102)}
            meta = wait_until(lambda: (lambda m: m if m.active_host != HostInfo("unavailable", -1) else None)(
                apps[standby].query_metadata_for_key("counts", "a", S)), what="routing metadata")
            assert meta == KeyQueryMetadata(hosts[active], frozenset({hosts[standby]}), 0)
            by_host = {m.host_info: m for m in apps[active].metadata_for_all_stream_clients()}
            assert by_host[hosts[active]].state_store_names == {"counts"}
            assert by_host[hosts[active]].topic_partitions == {("words", 0)}
            assert by_host[hosts[standby]].standby_state_store_names == {"counts"}
            assert by_host[hosts[standby]].standby_topic_partitions == {("words", 0)}
            assert by_host[hosts[standby]].topic_partitions == frozenset()
            assert {m.host_info for m in apps[standby].streams_metadata_for_store("counts")} == set(hosts.values())
        finally:
            for r in runs.values():
                r.__exit__(None, None, None)


def test_a_restore_suspended_mid_changelog_resumes_from_where_it_stopped(tmp_path):
    def app():
        b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
        b.stream("words").group_by_key().reduce(lambda old, new: new, materialized="big")
        return b.build("rs2", {"commit.interval.ms": 50, "state.dir": str(tmp_path / "state")})

    n = 3000
    changelog = ("rs2-big-changelog", 0)
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("words", 1)
        # a changelog of ~3 MiB: more than one fetch (max.partition.fetch.bytes is 1 MiB)
        client.create_topic(changelog[0], 1, config={"cleanup.policy": "compact"})
        p = client.producer()
        for i in range(n):
            p.send(changelog[0], key=f"k{i}".encode(), value=b"v" * 1000, partition=0)
        p.flush()
        p.close()
        restarted = app()
        suspended_at = []

        class Suspender(Recorder):
            def on_batch_restored(self, tp, store, batch_end_offset, count):
                if not suspended_at:
                    suspended_at.append(batch_end_offset + 1)
                    restarted.consumer.enforce_rebalance("test")

        listener = Suspender()
        restarted.set_global_state_restore_listener(listener)
        with Running(restarted, client):
            wait_until(lambda: restarted.active_tasks() == {"0_0"}, what="the task built")
            view = restarted.store(StoreQueryParameters.from_name_and_type("big", QueryableStoreTypes.key_value_store()))
            assert view.approximate_num_entries() == n and view.get(f"k{n - 1}") == "v" * 1000
        calls = listener.calls
        assert calls[0] == ("start", "big", 0, n)
        [suspended] = [c for c in calls if c[0] == "suspended"]
        assert 0 < suspended[2] < n
        # what was restored was kept: a later restore (if the standby had not caught up
        # meanwhile) starts past it, never at 0 again
        starts = [c for c in calls if c[0] == "start"]
        assert all(c[2] >= suspended_at[0] for c in starts[1:]), calls
        assert suspended[2] + sum(c[2] for c in calls if c[0] == "end") <= n     # no record restored twice
