"""Exclusive ownership of a data directory: ``<data_dir>/.lock``, as Kafka's log dirs have.

Two owners writing one data directory lose acknowledged records (both append at the same
offsets, each overwriting the other's segments), so whoever opens a data directory (a
:class:`~pylog.storage.LogManager`, and so every broker, embedded or served) holds it
exclusively until it closes.

Two mechanisms, because neither is enough alone:

- ``flock(LOCK_EX | LOCK_NB)`` on ``<data_dir>/.lock`` excludes other processes.  flock
  belongs to the open file description, so it also conflicts between two ``open()`` calls
  in one process (``fcntl``/``lockf`` record locks would not), and the kernel drops it
  when the process dies: a crash never leaves a stale lock.  The descriptor is
  close-on-exec, so a child process started with exec does not inherit it.
- A process-wide registry keyed by the directory's real path says who in this process
  holds it, so the second opener gets a message naming the first rather than a bare
  "would block".

On disk: ``.lock`` holds one informational line, ``pid=<pid> <owner>``, rewritten by each
holder; the lock itself is the flock, and the file is never removed (removing it would
let a third opener lock a new file while the second still waits on the old one).

Thread safety: :meth:`DataDirLock.acquire` and :meth:`DataDirLock.release` are
thread-safe.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading

from pylog.errors import DataDirInUseError, KafkaStorageError

__all__ = ["DataDirLock", "LOCK_FILE"]

LOCK_FILE = ".lock"
_MAX_HOLDER_BYTES = 256

_held: dict[str, "DataDirLock"] = {}    # real path of the data dir -> its holder in this process
_held_lock = threading.Lock()


def _holder_of(fd: int) -> str:
    """The informational line another process left in the lock file (bounded read)."""
    try:
        raw = os.pread(fd, _MAX_HOLDER_BYTES, 0)
    except OSError:
        return "unknown"
    line = raw.decode("ascii", "replace").split("\n", 1)[0].strip()
    return "".join(c if c.isprintable() else "?" for c in line) or "unknown"


class DataDirLock:
    """The held lock of one data directory; see the module docstring.

    Use :meth:`acquire` to get one and :meth:`release` (idempotent) to give it up.
    """

    __slots__ = ("data_dir", "path", "owner", "_key", "_fd")

    def __init__(self, data_dir: str, path: str, owner: str, key: str, fd: int) -> None:
        self.data_dir = data_dir
        self.path = path
        self.owner = owner
        self._key = key
        self._fd = fd

    @classmethod
    def acquire(cls, data_dir: str | os.PathLike, owner: str) -> "DataDirLock":
        """Lock ``data_dir`` (created if missing) for ``owner`` (a short description, as
        the error another opener gets shows it).

        Raises
        ------
        DataDirInUseError
            Another owner in this process or another process holds the directory.
        KafkaStorageError
            The lock file cannot be created or locked (permissions, not a directory...).
        """
        data_dir = os.fspath(data_dir)
        try:
            os.makedirs(data_dir, exist_ok=True)
        except OSError as exc:
            raise KafkaStorageError(f"cannot create data directory {data_dir}: {exc.strerror or exc}") from None
        key = os.path.realpath(data_dir)
        path = os.path.join(data_dir, LOCK_FILE)
        with _held_lock:
            holder = _held.get(key)
            if holder is not None:
                raise DataDirInUseError(
                    f"data directory {data_dir} is already open in this process (by {holder.owner}): "
                    "close it first, or use another data directory")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise KafkaStorageError(f"cannot open {path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                other = _holder_of(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise DataDirInUseError(
                        f"data directory {data_dir} is in use by another process ({other}; it holds "
                        f"{path}): stop that process first, or use another data directory") from None
                raise KafkaStorageError(f"cannot lock {path}: {exc.strerror or exc}") from None
            description = f"{owner} in thread {threading.current_thread().name!r}"
            line = f"pid={os.getpid()} {description}\n".encode("ascii", "replace")
            try:
                # Written over the last holder's line, then cut to its length: truncating to
                # 0 first frees the file's block and allocates it again, a journal
                # transaction (0.3-5 ms) on every open of the data directory (#17).
                os.pwrite(fd, line, 0)
                os.ftruncate(fd, len(line))
            except OSError:
                pass  # informational only (a full disk must not stop the broker opening)
            lock = _held[key] = cls(data_dir, path, description, key, fd)
        return lock

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Give the directory up (idempotent).  Closing the descriptor drops the flock."""
        with _held_lock:
            fd, self._fd = self._fd, -1
            if fd < 0:
                return
            if _held.get(self._key) is self:
                del _held[self._key]
            os.close(fd)

    def __repr__(self) -> str:
        return f"<DataDirLock {self.data_dir} {'held' if self.held else 'released'}>"
