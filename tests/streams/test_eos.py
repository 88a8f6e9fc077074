"""``processing.guarantee=exactly_once_v2`` on the embedded client: one transactional
producer per instance with Kafka Streams' transactional id, output and changelogs
visible to read_committed readers only once committed, a failed run's transaction
aborted and its local state never restored, and two instances handing tasks over
without repeating a count."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

import pylog
from pylog.streams import Materialized, Serdes, StreamsBuilder, StreamsError
from pylog.streams.runtime import PROCESS_FILE_NAME
from pylog.streams.state.checkpoint import CHECKPOINT_FILE_NAME, read_checkpoint
from tests.client.helpers import read_to_end

from .test_runtime import produce, two_instances_hand_over

S = Serdes.string()


def counting_app(state_dir, app_id="eos-wc", *, fail_on=None, store_type="in_memory", **config):
    """Words of "lines" counted (every update emitted as ``word=n`` to "counts");
    ``fail_on``: a word whose count update raises (after the store took it)."""
    def update(w, n):
        if w == fail_on:
            raise ValueError(f"cannot count {fail_on!r}")
        return w, f"{w}={n}"

    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    (b.stream("lines").flat_map_values(str.split).group_by(lambda k, w: w)
     .count(materialized=Materialized("counts", store_type=store_type)).to_stream()
     .map(update).to("counts"))
    return b.build(application_id=app_id, config={"processing_guarantee": "exactly_once_v2",
                                                  "state.dir": str(state_dir), **config})


def committed_updates(client, topic="counts"):
    """word -> the counts read_committed sees, in order."""
    out: dict[str, list[int]] = {}
    for values in read_to_end(client, topic, client.num_partitions(topic), "read_committed").values():
        for v in values:
            word, n = v.decode().split("=")
            out.setdefault(word, []).append(int(n))
    return out


def test_exactly_once_counts_embedded_with_kafka_streams_transactional_id(tmp_path):
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("lines", 2)
        client.create_topic("counts", 2)
        produce(client, "lines", [("a", "x y x"), ("b", "y z")])
        app = counting_app(tmp_path / "state")
        assert app.commit_interval_ms == 100      # Kafka Streams' default under exactly-once
        app.run(client, until_idle=True)
        assert committed_updates(client) == {"x": [1, 2], "y": [1, 2], "z": [1]}
        with open(tmp_path / "state" / "eos-wc" / PROCESS_FILE_NAME) as f:
            process_id = json.load(f)["processId"]
        assert app.transactional_id() == f"eos-wc-{process_id}-1"
        # the output went out in transactions: a commit marker follows the records
        ends = sum(client.list_offsets("counts", p, -1).offset for p in range(2))
        assert ends > 5
        # a restart keeps the process id (and so fences its predecessor's producer)
        produce(client, "lines", [("c", "x")])
        app2 = counting_app(tmp_path / "state")
        app2.run(client, until_idle=True)
        assert app2.transactional_id() == app.transactional_id()
        assert committed_updates(client) == {"x": [1, 2, 3], "y": [1, 2], "z": [1]}


def test_a_failed_run_aborts_its_transaction_and_its_state_is_not_restored(tmp_path):
    """Run 1 commits; run 2 counts more, then a count update fails: its transaction
    (counts, changelog, offsets) is aborted and run fails; its persistent store held the
    aborted counts, so run 3 (without the fault) must wipe it and restore from the
    committed changelog: the counts continue from run 1's."""
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("lines", 1)
        client.create_topic("counts", 1)
        produce(client, "lines", [("a", "x y")])
        counting_app(tmp_path / "state", store_type="persistent").run(client, until_idle=True)
        produce(client, "lines", [("b", "x z"), ("c", "y"), ("d", "boom")])
        failing = counting_app(tmp_path / "state", store_type="persistent", fail_on="boom")
        with pytest.raises(StreamsError, match="cannot count 'boom'"):
            failing.run(client, until_idle=True)
        assert committed_updates(client) == {"x": [1], "y": [1]}
        # the store of the failed run holds z=1 and boom=1 (never committed): restoring
        # only over it would count them twice
        fixed = counting_app(tmp_path / "state", store_type="persistent", fail_on="no such word")
        fixed.run(client, until_idle=True)
        assert committed_updates(client) == {"x": [1, 2], "y": [1, 2], "z": [1], "boom": [1]}


def test_a_clean_close_checkpoints_and_a_restart_restores_only_what_follows(tmp_path, caplog):
    """A clean close writes the task's .checkpoint (the persistent store's changelog
    offset); the next run keeps the store and restores nothing it already holds."""
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("lines", 1)
        client.create_topic("counts", 1)
        produce(client, "lines", [("a", "x y")])
        counting_app(tmp_path / "state", store_type="persistent").run(client, until_idle=True)
        offsets = read_checkpoint(str(tmp_path / "state" / "eos-wc" / "1_0" / CHECKPOINT_FILE_NAME))
        changelog_end = client.list_offsets("eos-wc-counts-changelog", 0, -1).offset
        assert offsets == {("eos-wc-counts-changelog", 0): changelog_end - 1}
        produce(client, "lines", [("b", "x")])
        with caplog.at_level(logging.INFO, logger="pylog.streams"):
            counting_app(tmp_path / "state", store_type="persistent").run(client, until_idle=True)
        assert not [r for r in caplog.records if "of store counts" in r.getMessage()]
        assert committed_updates(client) == {"x": [1, 2], "y": [1]}


def test_two_exactly_once_instances_hand_tasks_over_without_repeating_a_count(tmp_path):
    """A second instance joins while the first runs: the first commits its transaction
    and gives tasks up, the second rebuilds them from the committed changelogs; every
    word's counts read back are 1..n exactly."""
    with pylog.open(tmp_path / "data") as client:
        first, second = two_instances_hand_over(client, lambda d: counting_app(tmp_path / d, "eos-shared"),
                                                ("late", "x"))
        assert first.transactional_id() != second.transactional_id()
        assert committed_updates(client) == {"x": list(range(1, 22)), "y": list(range(1, 41)),
                                             "z": list(range(1, 21))}


def wait_for_updates(client, want, what):
    """Poll the read_committed counts until they are ``want`` (a polling loop with a
    deadline, not a sleep standing in for a synchronisation)."""
    deadline = time.monotonic() + 60
    while (got := committed_updates(client)) != want:
        assert time.monotonic() < deadline, f"{what}: counts {got}, want {want}"
        time.sleep(0.05)


def test_a_stalled_instance_loses_its_tasks_and_its_transaction_is_aborted(tmp_path):
    """Instance A stalls inside a count update past max.poll.interval.ms and leaves the
    group; B takes every task over and processes.  When A's update returns (long before
    its transaction would time out), A must not commit: it is no longer a member, and
    offsets sent without a generation are not fenced.  It aborts, drops its tasks,
    rewinds and rejoins.  Every word's counts are 1..n exactly."""
    stalled, release, b_works = threading.Event(), threading.Event(), threading.Event()

    def stall(w):
        if w == "stall" and not stalled.is_set():
            stalled.set()
            release.wait(60)

    def app(d, hook, **config):
        def update(w, n):
            hook(w)
            return w, f"{w}={n}"

        b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
        (b.stream("lines").flat_map_values(str.split).group_by(lambda k, w: w).count(materialized="counts")
         .to_stream().map(update).to("counts"))
        return b.build("eos-stall", {"processing.guarantee": "exactly_once_v2", "state.dir": str(tmp_path / d),
                                     **config})

    with pylog.open(tmp_path / "data") as client:
        client.create_topic("lines", 2)
        client.create_topic("counts", 2)
        produce(client, "lines", [(f"k{i}", "x y" if i % 2 else "y z") for i in range(20)])
        produce(client, "lines", [("s", "stall x")])
        a = app("state-a", stall, **{"max.poll.interval.ms": 1000})
        b = app("state-b", lambda w: b_works.set())
        threads = [threading.Thread(target=a.run, args=(client,), kwargs={"poll_timeout_ms": 50})]
        threads[0].start()
        try:
            assert stalled.wait(60)
            threads.append(threading.Thread(target=b.run, args=(client,), kwargs={"poll_timeout_ms": 50}))
            threads[1].start()
            assert b_works.wait(60)     # B has A's tasks (A left when its poll interval passed)
            release.set()
            produce(client, "lines", [("late", "x z")])
            wait_for_updates(client, {"x": list(range(1, 13)), "y": list(range(1, 21)), "z": list(range(1, 12)),
                                      "stall": [1]}, "after A rejoined")
        finally:
            release.set()
            a.stop()
            b.stop()
            for t in threads:
                t.join(timeout=150)
        assert not any(t.is_alive() for t in threads)
