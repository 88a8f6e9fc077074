"""Model-based test of the whole partition log, compaction included (in the spirit of
Redpanda's opfuzz): hypothesis drives a real Log in a temporary directory through
appends (random keys, null keys, tombstones, headers, codecs, batch sizes), rolls,
truncations, DeleteRecords, retention, compaction (forced or by dirty ratio, with a clock
that moves so delete horizons pass), flushes, clean reopens, crashes (the directory copied
file by file as it is on disk, then the copy reopened), and crashes in the middle of a
compaction; after every step the log must match an in-memory model: log start and end
offsets, and every readable record (offset, key, value, headers, timestamp), read back
through Log.read and decoded by kafka-python.

The model of a clean of ``[log_start, E)`` (E: the active segment's base offset): a keyed
record stays if no later record in the range has its key; a surviving tombstone is
dropped if its batch's delete horizon has passed, and otherwise gives its batch the
horizon ``now + delete_retention_ms`` if it has none; keyless records stay.  A crash in
the middle of a clean may leave any mix of swapped and unswapped groups: there the check
is that the log holds at least what a finished clean keeps and nothing the log did not
hold before, after which the model adopts what the log holds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pylog.storage import Log
from pylog.storage.cleaner import LogCleaner
from tests.storage.test_cleaner import T0, header, log_batches, pbatch
from tests.storage.test_cleaner_crash import CrashPoint, crash_at

DRR = 1_000  # delete_retention_ms
ATTR_CONTROL, ATTR_DELETE_HORIZON = 0x20, 0x40

keys = st.sampled_from([b"a", b"b", b"c", b"d", None])
values = st.one_of(st.none(), st.binary(max_size=16))
headers = st.lists(st.tuples(st.sampled_from(["h", "trace"]), st.binary(max_size=4)), max_size=1)
records = st.lists(st.tuples(keys, values, headers), min_size=1, max_size=8)
codecs = st.sampled_from(["none", "none", "gzip", "lz4", "zstd"])


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    headers: tuple
    timestamp: int
    batch: int          # base offset of the batch holding it


def read_log(log: Log) -> tuple[list[tuple], dict[int, list]]:
    """Readable data records as (offset, key, value, headers, timestamp, batch base) and
    the data batches as {base: [last_offset, delete horizon or None]}."""
    from kafka.record.default_records import DefaultRecordBatch

    out, batches = [], {}
    for raw in log_batches(log):
        h = header(raw)
        if h["attributes"] & ATTR_CONTROL or h["records_count"] == 0:
            continue
        base = h["base_offset"]
        horizon = h["base_timestamp"] if h["attributes"] & ATTR_DELETE_HORIZON else None
        batches[base] = [base + h["last_offset_delta"], horizon]
        for rec in DefaultRecordBatch(raw):
            if rec.offset >= log.log_start_offset:
                out.append((rec.offset, rec.key, rec.value, tuple(rec.headers), rec.timestamp, base))
    return out, batches


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="pylog-sm-")
        self.generation = 0
        self.path = os.path.join(self.tmp, "g0", "sm-0")
        self.cleaner = LogCleaner(seed=bytes(16))
        self.settings: dict = {}
        self.log: Log | None = None
        self.now = T0
        self.records: dict[int, Rec] = {}
        self.batches: dict[int, list] = {}     # base -> [last offset, horizon or None]
        self.start = 0
        self.end = 0

    # -- setup and teardown ------------------------------------------------------------

    @initialize(segment_bytes=st.sampled_from([500, 900, 4096]), ratio=st.sampled_from([0.0, 0.5, 0.9]))
    def open(self, segment_bytes, ratio):
        self.settings = dict(segment_bytes=segment_bytes, index_interval_bytes=64, cleanup_policy="compact",
                             delete_retention_ms=DRR, min_cleanable_dirty_ratio=ratio)
        self.log = Log.open(self.path, **self.settings)

    def teardown(self) -> None:
        if self.log is not None:
            try:
                self.log.close()
            except Exception:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- model helpers -----------------------------------------------------------------

    def _drop_below_start(self) -> None:
        for o in [o for o in self.records if o < self.start]:
            del self.records[o]
        self._drop_empty_batches()

    def _drop_empty_batches(self) -> None:
        live = {r.batch for r in self.records.values()}
        for base in [b for b in self.batches if b not in live]:
            del self.batches[base]

    def _compacted(self, end_offset: int) -> tuple[dict[int, Rec], dict[int, list]]:
        """The model after a clean of [start, end_offset) at self.now."""
        records = dict(self.records)
        batches = {b: list(v) for b, v in self.batches.items()}
        in_range = sorted(o for o in records if self.start <= o < end_offset)
        latest = {}
        for o in in_range:
            if records[o].key is not None:
                latest[records[o].key] = o
        horizons = set()
        for o in in_range:
            rec = records[o]
            if rec.key is None:
                continue
            if latest[rec.key] != o:
                del records[o]
            elif rec.value is None:
                horizon = batches[rec.batch][1]
                if horizon is not None and horizon <= self.now:
                    del records[o]
                elif horizon is None:
                    horizons.add(rec.batch)
        for base in horizons:
            batches[base][1] = self.now + DRR
        live = {r.batch for r in records.values()}
        return records, {b: v for b, v in batches.items() if b in live}

    def _switch_to_copy(self) -> None:
        """Open the copy made at ``self.copy`` in place of the current directory."""
        try:
            self.log.close()
        except Exception:
            pass  # a crash copy was taken; the old directory is abandoned either way
        self.path = self.copy
        self.log = Log.open(self.path, **self.settings)
        self._after_open()

    def _after_open(self) -> None:
        if self.start > self.end:  # Log.open: the log start never exceeds the log end
            self.start = self.end
        self._drop_below_start()

    def _next_copy(self) -> str:
        self.generation += 1
        return os.path.join(self.tmp, f"g{self.generation}", "sm-0")

    # -- rules ---------------------------------------------------------------------------

    @rule(recs=records, codec=codecs)
    def append(self, recs, codec):
        self._append(recs, codec)

    @rule(many=st.lists(st.tuples(records, codecs), min_size=2, max_size=6))
    def append_several(self, many):
        for recs, codec in many:
            self._append(recs, codec)

    def _append(self, recs, codec):
        batch = pbatch([(k, v, tuple(h), self.now + i) for i, (k, v, h) in enumerate(recs)], codec=codec)
        info = self.log.append(batch)
        assert info.base_offset == self.end
        for i, (k, v, h) in enumerate(recs):
            if info.base_offset + i >= self.start:
                self.records[info.base_offset + i] = Rec(k, v, tuple(h), self.now + i, info.base_offset)
        self.batches[info.base_offset] = [info.base_offset + len(recs) - 1, None]
        self.end = info.base_offset + len(recs)
        self._drop_empty_batches()

    @rule(op=st.sampled_from(["roll", "roll", "flush", "apply_retention"]))
    def housekeeping(self, op):
        if op == "roll":
            self.log.roll()
        elif op == "flush":
            self.log.flush()
        else:
            assert self.log.apply_retention(now_ms=self.now).log_start_offset == self.start

    @rule(ms=st.integers(1, 2 * DRR))
    def tick(self, ms):
        self.now += ms

    @rule(back=st.one_of(st.integers(1, 12), st.just(-1)), ahead=st.integers(0, 8), kind=st.sampled_from(["truncate", "delete_records"]))
    def trim(self, back, ahead, kind):
        if kind == "truncate":
            self._truncate(back)
        else:
            self._delete_records(ahead)

    def _truncate(self, back):
        """Truncate a few offsets back from the end (a replica's divergent tail), or
        (back = -1) to just below the log start."""
        target = max(0, self.end - back if back >= 0 else self.start - 1)
        removed = self.log.truncate_to(target)
        assert removed == (target < self.end)
        if target >= self.end:
            return
        if target < self.start:
            self.records.clear()
            self.batches.clear()
            self.start = self.end = target
            return
        # A batch holding the target goes whole, but the log never ends below its start.
        holding = [b for b, (last, _h) in self.batches.items() if b <= target <= last]
        self.end = max(min([target] + holding), self.start)
        for o in [o for o in self.records if o >= self.end]:
            del self.records[o]
        self._drop_empty_batches()

    def _delete_records(self, ahead):
        offset = min(self.start + ahead, max(self.start, self.end))
        assert self.log.delete_records_before(offset) == max(self.start, offset)
        self.start = max(self.start, offset)
        self._drop_below_start()

    @rule(force=st.booleans(), roll=st.booleans(), wait=st.sampled_from([0, 0, DRR]))
    def compact(self, force, roll, wait):
        self.now += wait    # sometimes exactly one delete retention later
        if roll:
            self.log.roll()
        active_base = self.log.active_segment.base_offset
        stats = self.cleaner.clean(self.log, now_ms=self.now, force=force)
        if stats.cleaned:
            assert stats.end_offset == active_base
            self.records, self.batches = self._compacted(stats.end_offset)
        else:
            assert stats.reason in ("nothing_to_clean", "below_min_dirty_ratio"), stats.reason
            assert force is False or stats.reason == "nothing_to_clean"

    @rule(step=st.integers(0, 30))
    def crash_during_compaction(self, step):
        active_base = self.log.active_segment.base_offset
        self.copy = self._next_copy()
        os.makedirs(os.path.dirname(self.copy))
        try:
            with crash_at(step, self.path, copy_to=self.copy):
                stats = self.cleaner.clean(self.log, now_ms=self.now, force=True)
        except CrashPoint:
            floor, _ = self._compacted(active_base)
            self._switch_to_copy()
            got, batches = read_log(self.log)
            pre = self.records
            for o, k, v, h, ts, base in got:
                assert o in pre, f"offset {o} was not in the log before the clean"
                assert (k, v, h, ts) == (pre[o].key, pre[o].value, pre[o].headers, pre[o].timestamp)
            offsets = {rec[0] for rec in got}
            lost = [o for o in floor if o >= self.start and o not in offsets]
            assert not lost, f"a crash lost records a finished clean keeps: {lost}"
            assert (self.log.log_start_offset, self.log.log_end_offset) == (self.start, self.end)
            self.records = {o: Rec(k, v, h, ts, base) for o, k, v, h, ts, base in got}
            self.batches = batches
            return
        shutil.rmtree(os.path.dirname(self.copy))
        if stats.cleaned:
            self.records, self.batches = self._compacted(stats.end_offset)

    @rule(clean=st.booleans())
    def restart(self, clean):
        if not clean:
            self._crash()
            return
        self.log.close()
        self.log = Log.open(self.path, **self.settings)
        self._after_open()

    def _crash(self):
        """Unclean shutdown: the files as they are now, without the close's trimming,
        checkpoints or clean-shutdown marker."""
        self.copy = self._next_copy()
        from tests.storage.test_cleaner_crash import copy_dir

        copy_dir(self.path, self.copy)
        self._switch_to_copy()

    # -- the check -------------------------------------------------------------------------

    @invariant()
    def matches_model(self):
        if self.log is None:
            return
        assert (self.log.log_start_offset, self.log.log_end_offset) == (self.start, self.end)
        got, _batches = read_log(self.log)
        expected = [(o, r.key, r.value, r.headers, r.timestamp, r.batch)
                    for o, r in sorted(self.records.items()) if o >= self.start]
        assert got == expected


LogMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_log_state_machine = LogMachine.TestCase


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_log_state_machine_long():
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(LogMachine, settings=settings(
        max_examples=400, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]))
