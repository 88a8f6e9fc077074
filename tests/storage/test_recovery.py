"""Recovery: SIGKILLed writers, flipped bytes, torn tails, damaged indexes, the swap
protocol, and the open-time sweep of temporary files."""

import concurrent.futures
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from pylog import _core
from pylog.storage import Log
from pylog.storage.segment import CLEANED_SUFFIX, LogSegment
from tests.storage.batches import batch_headers, make_batch, sized_batch
from tests.storage.conftest import read_all

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fill(log_dir, n=30, **cfg):
    log = Log.open(log_dir, **cfg)
    for i in range(n):
        log.append(make_batch([b"%d:%d" % (i, j) for j in range(3)]))
    return log


def _kill_without_close(log):
    """Simulate a crash: drop the log without close() (no trim, no marker).

    A crash stops every thread of the process; here the process lives on, and the
    background flusher may be writing this log's checkpoint (a roll scheduled it).  Taking
    the log's lock waits for such a write to finish, and the flusher checks ``_closed``
    under that lock before it writes, so after this returns the "crashed" log writes
    nothing more, as a dead process would not (without it, a reopen's sweep could meet
    the flusher's ``.tmp`` file: the flaky FileNotFoundError of issue 11)."""
    with log._lock:
        log._closed = True


def _check_crc_all(log):
    for seg in log.segments:
        for info, view in seg.batches():
            _core.read_batch_header(view)  # raises on a bad CRC


# -- SIGKILL crash tests -----------------------------------------------------------------

def _crash_once(tmp_path, seed):
    """Two SIGKILLs of a writer with recovery in between; asserts what each recovery must
    give, and returns (records acknowledged as flushed, records recovered at the end)."""
    log_dir = str(tmp_path / f"crash-{seed}-0")
    r = random.Random(seed)
    flushed = 0
    for round_ in range(2):  # kill, reopen (recover), append more, kill again
        proc = subprocess.Popen([sys.executable, "-m", "tests.storage.crash_writer", log_dir, str(seed + round_)],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()
        assert first.startswith("start"), first
        deadline = time.monotonic() + r.uniform(0.05, 0.4)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        for line in out.splitlines():
            if line.startswith("flushed "):
                flushed = max(flushed, int(line.split()[1]))
        log = Log.open(log_dir)
        assert not log.had_clean_shutdown
        # Every flushed record is there, and what follows is a consistent prefix of what
        # the writer appended: offsets dense from 0, record i:j at its own offset.
        recs = read_all(log)
        assert log.log_end_offset >= flushed
        assert [o for o, *_ in recs] == list(range(log.log_end_offset))
        for offset, _, _, value in recs:
            b, j, _ = value.split(b":", 2)
            assert int(b) + int(j) == offset
        _check_crc_all(log)
        # Indexes were rebuilt consistently: lookups of every offset land on its batch.
        for seg in log.segments:
            for info, _ in seg.batches():
                pos, base, last = seg.translate_offset(info.last_offset)
                assert (pos, base) == (info.position, info.base_offset)
        recovered = log.log_end_offset
        log.close()
    return flushed, recovered


def test_sigkill_crashes(tmp_path):
    # The three seeds at once: each is a writer subprocess of its own on a log of its own,
    # and most of a run is the interpreter starting (twice per seed).
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda seed: _crash_once(tmp_path, 1000 + seed), range(3)))
    # The kills landed while the writer was appending: logs were recovered with records
    # in them, never fewer than were acknowledged as flushed.
    assert sum(recovered for _, recovered in runs) > 0
    assert all(recovered >= flushed for flushed, recovered in runs)


@pytest.mark.long
def test_sigkill_crashes_long(tmp_path):
    runs = [_crash_once(tmp_path, 5000 + seed) for seed in range(60)]
    assert sum(recovered for _, recovered in runs) > 0
    assert all(recovered >= flushed for flushed, recovered in runs)
    assert any(flushed > 0 for flushed, _ in runs)   # some kills came after a flush


# -- damage --------------------------------------------------------------------------

def test_flipped_byte_truncates_there(log_dir):
    log = _fill(log_dir, 30, segment_bytes=1 << 20)
    sizes = [h["size"] for h in batch_headers(bytes(log.read(0, 1 << 20).records))]
    _kill_without_close(log)
    del log
    seg_path = os.path.join(log_dir, f"{0:020d}.log")
    damaged_batch = 17
    pos = sum(sizes[:damaged_batch]) + 70  # inside the records of batch 17
    with open(seg_path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x40]))
    log = Log.open(log_dir)
    assert log.log_end_offset == damaged_batch * 3
    assert log.recovered[0].reason and "CRC" in log.recovered[0].reason
    assert [o for o, *_ in read_all(log)] == list(range(damaged_batch * 3))
    assert log.append(make_batch([b"after"])).base_offset == damaged_batch * 3
    log.close()


def test_damage_in_an_older_segment_drops_the_rest(log_dir):
    log = _fill(log_dir, 40, segment_bytes=800)
    bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 4
    _kill_without_close(log)
    del log
    victim = os.path.join(log_dir, f"{bases[1]:020d}.log")
    with open(victim, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    log = Log.open(log_dir)
    assert len(log.segments) == 2
    assert log.log_end_offset < bases[2]
    _check_crc_all(log)
    log.close()


def test_file_truncated_mid_batch(log_dir):
    log = _fill(log_dir, 10)
    seg = log.active_segment
    size = seg.size
    log.close()
    with open(seg.path, "r+b") as f:
        f.truncate(size - 7)
    os.unlink(os.path.join(log_dir, ".kafka_cleanshutdown"))
    log = Log.open(log_dir)
    assert log.log_end_offset == 27
    assert log.recovered[0].truncated_bytes > 0 and log.recovered[0].reason
    log.close()


def test_unclean_shutdown_trims_preallocated_zero_tail(log_dir):
    log = _fill(log_dir, 10, segment_bytes=1 << 20)
    valid = log.active_segment.size
    _kill_without_close(log)
    del log
    assert os.path.getsize(os.path.join(log_dir, f"{0:020d}.log")) == 1 << 20
    log = Log.open(log_dir, segment_bytes=1 << 20)
    info = log.recovered[0]
    assert info.valid_bytes == valid and info.reason is None  # zeros: not damage
    assert log.log_end_offset == 30
    log.close()
    assert os.path.getsize(os.path.join(log_dir, f"{0:020d}.log")) == valid


@pytest.mark.parametrize("damage", ["delete", "garbage", "zeros", "wrong_size", "beyond"])
def test_damaged_index_is_rebuilt(log_dir, damage):
    log = _fill(log_dir, 60, segment_bytes=2000, index_interval_bytes=200)
    expected = read_all(log)
    first = log.segments[0]
    entries = len(first.offset_index)
    assert entries > 2
    log.close()
    for kind in (".index", ".timeindex"):
        path = os.path.join(log_dir, f"{0:020d}{kind}")
        size = os.path.getsize(path)
        if damage == "delete":
            os.unlink(path)
        else:
            with open(path, "r+b") as f:
                if damage == "garbage":
                    f.write(os.urandom(size))
                elif damage == "zeros":
                    f.write(b"\0" * size)
                elif damage == "wrong_size":
                    f.truncate(size - 3)
                elif damage == "beyond":
                    f.seek(size - (8 if kind == ".index" else 4))
                    f.write(b"\x7f\xff\xff\xff" * (2 if kind == ".index" else 1))
    log = Log.open(log_dir, segment_bytes=2000, index_interval_bytes=200)  # clean shutdown: lazily checked
    assert read_all(log) == expected
    seg = log.segments[0]
    assert len(seg.offset_index) == entries
    for info, _ in seg.batches():
        assert seg.translate_offset(info.base_offset)[0] == info.position
    assert log.offset_for_timestamp(0).offset == 0
    log.close()


# -- temporary files and the swap protocol -------------------------------------------

def _copy_segment_as(log, old, suffix):
    """A replacement for ``old`` holding the same batches, written as the cleaner would."""
    new = log.new_segment(old.base_offset, suffix=suffix)
    for info, view in old.batches():
        data = bytes(view)
        n, size, records, first, last, span, max_ts, max_ts_rel, max_ts_last, _, _ = \
            _core.validate_batches(data, 1 << 20)
        new.append(data, size, first_offset=first, last_offset=last, max_timestamp=max_ts,
                   offset_of_max_timestamp=max_ts_last)
    new.seal()
    return new


def test_replace_segments(log_dir):
    log = _fill(log_dir, 40, segment_bytes=800)
    expected = read_all(log)
    olds = list(log.segments[:2])
    # Merge two segments into one (a compaction that removed nothing).
    new = log.new_segment(olds[0].base_offset, capacity=sum(o.size for o in olds))
    for old in olds:
        for info, view in old.batches():
            data = bytes(view)
            res = _core.validate_batches(data, 1 << 20)
            new.append(data, res[1], first_offset=res[3], last_offset=res[4], max_timestamp=res[6],
                       offset_of_max_timestamp=res[8])
    new.seal()
    assert new.path.endswith(".log.cleaned")
    log.replace_segments([new], olds)
    assert log.segments[0] is new and not new.suffix
    assert read_all(log) == expected
    names = os.listdir(log_dir)
    assert not [n for n in names if n.endswith((".cleaned", ".swap", ".deleted"))]
    assert f"{olds[1].base_offset:020d}.log" not in names
    log.close()
    log = Log.open(log_dir, segment_bytes=800)
    assert read_all(log) == expected
    log.close()


@pytest.mark.parametrize("stage", ["cleaned", "swap_before_delete", "swap_after_delete"])
def test_interrupted_swap_is_completed_or_discarded(log_dir, stage):
    log = _fill(log_dir, 40, segment_bytes=800)
    expected = read_all(log)
    old = log.segments[1]
    new = _copy_segment_as(log, old, CLEANED_SUFFIX)
    old_base = old.base_offset
    _kill_without_close(log)
    del log
    if stage != "cleaned":
        new.change_suffix(".swap")
    if stage == "swap_after_delete":
        old.change_suffix(".deleted")
    log = Log.open(log_dir, segment_bytes=800)
    assert read_all(log) == expected
    names = os.listdir(log_dir)
    assert not [n for n in names if n.endswith((".cleaned", ".swap", ".deleted"))]
    assert f"{old_base:020d}.log" in names
    log.close()


def test_open_sweeps_leftovers(log_dir):
    log = _fill(log_dir, 5)
    log.close()
    for name in ["00000000000000000100.log.deleted", "00000000000000000200.index.cleaned",
                 "recovery-point-offset-checkpoint.tmp", "00000000000000000300.index"]:
        with open(os.path.join(log_dir, name), "wb") as f:
            f.write(b"junk")
    log = Log.open(log_dir)
    names = set(os.listdir(log_dir))
    assert not names & {"00000000000000000100.log.deleted", "00000000000000000200.index.cleaned",
                        "recovery-point-offset-checkpoint.tmp", "00000000000000000300.index"}
    assert log.log_end_offset == 15
    log.close()


def test_recovery_point_limits_the_scan(log_dir):
    log = _fill(log_dir, 40, segment_bytes=800)
    log.flush()
    log.checkpoint()
    for i in range(5):
        log.append(make_batch([b"late"]))
    n_segments = len(log.segments)
    _kill_without_close(log)
    del log
    log = Log.open(log_dir, segment_bytes=800)
    assert 1 <= len(log.recovered) < n_segments  # only segments past the recovery point
    assert log.log_end_offset == 125
    log.close()


def test_segment_recover_reports(tmp_path):
    from pylog.storage import LogConfig

    d = str(tmp_path)
    seg = LogSegment.create(d, 0, LogConfig(segment_bytes=1 << 16))
    data = make_batch([b"a", b"b"])
    res = _core.validate_batches(data, 1 << 20)
    seg.append(data, res[1], first_offset=0, last_offset=1, max_timestamp=res[6],
               offset_of_max_timestamp=1, assign_offsets=True)
    seg.seal()
    info = seg.recover()
    assert (info.valid_bytes, info.batches, info.next_offset, info.reason) == (len(data), 1, 2, None)
    seg.close()


def test_truncate_into_an_offset_gap_survives_a_crash(log_dir):
    """Truncating to an offset inside a gap (offsets compaction removed) sets the log end
    offset past the last batch; the files must keep it there across a crash, or the
    gap's offsets would be handed out again."""
    log = Log.open(log_dir)
    log.append(make_batch([b"a", b"b", b"c"]))                        # 0..2
    far = bytearray(make_batch([b"x"] * 3))
    far[0:8] = (10).to_bytes(8, "big")                                 # 10..12, a gap 3..9
    log.append(bytes(far), assign_offsets=False)
    assert log.truncate_to(11) and log.log_end_offset == 10            # the batch 10..12 goes
    _kill_without_close(log)
    del log
    log = Log.open(log_dir)
    assert log.log_end_offset == 10
    assert log.append(make_batch([b"next"])).base_offset == 10
    assert [o for o, *_ in read_all(log)] == [0, 1, 2, 10]
    log.close()
    # The same when nothing is left at all below the gap.
    log = Log.open(log_dir + "-b")
    far[0:8] = (5).to_bytes(8, "big")
    log.append(bytes(far), assign_offsets=False)                       # 5..7 in segment 0
    log.truncate_to(6)
    assert log.log_end_offset == 5
    _kill_without_close(log)
    del log
    log = Log.open(log_dir + "-b")
    assert (log.log_start_offset, log.log_end_offset) == (0, 5)
    log.close()


def _two_way_clean(log):
    """Replacements for the first three segments, split in two new segments at a base
    offset that is not an old one (as a cleaner grouping by size may write them)."""
    olds = list(log.segments[:3])
    batches = [(info, bytes(view)) for old in olds for info, view in old.batches()]
    half = len(batches) // 2
    split_base = batches[half][0].base_offset
    news = []
    for base, part in ((olds[0].base_offset, batches[:half]), (split_base, batches[half:])):
        new = log.new_segment(base, capacity=sum(len(d) for _, d in part))
        for info, data in part:
            res = _core.validate_batches(data, 1 << 20)
            new.append(data, res[1], res[3], res[4], res[6], res[8])
        new.seal()
        news.append(new)
    assert split_base not in [o.base_offset for o in olds]
    return olds, news


@pytest.mark.parametrize("stage", ["higher_swapped_only", "all_swapped", "lower_live_higher_swap"])
def test_interrupted_multi_segment_swap(log_dir, stage):
    """A swap of several segments is all or nothing: committed only once every output is
    a .swap (renamed highest first), and completed without mistaking an output already
    renamed live for an old segment."""
    log = _fill(log_dir, 40, segment_bytes=800)
    expected = read_all(log)
    olds, (low, high) = _two_way_clean(log)
    _kill_without_close(log)
    del log
    high.change_suffix(".swap")
    if stage != "higher_swapped_only":
        low.change_suffix(".swap")
        for old in olds:
            old.change_suffix(".deleted")
    if stage == "lower_live_higher_swap":
        low.change_suffix("")
    log = Log.open(log_dir, segment_bytes=800)
    assert read_all(log) == expected  # nothing lost, nothing twice
    bases = [s.base_offset for s in log.segments]
    if stage == "higher_swapped_only":
        assert bases[:3] == [o.base_offset for o in olds]  # rolled back
    else:
        assert bases[:2] == [low.base_offset, high.base_offset]  # completed
    assert not [n for n in os.listdir(log_dir) if n.endswith((".cleaned", ".swap", ".deleted"))]
    log.close()


def test_roll_flushes_in_the_background_and_recovery_starts_at_the_last_roll(log_dir):
    from pylog.storage.log import _flusher
    log = Log.open(log_dir, segment_bytes=4096)
    for i in range(40):
        log.append(sized_batch(5, 100, seed=i))
    assert len(log.segments) > 3
    assert _flusher.wait_idle(timeout=30)
    assert log.recovery_point == log.active_segment.base_offset
    log.checkpoint()
    active_base, leo = log.active_segment.base_offset, log.log_end_offset
    _kill_without_close(log)
    del log
    reopened = Log.open(log_dir, segment_bytes=4096)
    assert [r.base_offset for r in reopened.recovered] == [active_base]
    assert reopened.log_end_offset == leo
    reopened.close()


# -- the open's sweep and the background flusher (issue 11's flaky test) ---------------

def test_sweep_tolerates_a_tmp_file_renamed_away_under_it(log_dir, monkeypatch):
    """The exact interleaving of the flaky failure: the open lists the directory and sees
    a checkpoint's ``.tmp`` file, whose writer renames it into place before the sweep
    unlinks it.  The open must go on (the file is gone, which is all the sweep wanted)."""
    import pylog.storage.log as log_module

    log = _fill(log_dir, 5)
    log.close()
    tmp = os.path.join(log_dir, "recovery-point-offset-checkpoint.tmp")
    final = os.path.join(log_dir, "recovery-point-offset-checkpoint")
    with open(final, "rb") as f:
        content = f.read()
    with open(tmp, "wb") as f:
        f.write(content)
    real_listdir = os.listdir

    def listdir_then_writer_renames(path):
        names = real_listdir(path)
        if path == log_dir and os.path.exists(tmp):
            os.replace(tmp, final)     # what atomic_write does next, in the other thread
        return names

    monkeypatch.setattr(log_module.os, "listdir", listdir_then_writer_renames)
    log = Log.open(log_dir)
    monkeypatch.undo()
    assert "recovery-point-offset-checkpoint.tmp" not in os.listdir(log_dir)
    assert log.log_end_offset == 15
    log.close()


def test_a_killed_log_writes_no_checkpoint_after_the_kill(log_dir):
    """The background flusher, blocked inside the log's checkpoint write (it holds the
    log's lock there), finishes that write before ``_kill_without_close`` returns; a
    flush submitted before the kill and run after it writes nothing."""
    import threading

    from pylog.storage.log import _flusher

    log = _fill(log_dir, 40, segment_bytes=800)
    assert _flusher.wait_idle(10)
    inside, go = threading.Event(), threading.Event()
    events = []
    original = log._write_own_checkpoints

    def blocking_write(force=False):
        if threading.current_thread().name == "pylog-log-flusher":
            inside.set()
            assert go.wait(10)
        log._last_checkpoint_ms = 0          # the 1 s rate limit must not hide a write
        before = os.stat(os.path.join(log_dir, "recovery-point-offset-checkpoint")).st_mtime_ns
        original(force=True)
        events.append(("write", threading.current_thread().name, before))

    log._write_own_checkpoints = blocking_write
    # Under the log's (re-entrant) lock: the append may roll a full segment itself, and a
    # flush job it queues must not take the lock (and block in the write above) before
    # this thread's roll has run: the roll would wait for it, and it for ``go``.
    with log._lock:
        log.append(make_batch([b"y"]))
        log.roll()                           # the flusher is submitted the sealed segment's flush
    assert inside.wait(10)
    killer = threading.Thread(target=lambda: (_kill_without_close(log), events.append(("killed",))))
    killer.start()
    go.set()
    killer.join(10)
    assert not killer.is_alive()
    assert _flusher.wait_idle(10)
    # The blocked write finished before the kill returned.  The flusher may run another
    # job queued by the roll before the killer takes the lock (a second write, then the
    # kill): what must never be is a write after the kill.
    kinds = [e[0] for e in events]
    assert kinds[-1] == "killed" and len(kinds) >= 2 and set(kinds[:-1]) == {"write"}, kinds
    # A flush job that runs after the kill (queued before it) writes nothing.
    log._flush_sealed_upto(log.log_end_offset)
    assert [e[0] for e in events] == kinds
    reopened = Log.open(log_dir, segment_bytes=800)
    assert reopened.log_end_offset == 121
    reopened.close()


def test_a_missing_or_cut_sealed_segment_names_the_offsets_gone(log_dir, caplog):
    """Outside damage that removes data from the middle of the log (a sealed .log deleted,
    or cut short) is said with the offsets that are gone, not only the files touched:
    consumers skip those offsets, and the operator must be able to tell which."""
    import logging

    log = _fill(log_dir, 40, segment_bytes=800)
    bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 4
    third_path, third_size = log.segments[2].path, log.segments[2].size
    log.close()
    os.unlink(os.path.join(log_dir, f"{bases[1]:020d}.log"))
    os.truncate(third_path, third_size // 2 + 7)   # mid-batch
    caplog.set_level(logging.WARNING, logger="pylog")
    with Log.open(log_dir, segment_bytes=800) as log:
        assert [s.base_offset for s in log.segments] == [bases[0]] + bases[2:]
        cut_end = log.segments[1].next_offset
    text = caplog.text
    assert f"offsets {bases[1]}..{bases[2] - 1} of that segment are no longer in the log" in text
    assert f"offsets {cut_end}..{bases[3] - 1} are no longer in the log" in text
