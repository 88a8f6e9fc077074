"""The task state manager: checkpoint file, restore with listener and progress bar,
damaged checkpoints, and Kafka's crash rule (a store directory left by a crash is kept
under at-least-once and wiped under exactly-once), with a real SIGKILLed process."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys

import pytest

from pylog.errors import KafkaStorageError
from pylog.streams.state import (InMemoryKeyValueStore, InMemoryWindowStore, ProcessorStateManager, Stores,
                                 read_checkpoint, write_checkpoint)

from .conftest import RecordingContext

ROOT = pathlib.Path(__file__).resolve().parents[3]
KV_TP = ("app-kv-changelog", 0)


# -- the checkpoint file ----------------------------------------------------------

def test_checkpoint_round_trip_in_kafkas_format(tmp_path):
    path = str(tmp_path / ".checkpoint")
    assert read_checkpoint(path) == {}
    write_checkpoint(path, {("b-changelog", 3): 17, ("a-changelog", 0): 0})
    assert (tmp_path / ".checkpoint").read_text() == "0\n2\na-changelog 0 0\nb-changelog 3 17\n"
    assert read_checkpoint(path) == {("a-changelog", 0): 0, ("b-changelog", 3): 17}
    assert not (tmp_path / ".checkpoint.tmp").exists()


@pytest.mark.parametrize("content", [
    b"",                                   # empty
    b"1\n1\nt 0 5\n",                      # unknown version
    b"0\n2\nt 0 5\n",                      # count says 2, holds 1
    b"0\n1\nt 0\n",                        # malformed line
    b"0\n1\nt x 5\n",                      # partition not a number
    b"0\n1\nt 0 -3\n",                     # negative offset
    b"0\n2\nt 0 5\nt 0 6\n",               # the same partition twice
    b"\xff\xfe\x00garbage",                # not text
    b"0\n1\n t 0 5\n",                     # empty topic
], ids=["empty", "version", "count", "short-line", "partition", "negative", "twice", "binary", "topic"])
def test_damaged_checkpoints_are_never_trusted(tmp_path, caplog, content):
    path = tmp_path / ".checkpoint"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="pylog.streams.state.checkpoint"):
        assert read_checkpoint(str(path)) is None
    assert "damaged state checkpoint" in caplog.text


def test_checkpoint_without_final_newline_is_well_formed(tmp_path):
    # Kafka's reader reads lines too; the atomic rename means a torn file never appears.
    (tmp_path / ".checkpoint").write_bytes(b"0\n1\nt 0 5")
    assert read_checkpoint(str(tmp_path / ".checkpoint")) == {("t", 0): 5}


# -- restore --------------------------------------------------------------------

class Listener:
    def __init__(self):
        self.calls = []

    def on_restore_start(self, tp, name, start, end):
        self.calls.append(("start", tp, name, start, end))

    def on_batch_restored(self, tp, name, batch_end, n):
        self.calls.append(("batch", tp, name, batch_end, n))

    def on_restore_end(self, tp, name, total):
        self.calls.append(("end", tp, name, total))


def _changelog(n, keys=7):
    return [(o, b"k%d" % (o % keys), None if o % 5 == 4 else b"v%d" % o) for o in range(n)]


def _replay(records):
    model = {}
    for _, k, v in records:
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v
    return sorted(model.items())


def test_restore_in_batches_tells_the_listener_and_draws_progress(tmp_path, capsys):
    listener = Listener()
    m = ProcessorStateManager(str(tmp_path), "app", "0_0", restore_listener=listener, show_progress=True)
    kv = Stores.in_memory_key_value_store("kv").build()
    m.register(kv, KV_TP)
    m.initialize(RecordingContext(tmp_path))
    assert m.restore_start_offsets() == {"kv": (KV_TP, 0)}
    records = _changelog(25)
    assert m.restore("kv", iter(records), end_offset=25, batch_size=10) == 25
    assert list(kv.all()) == _replay(records)
    assert listener.calls == [("start", KV_TP, "kv", 0, 25), ("batch", KV_TP, "kv", 9, 10),
                              ("batch", KV_TP, "kv", 19, 10), ("batch", KV_TP, "kv", 24, 5),
                              ("end", KV_TP, "kv", 25)]
    assert m.changelog_offsets() == {KV_TP: 24}
    assert "restoring kv" in capsys.readouterr().err
    m.close()


def test_restore_stops_at_the_end_offset(tmp_path):
    m = ProcessorStateManager(str(tmp_path), "app", "0_0")
    kv = Stores.in_memory_key_value_store("kv").build()
    m.register(kv, KV_TP)
    m.initialize(RecordingContext(tmp_path))
    records = _changelog(20)
    assert m.restore("kv", iter(records), end_offset=12) == 12
    assert list(kv.all()) == _replay(records[:12])
    m.close()


def test_a_store_already_at_its_end_offset_is_not_restored(tmp_path):
    # one restore loop for every store (pylog.streams.restore.restore_loop): as in
    # Kafka, a store with nothing to restore gets no listener call at all
    listener = Listener()
    m = ProcessorStateManager(str(tmp_path), "app", "0_0", restore_listener=listener)
    kv = Stores.in_memory_key_value_store("kv").build()
    m.register(kv, KV_TP)
    m.initialize(RecordingContext(tmp_path))
    assert m.restore("kv", iter([]), end_offset=0) == 0
    assert m.restore("kv", iter(_changelog(3)), end_offset=3) == 3
    assert m.restore("kv", iter([]), end_offset=3) == 0    # caught up: starts after offset 2
    assert [c[0] for c in listener.calls] == ["start", "batch", "end"]
    m.close()


def test_restore_equals_replay_of_what_the_logging_wrapper_emitted(tmp_path):
    src_ctx = RecordingContext(tmp_path / "src")
    win = Stores.in_memory_window_store("win", 120_000, 1000).build()
    win.init(src_ctx)
    for i in range(300):
        src_ctx.timestamp = i
        win.put(b"k%d" % (i % 13), None if i % 17 == 0 else b"%d" % i, (i * 997) % 400_000)
    m = ProcessorStateManager(str(tmp_path), "app", "0_1")
    restored = Stores.persistent_window_store("win", 120_000, 1000).build()
    m.register(restored, ("app-win-changelog", 0))
    m.initialize(RecordingContext(tmp_path, task_id="0_1"))
    m.restore("win", iter(src_ctx.records()), end_offset=len(src_ctx.changelog), batch_size=64)
    assert list(restored.all()) == list(win.all())
    assert restored.observed_stream_time == win.observed_stream_time
    m.close()


# -- checkpoint on commit, and starting from it --------------------------------------

def _kv_task(tmp_path, exactly_once=False, **kw):
    m = ProcessorStateManager(str(tmp_path), "app", "0_0", exactly_once=exactly_once, **kw)
    kv = Stores.persistent_key_value_store("kv").build()
    mem = Stores.in_memory_key_value_store("mem").build()
    m.register(kv, KV_TP)
    m.register(mem, ("app-mem-changelog", 0))
    return m, kv, mem


def test_commit_checkpoints_persistent_stores_only_and_restore_resumes_after_it(tmp_path):
    m, kv, mem = _kv_task(tmp_path)
    ctx = RecordingContext(tmp_path)
    m.initialize(ctx)
    kv.put(b"a", b"1")
    mem.put(b"a", b"1")
    m.update_changelog_offsets({KV_TP: 41, ("app-mem-changelog", 0): 7})
    assert m.commit(enforce_checkpoint=True)
    assert read_checkpoint(m.checkpoint_path) == {KV_TP: 41}  # in-memory stores are never checkpointed
    m.close()
    m2, kv2, mem2 = _kv_task(tmp_path)
    m2.initialize(ctx)
    assert m2.restore_start_offsets() == {"kv": (KV_TP, 42), "mem": (("app-mem-changelog", 0), 0)}
    assert kv2.get(b"a") == b"1"
    m2.close()


def test_commit_checkpoints_once_the_changelogs_moved_10000_records(tmp_path):
    m, kv, _ = _kv_task(tmp_path)
    m.initialize(RecordingContext(tmp_path))
    cached = Stores.in_memory_key_value_store("cached").with_caching_enabled().build()
    m2 = ProcessorStateManager(str(tmp_path), "app", "0_9")
    m2.register(cached, ("app-cached-changelog", 0))
    ctx = RecordingContext(tmp_path, task_id="0_9")
    m2.initialize(ctx)
    cached.put(b"a", b"1")
    assert not m2.commit() and [k for _, k, _, _ in ctx.changelog] == [b"a"]  # caches flush on every commit
    m2.close()
    m.update_changelog_offsets({KV_TP: 5_000})
    assert not m.commit()
    assert not os.path.exists(m.checkpoint_path)
    m.update_changelog_offsets({KV_TP: 10_000})  # 10,001 records past "nothing"
    assert m.commit()
    assert read_checkpoint(m.checkpoint_path) == {KV_TP: 10_000}
    m.update_changelog_offsets({KV_TP: 20_000})
    assert not m.commit()  # exactly 10,000 past the last checkpoint: not yet
    m.update_changelog_offsets({KV_TP: 20_001})
    assert m.commit()
    m.close()


def test_damaged_checkpoint_means_full_restore(tmp_path, caplog):
    m, kv, _ = _kv_task(tmp_path)
    m.initialize(RecordingContext(tmp_path))
    m.update_changelog_offsets({KV_TP: 9})
    m.close()
    pathlib.Path(m.checkpoint_path).write_text("0\n1\napp-kv-changelog 0 nine\n")
    m2, _, _ = _kv_task(tmp_path)
    with caplog.at_level(logging.WARNING):
        m2.initialize(RecordingContext(tmp_path))
    assert m2.restore_start_offsets()["kv"] == (KV_TP, 0)
    assert "damaged state checkpoint" in caplog.text
    m2.close()


def test_exactly_once_deletes_the_checkpoint_once_read_and_writes_it_on_clean_close(tmp_path):
    m, kv, _ = _kv_task(tmp_path, exactly_once=True)
    ctx = RecordingContext(tmp_path)
    m.initialize(ctx)
    kv.put(b"a", b"1")
    m.update_changelog_offsets({KV_TP: 3})
    m.commit()
    assert not os.path.exists(m.checkpoint_path)  # exactly-once: not on commit
    m.close()
    assert read_checkpoint(m.checkpoint_path) == {KV_TP: 3}
    m2, kv2, _ = _kv_task(tmp_path, exactly_once=True)
    m2.initialize(ctx)
    assert not os.path.exists(m2.checkpoint_path)  # a crash from now on leaves none
    assert m2.restore_start_offsets()["kv"] == (KV_TP, 4)
    assert kv2.get(b"a") == b"1"  # a clean close: the store is kept
    m2.close()


def test_unreadable_store_directory_is_wiped_and_fully_restored(tmp_path, caplog):
    m, kv, _ = _kv_task(tmp_path)
    m.initialize(RecordingContext(tmp_path))
    kv.put(b"a", b"1")
    m.update_changelog_offsets({KV_TP: 5})
    m.close()
    store_dir = pathlib.Path(tmp_path, "app", "0_0", "rocksdb", "kv")
    for f in store_dir.iterdir():
        if f.name.startswith("MANIFEST") or f.name == "CURRENT":
            f.write_bytes(b"\x00garbage")
    m2, kv2, _ = _kv_task(tmp_path)
    with caplog.at_level(logging.WARNING):
        m2.initialize(RecordingContext(tmp_path))
    assert "could not open" in caplog.text
    assert m2.restore_start_offsets()["kv"] == (KV_TP, 0)  # the checkpoint no longer applies
    assert kv2.get(b"a") is None
    m2.close()


# -- a real crash ----------------------------------------------------------------

def _crash(tmp_path, mode, n_before, n_after):
    changelog = tmp_path / "changelog.jsonl"
    proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("crash_task.py")),
                           str(tmp_path), str(changelog), mode, str(n_before), str(n_after)],
                          cwd=str(ROOT), capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == -9, proc.stderr.decode()
    by_topic = {}
    for line in changelog.read_text().splitlines():
        topic, offset, key, value = json.loads(line)
        by_topic.setdefault(topic, []).append((offset, bytes.fromhex(key), None if value is None else bytes.fromhex(value)))
    return by_topic


def _restart(tmp_path, mode, by_topic):
    m = ProcessorStateManager(str(tmp_path), "app", "1_0", exactly_once=(mode == "exactly_once"))
    kv = Stores.persistent_key_value_store("kv").build()
    win = Stores.persistent_window_store("win", 600_000, 1000).build()
    m.register(kv, ("app-kv-changelog", 0))
    m.register(win, ("app-win-changelog", 0))
    m.initialize(RecordingContext(tmp_path, task_id="1_0"))
    starts = m.restore_start_offsets()
    for name, (tp, start) in starts.items():
        records = by_topic[tp[0]]
        m.restore(name, iter(r for r in records if r[0] >= start), end_offset=len(records))
    return m, kv, win, starts


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_sigkilled_task_restores_to_the_replay_of_its_changelog(tmp_path, mode, caplog):
    by_topic = _crash(tmp_path, mode, n_before=400, n_after=150)
    kv_records, win_records = by_topic["app-kv-changelog"], by_topic["app-win-changelog"]
    store_dir = tmp_path / "app" / "1_0" / "rocksdb" / "kv"
    assert store_dir.is_dir()  # left behind by the crash, never closed
    with caplog.at_level(logging.WARNING, logger="pylog.streams.state.manager"):
        m, kv, win, starts = _restart(tmp_path, mode, by_topic)
    try:
        if mode == "at_least_once":
            # Kept, and resumed after the offsets the commit checkpointed.
            assert starts["kv"][1] == 400 and starts["win"][1] == 400
            assert "wiping" not in caplog.text
        else:
            # No checkpoint survives a crash under exactly-once: wiped, restored in full.
            assert starts["kv"][1] == 0 and starts["win"][1] == 0
            assert caplog.text.count("wiping") == 2
        assert list(kv.all()) == _replay(kv_records)
        expect = InMemoryWindowStore("w", 600_000, 1000)
        expect.init(None)
        expect.restore_batch([(k, v) for _, k, v in win_records])
        assert list(win.all()) == list(expect.all())
    finally:
        m.close()


def test_replaying_a_kept_store_from_its_checkpoint_gives_the_same_state_as_a_fresh_restore(tmp_path):
    by_topic = _crash(tmp_path, "at_least_once", n_before=100, n_after=300)
    m, kv, _, _ = _restart(tmp_path, "at_least_once", by_topic)
    kept = list(kv.all())
    m.close()
    fresh = InMemoryKeyValueStore("f")
    fresh.init(None)
    fresh.restore_batch([(k, v) for _, k, v in by_topic["app-kv-changelog"]])
    assert kept == list(fresh.all())


def test_a_store_another_instance_holds_open_is_refused_not_wiped(tmp_path):
    # RocksDB's LOCK refuses the second open: that is no damage, and wiping the
    # directory would delete the live store's files under it.
    m, kv, _ = _kv_task(tmp_path)
    m.initialize(RecordingContext(tmp_path))
    kv.put(b"a", b"1")
    m.update_changelog_offsets({KV_TP: 5})
    m.commit(enforce_checkpoint=True)
    m2, kv2, _ = _kv_task(tmp_path)
    with pytest.raises(KafkaStorageError, match="another instance"):
        m2.initialize(RecordingContext(tmp_path))
    assert kv.get(b"a") == b"1"
    m.close()
    m3, kv3, _ = _kv_task(tmp_path)
    m3.initialize(RecordingContext(tmp_path))
    assert m3.restore_start_offsets()["kv"] == (KV_TP, 6)   # the checkpoint still applies
    assert kv3.get(b"a") == b"1"
    m3.close()
