"""pylog._core.LogLock: threading.RLock's semantics with a C fast path (Log's lock)."""

import threading
import time

import pytest

from pylog import _core


def test_reentrant_and_owned():
    lock = _core.LogLock()
    assert not lock.locked() and not lock._is_owned()
    with lock:
        with lock:
            assert lock.locked() and lock._is_owned()
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


def test_other_threads_are_excluded_and_cannot_release():
    lock = _core.LogLock()
    lock.acquire()
    seen = {}

    def other():
        seen["try"] = lock.acquire(blocking=False)
        seen["timed"] = lock.acquire(timeout=0.05)
        try:
            lock.release()
        except RuntimeError:
            seen["release"] = "refused"

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == {"try": False, "timed": False, "release": "refused"}
    lock.release()
    assert not lock.locked()
    with pytest.raises(ValueError):
        lock.acquire(blocking=False, timeout=1)


def test_waiter_gets_the_lock_when_released():
    lock = _core.LogLock()
    lock.acquire()
    got = threading.Event()

    def waiter():
        with lock:
            got.set()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    assert not got.is_set()          # blocked while we hold it
    lock.release()
    assert got.wait(5)
    t.join()
    assert not lock.locked()


def test_mutual_exclusion_across_blocking_sections():
    # Each thread holds the lock across sleeps (which release the GIL): no two threads
    # may ever be inside at once, and no increment may be lost.
    lock = _core.LogLock()
    inside = [0]
    overlaps = [0]
    total = [0]

    def work():
        for _ in range(40):
            with lock:
                inside[0] += 1
                if inside[0] != 1:
                    overlaps[0] += 1
                v = total[0]
                time.sleep(0)
                total[0] = v + 1
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 0 and total[0] == 240
    assert not lock.locked()


def test_condition_wait_releases_every_level():
    lock = _core.LogLock()
    cond = threading.Condition(lock)
    state = []

    def notifier():
        with cond:                   # only possible if wait() released both levels
            state.append("notified")
            cond.notify()

    with lock:
        with cond:
            t = threading.Thread(target=notifier)
            t.start()
            assert cond.wait_for(lambda: state, timeout=5)
            assert lock._is_owned()  # both levels back
        assert lock._is_owned()
    t.join()
    assert not lock.locked()


def test_log_uses_it(tmp_path):
    from pylog.storage import Log

    log = Log.open(str(tmp_path / "t-0"))
    assert isinstance(log.lock, _core.LogLock)
    with log.lock:                    # maintenance code holds it across calls
        assert log.log_end_offset == 0
    log.close()


@pytest.mark.parametrize("timeout, error", [(float("nan"), ValueError), (float("inf"), OverflowError),
                                            (1e300, OverflowError), (-2.0, ValueError)])
def test_bad_timeouts_raise_as_rlock_does(timeout, error):
    lock = _core.LogLock()
    holder = threading.Thread(target=lock.acquire)
    holder.start()
    holder.join()          # held by a finished thread: a waiter would block for good
    with pytest.raises(error):
        lock.acquire(True, timeout)
    with pytest.raises(error):
        threading.RLock().acquire(True, timeout)


def test_a_signal_interrupts_a_wait_as_with_rlock():
    """Ctrl-C while waiting raises KeyboardInterrupt at once, without the lock, as
    RLock does (the wait used to ignore signals until the lock came free); a handler
    that returns lets the wait go on for the rest of its timeout."""
    import signal

    lock = _core.LogLock()
    held, done = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            done.wait(10)

    # Python's own Ctrl-C handler, whatever an earlier test in the process left installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    try:
        # To the waiting thread itself: a signal sent to the process (os.kill) may be
        # handed to any thread that does not block it (POSIX), one left behind by an
        # earlier test in the same run, say, and then no wait is interrupted, RLock's
        # neither (failed once so in a whole-suite run).
        main = threading.get_ident()
        threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            lock.acquire()
        assert time.monotonic() - t0 < 5
        assert not lock._is_owned()
        calls = []
        old = signal.signal(signal.SIGUSR1, lambda *a: calls.append(1))
        try:
            threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGUSR1)).start()
            t0 = time.monotonic()
            assert lock.acquire(True, 0.6) is False
            assert calls == [1] and 0.5 <= time.monotonic() - t0 < 5
        finally:
            signal.signal(signal.SIGUSR1, old)
    finally:
        done.set()
        t.join()
        signal.signal(signal.SIGINT, previous)
    assert lock.acquire(False) and lock._is_owned()
    lock.release()
