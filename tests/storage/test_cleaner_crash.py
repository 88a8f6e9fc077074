"""Crash safety of compaction: a crash at any step of a clean leaves a log that reopens
with, for every key, its latest value at its offset, and nothing but original records.

Two ways to crash: in-process, the directory is copied file by file at the k-th file
operation of a clean (before it happens) and the copy is reopened, for every k; and a
child process that cleans is killed with SIGKILL at a chosen step.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from pylog.storage import Log
from pylog.storage import segment as segment_module
from pylog.storage.cleaner import LogCleaner
from tests.storage.test_cleaner import DAY, T0, kbatch, latest_per_key, log_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CrashPoint(Exception):
    """Raised in place of the k-th file operation of a clean."""


@contextlib.contextmanager
def crash_at(step: int | None, directory: str, copy_to: str | None = None, on_step=None):
    """Count the file operations of the code run inside (renames, unlinks and truncations
    of files in ``directory``, fsyncs, segment appends); at operation ``step`` copy
    ``directory`` as it is on disk to ``copy_to`` (or call ``on_step``) and raise
    CrashPoint instead of performing it.  Yields a list whose length is the count.

    Only the calling thread's operations count: the log's background flusher fsyncs
    sealed segments on its own schedule, and counting those made the step land at
    random, in another thread (which then copied ``directory`` while the caller went
    on)."""
    seen: list[str] = []
    caller = threading.get_ident()
    real = {name: getattr(os, name) for name in ("rename", "replace", "unlink", "fsync", "ftruncate")}
    real_append = segment_module.LogSegment.append
    directory = os.path.abspath(directory)

    def hit(what: str) -> None:
        if threading.get_ident() != caller:
            return
        seen.append(what)
        if step is not None and len(seen) - 1 == step:
            if copy_to is not None:
                copy_dir(directory, copy_to)
            if on_step is not None:
                on_step()
            raise CrashPoint(what)

    def ours(path) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(path)).startswith(directory)

    def wrap(name):
        fn = real[name]

        def call(*args, **kwargs):
            if name in ("fsync", "ftruncate") or ours(args[0]):
                hit(f"{name} {args[0]}")
            return fn(*args, **kwargs)
        return call

    def append(self, *args, **kwargs):
        hit(f"append {self.base_offset}{self.suffix}")
        return real_append(self, *args, **kwargs)

    for name in real:
        setattr(os, name, wrap(name))
    segment_module.LogSegment.append = append
    try:
        yield seen
    finally:
        for name, fn in real.items():
            setattr(os, name, fn)
        segment_module.LogSegment.append = real_append


def copy_dir(src: str, dst: str) -> None:
    """Copy every regular file of ``src`` into a fresh ``dst``, as the bytes are now."""
    os.makedirs(dst)
    for name in os.listdir(src):
        full = os.path.join(src, name)
        if os.path.isfile(full):
            with open(full, "rb") as f_in, open(os.path.join(dst, name), "wb") as f_out:
                f_out.write(f_in.read())


SETTINGS = dict(segment_bytes=700, index_interval_bytes=64, cleanup_policy="compact", delete_retention_ms=DAY)


def build_log(path: str, seed: int) -> tuple[Log, list[tuple]]:
    """A compacted-topic log with several sealed segments of duplicates and tombstones and
    an active segment; returns it and every record appended."""
    rng = random.Random(seed)
    log = Log.open(path, **SETTINGS)
    appended = []
    for i in range(rng.randint(25, 45)):
        recs = []
        for j in range(rng.randint(1, 5)):
            key = b"k%d" % rng.randrange(6) if rng.random() > 0.05 else None
            value = None if key is not None and rng.random() < 0.15 else rng.randbytes(rng.randint(1, 30))
            recs.append((key, value, (), T0 + i))
        info = log.append(kbatch(recs, codec=rng.choice(["none", "none", "gzip"])))
        appended += [(info.base_offset + j, r[0], r[1], (), r[3]) for j, r in enumerate(recs)]
    return log, appended


def check_recovered(path: str, appended: list[tuple]) -> None:
    """The reopened log holds only original records at their offsets, and for every key
    its latest record; a clean of it then gives exactly the compacted log."""
    log = Log.open(path, **SETTINGS)
    try:
        by_offset = {rec[0]: rec for rec in appended}
        got = log_records(log)
        assert [rec[0] for rec in got] == sorted({rec[0] for rec in got}), "offsets out of order"
        for rec in got:
            assert rec[:3] == by_offset[rec[0]][:3], f"record at {rec[0]} differs from the original"
        latest = {}
        for rec in appended:
            if rec[1] is not None:
                latest[rec[1]] = rec
        offsets = {rec[0] for rec in got}
        for key, rec in latest.items():
            assert rec[0] in offsets, f"latest record of {key!r} (offset {rec[0]}) lost"
        assert log.log_end_offset == len(appended) and log.log_start_offset == 0
        assert not [n for n in os.listdir(path) if n.endswith((".cleaned", ".swap", ".deleted"))]
        stats = LogCleaner().clean(log, now_ms=T0 + 1, force=True)
        assert stats.cleaned
        assert [r[:3] for r in log_records(log)] == [r[:3] for r in latest_per_key(appended, stats.end_offset)]
    finally:
        log.close()


def _crash_each_step(tmp_path, every_step: bool) -> None:
    pristine = str(tmp_path / "pristine-0")
    log, appended = build_log(pristine, 11)
    log.close()
    probe_path = str(tmp_path / "probe-0")
    shutil.copytree(pristine, probe_path)
    probe = Log.open(probe_path, **SETTINGS)
    with crash_at(None, probe_path) as steps:
        stats = LogCleaner().clean(probe, now_ms=T0 + 1, force=True)
    probe.close()
    assert stats.cleaned and stats.swaps >= 2, stats      # several groups, several swaps
    kinds = {s.split()[0] for s in steps}
    assert {"rename", "unlink", "fsync", "append"} <= kinds
    assert len(steps) > 20
    chosen = [k for k, what in enumerate(steps)
              if every_step or k % 8 == 0 or (what.split()[0] in ("rename", "replace") and k % 3 == 0)]
    for k in chosen:
        src = str(tmp_path / f"run{k}-0")
        shutil.copytree(pristine, src)
        log = Log.open(src, **SETTINGS)
        dst = str(tmp_path / f"crash{k}-0")
        with crash_at(k, src, copy_to=dst), pytest.raises(CrashPoint):
            LogCleaner().clean(log, now_ms=T0 + 1, force=True)
        check_recovered(dst, appended)
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)


def test_crash_at_the_steps_of_a_clean(tmp_path):
    """Dry run to count the steps, then a crash before every third rename of the swap
    protocol and every eighth step (all of them: the long run)."""
    _crash_each_step(tmp_path, every_step=False)


@pytest.mark.long
def test_crash_at_every_step_of_a_clean(tmp_path):
    _crash_each_step(tmp_path, every_step=True)


def test_exception_mid_clean_leaves_the_running_log_usable(tmp_path):
    """An error before the swap (here: while writing the output) deletes the output and
    leaves the live log as it was, still appendable and cleanable."""
    path = str(tmp_path / "t-0")
    log, appended = build_log(path, 5)
    before = log_records(log)
    with crash_at(3, path), pytest.raises(CrashPoint):
        LogCleaner().clean(log, now_ms=T0 + 1, force=True)
    assert log_records(log) == before
    assert not [n for n in os.listdir(path) if n.endswith(".cleaned")]
    info = log.append(kbatch([(b"k0", b"after")]))
    appended.append((info.base_offset, b"k0", b"after", (), T0))
    log.roll()
    assert LogCleaner().clean(log, now_ms=T0 + 1, force=True).cleaned
    assert [r[:3] for r in log_records(log)] == [r[:3] for r in latest_per_key(appended, log.active_segment.base_offset)]
    log.close()


def _child() -> None:
    """Child process: build the log, then clean it and SIGKILL itself at step argv[2]."""
    path, step, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    log, _ = build_log(path, seed)
    log.flush()

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    with crash_at(step, path, on_step=die):
        LogCleaner().clean(log, now_ms=T0 + 1, force=True)
    print("finished", flush=True)


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_sigkill_during_clean(tmp_path, fraction):
    seed = 23
    probe, appended = build_log(str(tmp_path / "probe-0"), seed)
    with crash_at(None, str(tmp_path / "probe-0")) as steps:
        LogCleaner().clean(probe, now_ms=T0 + 1, force=True)
    probe.close()
    step = int(len(steps) * fraction)
    path = str(tmp_path / "killed-0")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.storage.test_cleaner_crash import _child; _child()",
         path, str(step), str(seed)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "finished" not in proc.stdout
    check_recovered(path, appended)
