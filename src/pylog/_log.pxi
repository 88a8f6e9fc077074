# Part of pylog._core (included by _core.pyx).
#
# The log's lock and its append entry point, in C.  Log.append runs once per produce
# request partition (server), per drained batch (embedded producer) and per call of a
# storage user, and the Python frame around it (a `with` on a threading.RLock, attribute
# lookups, building the LogAppendInfo) cost about as much as validating and writing a
# 16 KiB batch's header.  pylog.storage.Log subclasses LogBase and keeps everything
# else in Python.
from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyLockStatus, PY_LOCK_ACQUIRED, PY_LOCK_INTR,
                               PyThread_type_lock, PyThread_acquire_lock,
                               PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_release_lock)

import threading

from pylog.errors import KafkaStorageError, LogClosedError

cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident() nogil
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, long long microseconds,
                                             int intr_flag) nogil


#: threading's bound on a lock timeout (seconds), as RLock enforces it.
_TIMEOUT_MAX = threading.TIMEOUT_MAX
from time import monotonic as _monotonic


@cython.final
cdef class LogLock:
    """A re-entrant lock with ``threading.RLock``'s semantics (``acquire(blocking=True,
    timeout=-1)``, ``release()``, ``with``, ``locked()``, and what ``threading.Condition``
    needs) whose uncontended acquire and release, from C, are a few instructions.

    The owner and the depth are fields of the object, read and written only while
    holding the GIL, which makes each step atomic.  An OS lock is touched only under
    contention: the first thread that has to wait takes it on the owner's behalf (it is
    free then: nobody else is waiting) and blocks on it with the GIL released; the owner's
    last release frees it, which wakes one waiter, who becomes the owner.  While anybody
    waits, a newcomer never takes the free-lock shortcut, so waiters are not overtaken.

    Thread safety: that is its job.  Not fork-safe beyond what the GIL gives: a child
    process must not use a lock another thread of the parent held at fork.
    """
    cdef PyThread_type_lock _real
    cdef unsigned long _owner
    cdef Py_ssize_t _count
    cdef Py_ssize_t _waiting
    cdef bint _real_held

    def __cinit__(self):
        self._real = PyThread_allocate_lock()
        if self._real == NULL:
            raise MemoryError("cannot allocate a lock")
        self._owner = 0
        self._count = 0
        self._waiting = 0
        self._real_held = False

    def __dealloc__(self):
        if self._real != NULL:
            if self._real_held:
                PyThread_release_lock(self._real)
            PyThread_free_lock(self._real)

    cdef inline bint _acquire(self, unsigned long me, bint blocking, double timeout) except -1:
        cdef PyLockStatus got
        cdef long long micros
        cdef double deadline
        if self._count == 0:
            if self._waiting == 0:
                self._owner = me
                self._count = 1
                return True
        elif self._owner == me:
            self._count += 1
            return True
        if not blocking:
            return False
        if not self._real_held and self._waiting == 0:
            # The owner took the lock without the OS lock: take that now, on its behalf,
            # so that its release wakes us.
            if PyThread_acquire_lock(self._real, NOWAIT_LOCK):
                self._real_held = True
        self._waiting += 1
        try:
            # Interruptible, as RLock: a signal's handler runs while we wait (Ctrl-C
            # raises KeyboardInterrupt here, lock not taken); then the wait goes on for
            # what is left of the timeout.
            deadline = _monotonic() + timeout if timeout >= 0 else -1.0
            while True:
                micros = -1 if timeout < 0 else <long long>(max(deadline - _monotonic(), 0.0) * 1e6)
                with nogil:
                    got = PyThread_acquire_lock_timed(self._real, micros, 1)
                if got != PY_LOCK_INTR:
                    break
                PyErr_CheckSignals()
        finally:
            self._waiting -= 1
        if got != PY_LOCK_ACQUIRED:
            return False
        self._owner = me
        self._count = 1
        self._real_held = True
        return True

    cdef inline int _release(self, unsigned long me) except -1:
        if self._count == 0 or self._owner != me:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = 0
            if self._real_held:
                self._real_held = False
                PyThread_release_lock(self._real)
        return 0

    def acquire(self, bint blocking=True, double timeout=-1):
        """As ``threading.RLock.acquire``: True once held (again), False when not blocking
        or when ``timeout`` seconds passed first."""
        if not blocking and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        if timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number")
        if timeout != timeout:
            raise ValueError("Invalid value NaN (not a number)")
        if timeout > _TIMEOUT_MAX:
            raise OverflowError("timeout value is too large")
        return self._acquire(PyThread_get_thread_ident(), blocking, timeout)

    def release(self):
        """Release one level; RuntimeError when the caller does not hold the lock."""
        self._release(PyThread_get_thread_ident())

    def __enter__(self):
        self._acquire(PyThread_get_thread_ident(), True, -1)
        return True

    def __exit__(self, exc_type, exc, tb):
        self._release(PyThread_get_thread_ident())
        return False

    def locked(self):
        """Whether any thread holds the lock."""
        return self._count > 0

    def _is_owned(self):
        return self._count > 0 and self._owner == PyThread_get_thread_ident()

    def _release_save(self):
        # threading.Condition.wait: release every level, remember them.
        cdef unsigned long me = PyThread_get_thread_ident()
        cdef Py_ssize_t depth = self._count
        if depth == 0 or self._owner != me:
            raise RuntimeError("cannot release un-acquired lock")
        self._count = 1
        self._release(me)
        return (depth, me)

    def _acquire_restore(self, state):
        depth, owner = state
        self._acquire(PyThread_get_thread_ident(), True, -1)
        self._count = depth

    def __repr__(self):
        return (f"<pylog LogLock {'locked' if self._count else 'unlocked'} depth={self._count} "
                f"waiting={self._waiting}>")


cdef inline SegmentAppender _active_appender(list segments):
    """The last segment's appender; KafkaStorageError when it has none (a roll sealed
    the segment, then failed to create the next one: the log takes no append until it
    is reopened)."""
    appender = segments[len(segments) - 1]._appender
    if appender is None:
        raise KafkaStorageError(f"{segments[len(segments) - 1]!r} is sealed and no active segment "
                                "follows it (a roll failed): reopen the log")
    return <SegmentAppender>appender


cdef class LogBase:
    """The part of pylog.storage.Log that every append runs through, in C: the lock, the
    active segment's appender call, the log end offset, leader-epoch learning and the
    flush policy's counter.  Log (Python) owns everything else and sets these fields;
    rolling, epoch bookkeeping and flushing stay Python methods of Log (``_roll``,
    ``_assign_epoch``, ``_maybe_flush_locked``), called from here when needed.
    """
    cdef public LogLock _lock
    cdef public list _segments
    cdef public int64_t _log_end_offset
    cdef public int64_t _latest_epoch
    cdef public int64_t _unflushed_messages
    cdef public bint _closed
    cdef public bint _flush_policy
    cdef public object _clock

    def append(self, batches, *, bint assign_offsets=True, leader_epoch=None):
        """Append one or more record batches (v2), exactly as given.

        Parameters
        ----------
        batches : bytes-like, or a list or tuple of bytes-like objects
            One or more whole v2 record batches, concatenated (as in a produce request's
            records field); or a list/tuple of such buffers, appended as if concatenated
            (with one write, without joining them: each buffer must hold whole batches).
            Each batch is validated (size, magic, CRC32C, counts) in Cython.
        assign_offsets : bool
            True (a leader, or an embedded producer): the batches get consecutive offsets
            from the log end offset; only each batch's baseOffset is rewritten.  False (a
            replica follower): the batches keep their offsets, which must start at or above
            the log end offset and increase strictly from batch to batch.
        leader_epoch : int, optional
            Written into each batch's partitionLeaderEpoch.

        Under ``message_timestamp_type="LogAppendTime"`` each batch also gets the
        LogAppendTime attribute and the append time as maxTimestamp (its CRC is then
        recomputed); replica appends (``assign_offsets=False``) keep the leader's stamp.
        Nothing else is changed: records are never re-encoded.

        Returns
        -------
        LogAppendInfo

        Raises
        ------
        TypeError
            ``batches`` (or an element of it) is not bytes-like.
        CorruptRecordError
            A batch is malformed, torn, split between two buffers, or fails its CRC; or
            there is nothing to append.
        RecordTooLargeError
            A batch is larger than ``max_message_bytes`` (RecordBatchTooLargeError when the
            whole append is larger than a segment).
        InvalidRecordError
            ``assign_offsets=False`` and the offsets go backwards.
        LogClosedError
            The log is closed.

        A rejected append leaves the log exactly as it was, on disk and in memory.
        Thread-safe: appends and every other Log call serialize on the log's lock.
        """
        cdef LogLock lock = self._lock
        cdef unsigned long me = PyThread_get_thread_ident()
        cdef SegmentAppender appender
        cdef int64_t first
        if lock is None:
            raise LogClosedError("log is not open (use Log.open)")
        if leader_epoch is not None:
            # Checked before anything happens: a bad epoch must not roll the log first.
            if type(leader_epoch) is not int:
                raise TypeError(f"leader_epoch must be an int or None, not {type(leader_epoch).__name__}")
            if not -1 <= leader_epoch <= 0x7FFFFFFF:
                raise ValueError(f"leader_epoch {leader_epoch} is outside -1..2147483647")
        if type(batches) is list:
            # The buffers appended are the ones read afterwards (a replica's epochs), even
            # if the caller's list changes while the write runs without the GIL.
            batches = tuple(batches)
        lock._acquire(me, True, -1)
        try:
            segments = self._segments
            if self._closed or not segments:
                raise LogClosedError(f"log {self.path} is closed")
            appender = _active_appender(segments)
            res = appender._append(batches, appender.max_message_bytes, self._log_end_offset,
                                   assign_offsets, leader_epoch, appender.stamp_append_time,
                                   self._clock, appender.roll_ms, appender.created_ms, False)
            if type(res) is int:  # validated; the segment must roll first
                appender = _active_appender([self._roll(res)])
                res = appender._append(batches, appender.max_message_bytes, self._log_end_offset,
                                       assign_offsets, leader_epoch, appender.stamp_append_time,
                                       self._clock, appender.roll_ms, appender.created_ms, True)
            first = (<tuple>res)[0]
            self._log_end_offset = <int64_t>(<tuple>res)[1] + 1
            if leader_epoch is not None:
                if leader_epoch > self._latest_epoch:
                    self._assign_epoch(leader_epoch, first, False)
            elif not assign_offsets:
                self._learn_epochs(batches)
            if self._flush_policy:
                self._unflushed_messages += <int64_t>(<tuple>res)[7]
                self._maybe_flush_locked()
            return _append_info(<tuple>res)
        finally:
            lock._release(me)

    cdef _learn_epochs(self, batches):
        # A replica append keeps the leader's epochs: the cache learns where each starts.
        for piece in (batches if type(batches) is list or type(batches) is tuple else (batches,)):
            with memoryview(piece) as view:
                for epoch, start in leader_epoch_starts(view, 0, view.nbytes, self._latest_epoch):
                    self._assign_epoch(epoch, start, False)
