"""Compaction alongside everything else: appends and reads while a clean runs (the log's
lock is held for the swap only), read results that outlive the segments they point into,
logs truncated, trimmed or closed under a clean, two cleaners on one log, and the
background cleaner thread of a LogManager.

No sleeps: threads meet on events, and joins have generous timeouts only to turn a
deadlock into a failure.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from pylog.records import iter_batches
from pylog.storage import LogConfig, LogManager
from pylog.storage import cleaner as cleaner_module
from pylog.storage.cleaner import LogCleaner
from tests.storage.test_cleaner import T0, kbatch, latest_per_key, log_records, open_log

JOIN = 120  # seconds: only ever reached by a deadlock


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "compacted-0")


def _fill(log, n, keys=5, start=0):
    appended = []
    for i in range(start, start + n):
        key = b"k%d" % (i % keys)
        info = log.append(kbatch([(key, b"%s=%d" % (key, i))]))
        appended.append((info.base_offset, key, b"%s=%d" % (key, i), (), T0))
    return appended


def _counts(view) -> list[int]:
    return [batch.records_count for batch in iter_batches(view)]


def _records(view) -> list:
    return [rec for batch in iter_batches(view) for rec in batch]


def _hook_first_write(monkeypatch, action):
    """Run ``action`` when the clean writes its first output (filtering under way, no swap
    done yet)."""
    real = cleaner_module._Output.write
    fired = []

    def write(self, data):
        if not fired:
            fired.append(True)
            action()
        return real(self, data)

    monkeypatch.setattr(cleaner_module._Output, "write", write)
    return fired


def test_log_lock_is_free_while_filtering(log_path, monkeypatch):
    """Another thread appends and reads in the middle of a clean: it would block until the
    clean ends if the clean held the log's lock."""
    log = open_log(log_path)
    appended = _fill(log, 60)
    log.roll()
    done = threading.Event()
    seen = []

    def other_thread():
        info = log.append(kbatch([(b"k0", b"during")]))
        seen.append(info.base_offset)
        seen.append(log.read(0, 1 << 20).size)
        done.set()

    def action():
        t = threading.Thread(target=other_thread)
        t.start()
        t.join(JOIN)
        assert done.is_set(), "append blocked while the cleaner was filtering"

    fired = _hook_first_write(monkeypatch, action)
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert fired and stats.cleaned
    assert seen[0] == 60 and seen[1] > 0
    records = log_records(log)
    assert records[-1][:3] == (60, b"k0", b"during")
    assert [r[:3] for r in records[:-1]] == [r[:3] for r in latest_per_key(appended, 60)]
    log.close()


def test_read_results_outlive_the_swap(log_path):
    log = open_log(log_path)
    _fill(log, 80)
    log.roll()
    held = []
    offset = 0
    while offset < log.log_end_offset:
        r = log.read(offset, 1 << 20)
        held.append((r, bytes(r.records)))
        offset = r.next_offset
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert stats.cleaned and stats.records_removed > 0
    for r, copy in held:
        assert bytes(r.records) == copy            # still the old segment's bytes
        assert all(n >= 1 for n in _counts(r.records))   # and whole, CRC-checked batches
        r.release()
    # Later reads see the cleaned log.
    assert len(log_records(log)) == 5
    log.close()


def test_reads_and_appends_during_cleans(log_path):
    """Appender, readers and a cleaner at once: every record a reader sees is the one
    appended at that offset, offsets increase, and the final log is the compacted one."""
    log = open_log(log_path, segment_bytes=900)
    appended: dict[int, tuple] = {}
    stop = threading.Event()
    errors: list[BaseException] = []
    cleans = []

    def appender():
        try:
            rng = random.Random(1)
            for i in range(400):
                recs = [(b"k%d" % rng.randrange(7), b"v%d-%d" % (i, j)) for j in range(rng.randint(1, 3))]
                info = log.append(kbatch(recs))
                for j, (k, v) in enumerate(recs):
                    appended[info.base_offset + j] = (k, v)
                if i % 50 == 49:
                    log.roll()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            stop.set()

    def reader(seed):
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                end = log.log_end_offset
                if end == 0:
                    continue
                r = log.read(rng.randrange(end), 1 << 14)
                last = -1
                for rec in _records(r.records):
                    assert rec.offset > last
                    last = rec.offset
                    known = appended.get(rec.offset)
                    if known is not None:
                        assert (rec.key, rec.value) == known
                    else:
                        assert rec.value.startswith(b"v")
                r.release()
        except BaseException as exc:
            errors.append(exc)

    def cleaner():
        c = LogCleaner()
        try:
            while not stop.is_set() or not cleans:
                cleans.append(c.clean(log, now_ms=T0, force=True))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender), threading.Thread(target=cleaner)]
    threads += [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]
    assert any(s.cleaned for s in cleans)
    log.roll()
    LogCleaner().clean(log, now_ms=T0, force=True)
    model = [(o, k, v, (), None) for o, (k, v) in sorted(appended.items())]
    assert [r[:3] for r in log_records(log)] == [r[:3] for r in latest_per_key(model, log.log_end_offset)]
    log.close()


def test_truncation_during_a_clean_abandons_it(log_path, monkeypatch):
    log = open_log(log_path)
    appended = _fill(log, 60)
    log.roll()
    _fill(log, 3, start=60)
    _hook_first_write(monkeypatch, lambda: log.truncate_to(30))
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert not stats.cleaned and stats.reason.startswith("aborted:")
    assert [r[:3] for r in log_records(log)] == [r[:3] for r in appended[:30]]
    assert not [n for n in os.listdir(log_path) if n.endswith(".cleaned")]
    monkeypatch.undo()
    more = _fill(log, 20, start=30)
    log.roll()
    assert LogCleaner().clean(log, now_ms=T0, force=True).cleaned
    assert [r[:3] for r in log_records(log)] == [r[:3] for r in latest_per_key(appended[:30] + more, 50)]
    log.close()


def test_delete_records_during_a_clean_abandons_it(log_path, monkeypatch):
    log = open_log(log_path)
    appended = _fill(log, 60)
    log.roll()
    _hook_first_write(monkeypatch, lambda: log.delete_records_before(40))
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert not stats.cleaned and stats.reason.startswith("aborted:")
    assert [r[:3] for r in log_records(log)] == [r[:3] for r in appended[40:]]
    log.close()


def test_close_during_a_clean_abandons_it(log_path, monkeypatch):
    log = open_log(log_path)
    appended = _fill(log, 60)
    log.roll()
    _hook_first_write(monkeypatch, log.close)
    stats = LogCleaner().clean(log, now_ms=T0, force=True)
    assert not stats.cleaned and stats.reason == "aborted: the log was closed"
    assert not [n for n in os.listdir(log_path) if n.endswith(".cleaned")]
    log = open_log(log_path)
    assert [r[:3] for r in log_records(log)] == [r[:3] for r in appended]
    log.close()


def test_two_cleaners_on_one_log_take_turns(log_path, monkeypatch):
    """A second cleaner's clean of the same log waits for the first (both write the same
    ``.cleaned`` names)."""
    log = open_log(log_path)
    appended = _fill(log, 60)
    log.roll()
    results = []
    second_started = threading.Event()

    def second():
        second_started.set()
        results.append(LogCleaner().clean(log, now_ms=T0, force=True))

    t = threading.Thread(target=second)

    def action():
        t.start()
        second_started.wait(JOIN)

    _hook_first_write(monkeypatch, action)
    first = LogCleaner().clean(log, now_ms=T0, force=True)
    t.join(JOIN)
    assert first.cleaned and results and results[0].cleaned
    assert results[0].records_removed == 0       # it ran after the first one
    assert [r[:3] for r in log_records(log)] == [r[:3] for r in latest_per_key(appended, 60)]
    log.close()


def test_background_cleaner_of_a_log_manager(tmp_path):
    cfg = LogConfig(segment_bytes=1024, cleanup_policy="compact", min_cleanable_dirty_ratio=0.5)
    with LogManager(str(tmp_path), config=cfg) as mgr:
        log = mgr.get_or_create_log("users", 0)
        appended = _fill(log, 50)
        log.roll()
        with LogCleaner(mgr, interval_ms=3_600_000) as cleaner:
            cleaner.start()
            assert cleaner.running
            assert cleaner.wait_for_pass(JOIN)
            assert [r[:3] for r in log_records(log)] == [r[:3] for r in latest_per_key(appended, 50)]
            more = _fill(log, 50, start=50)
            log.roll()
            assert cleaner.wait_for_pass(JOIN)
            assert [r[:3] for r in log_records(log)] == [r[:3] for r in latest_per_key(appended + more, 100)]
            cleaner.stop(JOIN)
            assert not cleaner.running
            assert not cleaner.wait_for_pass(1)
        assert cleaner.first_dirty_offset(log) == 100
