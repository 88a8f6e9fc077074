"""A data directory of partition logs, as Kafka's LogManager keeps one.

On disk::

    <data_dir>/
      meta.properties                      version, cluster.id, node.id, directory.id
      recovery-point-offset-checkpoint     per partition: offset up to which data is flushed
      log-start-offset-checkpoint          per partition: first readable offset
      .kafka_cleanshutdown                 present only while the manager is cleanly closed
      .lock                                flock-ed while a manager has the directory open
      <topic>-<partition>/                 one Log each (pylog.storage.log)
      <topic>-<partition>.<id>-delete/     a deleted log not yet removed (swept on open)

Crash behaviour: the clean-shutdown marker is removed as soon as the manager opens, so a
crash at any later point makes the next open recover every log from its checkpointed
recovery point.  Checkpoint files are replaced atomically (tmp, fsync, rename, fsync
directory).

Outside damage: every file here is parsed strictly (:mod:`pylog.storage.checkpoint`) and
each fallback errs towards reading more, never towards trusting more; each is logged as a
WARN naming the file, what was wrong and what was done:

- a damaged, or missing (while logs exist), ``recovery-point-offset-checkpoint``: every
  log is recovered from its first segment, the clean-shutdown marker notwithstanding; a
  log the file does not list is recovered whole too;
- a damaged ``log-start-offset-checkpoint``, or an entry above the log's end: the log
  start offset is derived from the segments (records deleted by DeleteRecords may
  reappear; none is lost);
- a damaged ``meta.properties`` (or one that names another node or cluster) refuses the
  open with :class:`~pylog.errors.KafkaStorageError`: it says which cluster the data
  belongs to, which pylog will not guess.  A missing one in a directory that holds logs is
  written anew (with a WARN).

Ownership: the directory is locked (:class:`~pylog.storage.dir_lock.DataDirLock`) from
open to close, against other managers in this process and in other processes.

Deferred loading (``defer_clean_loads=True``, what a broker asks for): after a clean
shutdown a log the (intact) recovery-point checkpoint lists needs no recovery, so the
manager only notes its directory at open and loads it (segments, indexes, leader epochs,
the tail check) on its first use (:meth:`get_log`, :meth:`get_or_create_log`) or when
the owner's background threads call :meth:`load_deferred` (Kafka's log loading by
``num.recovery.threads.per.data.dir``, after the broker listens).  A log that is not
trusted clean (no marker, a damaged checkpoint, a log the checkpoint does not list) is
still loaded, and recovered, before the manager's open returns.  A deferred log that is
never loaded is unchanged on disk, so the close keeps its checkpointed offsets and the
marker stays true for it.

Parallel recovery: the logs the open must load (all of them after an unclean shutdown)
are opened by ``recovery_threads`` threads at once (Kafka's
``num.recovery.threads.per.data.dir``), each log by one thread, and the open returns
once all are done.  Crash behaviour is the same as one at a time: each log's recovery
is its own (it writes only in its own directory), nothing in the data directory is
written until every log is open, and a crash midway leaves no marker, so the next open
recovers again.  If one log fails to open, the logs not yet started are skipped, the
opened ones are closed and the first failure (in directory order) is raised.

Resource bounds: every log keeps only its active segment open and mapped; sealed segments
open their file and map their indexes on first use and are released under one LRU limit
(``max_open_segments``) shared by all logs, so thousands of partitions and segments keep
descriptors and mappings bounded.

Thread safety: thread-safe.  Creating, deleting and listing logs take the manager's lock;
each Log has its own lock for its data.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import shutil
import threading
from typing import Any, Callable, Iterator, Mapping

from pylog._uuid import random_kafka_uuid, random_uuid_bytes
from pylog.errors import InvalidConfigError, InvalidTopicError, KafkaStorageError, LogClosedError
from pylog.storage.checkpoint import (CheckpointFile, CorruptCheckpointError, fsync_dir, read_properties,
                                      write_properties)
from pylog.storage.dir_lock import LOCK_FILE, DataDirLock
from pylog.storage.config import LogConfig
from pylog.storage.log import (CLEAN_SHUTDOWN_FILE, LOG_START_OFFSET_CHECKPOINT, RECOVERY_POINT_CHECKPOINT,
                               Log, RetentionResult, parse_topic_partition)
from pylog.storage.segment import SegmentCache

__all__ = ["LogManager", "META_PROPERTIES", "CLEANER_OFFSET_CHECKPOINT", "sync_filesystem"]

META_PROPERTIES = "meta.properties"
CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_DELETE_DIR = re.compile(r"^.+-\d+\.[0-9a-f]+-delete$")
_META_KEYS = frozenset({"version", "cluster.id", "node.id", "broker.id", "directory.id"})
_CLUSTER_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_NODE_ID = re.compile(r"0|[1-9][0-9]{0,9}")

_log = logging.getLogger("pylog.storage")

#: Threads that open (and recover) the logs the open itself must load (Kafka's
#: ``num.recovery.threads.per.data.dir``; Kafka's default is 1).  Measured on 2 cores,
#: unclean open of 1000 partitions (one small batch each; median of 5, load 9): 5.9 s
#: with 1 thread, 5.9 s with 2, 2.8 s with 4, 2.2 s with 8; of 1000 partitions of 1.1
#: MB each: 19.5-23.5 s with 1, 8.9-9.7 s with 4.  A recovery is mostly system calls
#: (msync of the rebuilt indexes, fsync of checkpoints, ftruncate) and the CRC scan
#: (Cython, without the GIL), so threads overlap its waits even on few cores; the
#: threads exist only while the open runs.
DEFAULT_RECOVERY_THREADS = 8


_syncfs: Any = None


def sync_filesystem(path: str) -> None:
    """Make every written byte and metadata change of the filesystem holding ``path``
    durable, with one ``syncfs(2)`` (Linux), else ``sync(2)``: at a clean shutdown one
    call replaces thousands of fsyncs (each a journal commit of its own).

    Raises
    ------
    OSError
        ``syncfs`` failed (since Linux 5.8 it reports writeback errors).
    """
    global _syncfs
    if _syncfs is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.syncfs
            fn.argtypes = [ctypes.c_int]
            _syncfs = (fn, ctypes)
        except (OSError, AttributeError):
            _syncfs = False
    if _syncfs is False:
        os.sync()
        return
    fn, ctypes = _syncfs
    fd = os.open(path, os.O_RDONLY)
    try:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _random_id() -> str:
    # Kafka's Uuid string form: URL-safe base64 of 16 bytes, no padding.
    return random_kafka_uuid()


def _is_uuid(text: str) -> bool:
    if len(text) != 22:
        return False
    try:
        return len(base64.urlsafe_b64decode(text + "==")) == 16
    except (ValueError, binascii.Error):
        return False


def _check_meta(meta: Mapping[str, str]) -> str | None:
    """What is wrong with the keys of a parsed ``meta.properties`` (None: nothing)."""
    unknown = sorted(set(meta) - _META_KEYS)
    if unknown:
        return f"unknown key {unknown[0]!r}"
    version = meta.get("version")
    if version not in ("0", "1"):
        return f"version is {version!r}, not 0 or 1"
    node_key = "node.id" if version == "1" else "broker.id"
    node = meta.get(node_key)
    if node is None or not _NODE_ID.fullmatch(node) or int(node) > 2**31 - 1:
        return f"{node_key} is {node!r}, not a node id"
    cluster = meta.get("cluster.id")
    if cluster is None or not _CLUSTER_ID.fullmatch(cluster):
        return f"cluster.id is {cluster!r}, not a cluster id"
    directory = meta.get("directory.id")
    if directory is not None and not _is_uuid(directory):
        return f"directory.id is {directory!r}, not a Kafka Uuid"
    return None


class LogManager:
    """The logs of one data directory.  See the module docstring for the on-disk layout,
    crash behaviour, resource bounds and thread safety.

    Parameters
    ----------
    data_dir : str
        Created if missing.
    config : LogConfig, optional
        Default config of the logs (per-topic overrides in ``topic_configs``).
    topic_configs : mapping of topic to LogConfig, optional
    max_open_segments : int
        How many sealed segments, across all logs, may hold open files and mappings.
    node_id : int
        Written to (and checked against) ``meta.properties``.
    cluster_id : str, optional
        Written to ``meta.properties`` on first use (default: a random id).
    clock : callable, optional
        Milliseconds since the epoch, passed to every log.
    dir_lock : DataDirLock, optional
        The directory's lock when the caller took it already (a broker does, before it
        reads its own files); the manager releases it on close (or when opening fails).
        By default the manager takes it.
    defer_clean_loads : bool
        Load the logs that need no recovery on first use (module docstring).
    recovery_threads : int
        Threads that open, and recover, the logs loaded by the open itself (Kafka's
        ``num.recovery.threads.per.data.dir``; see :data:`DEFAULT_RECOVERY_THREADS`).

    Raises
    ------
    DataDirInUseError
        The directory is open elsewhere (in this process or another one).
    KafkaStorageError
        ``meta.properties`` is damaged or names another node or cluster.
    """

    def __init__(self, data_dir: str | os.PathLike, *, config: LogConfig | None = None,
                 topic_configs: Mapping[str, LogConfig] | None = None, max_open_segments: int = 256,
                 node_id: int = 0, cluster_id: str | None = None,
                 clock: Callable[[], int] | None = None, dir_lock: DataDirLock | None = None,
                 defer_clean_loads: bool = False, recovery_threads: int = DEFAULT_RECOVERY_THREADS) -> None:
        if isinstance(recovery_threads, bool) or not isinstance(recovery_threads, int) or recovery_threads < 1:
            raise InvalidConfigError(f"recovery_threads must be a positive int, not {recovery_threads!r}")
        self.recovery_threads = recovery_threads
        self.data_dir = os.fspath(data_dir)
        self.config = config or LogConfig()
        self.topic_configs = dict(topic_configs or {})
        self.cache = SegmentCache(max_open_segments)
        self._clock = clock
        self._lock = threading.RLock()
        self._logs: dict[tuple[str, int], Log] = {}
        # Logs found clean at open and not loaded yet: (topic, partition) -> directory.
        self._deferred: dict[tuple[str, int], str] = {}
        self._defer = defer_clean_loads
        self._closed = False
        self._dir_lock = dir_lock if dir_lock is not None else DataDirLock.acquire(self.data_dir, "a LogManager")
        try:
            self._open(node_id, cluster_id)
        except BaseException:
            for log in self._logs.values():
                log.close()
            self._dir_lock.release()
            raise

    def _open(self, node_id: int, cluster_id: str | None) -> None:
        self.meta = self._load_meta(node_id, cluster_id)
        marker = os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE)
        self.had_clean_shutdown = os.path.exists(marker)
        rps = self._read_checkpoint(RECOVERY_POINT_CHECKPOINT)
        self._trust_recovery_points = rps is not None
        if rps is None:
            # Damaged, or missing although logs exist: which data was flushed is unknown.
            if self.had_clean_shutdown or self._checkpoint_damage:
                _log.warning("%s: %s; recovering every log from its first segment%s",
                             os.path.join(self.data_dir, RECOVERY_POINT_CHECKPOINT),
                             self._checkpoint_damage or "missing although the directory holds logs",
                             " (not trusting the clean-shutdown marker)" if self.had_clean_shutdown else "")
            rps = {}
        self._recovery_points = rps
        starts = self._read_checkpoint(LOG_START_OFFSET_CHECKPOINT)
        if starts is None:
            if self.had_clean_shutdown or self._checkpoint_damage:
                _log.warning("%s: %s; deriving each log's start offset from its segments",
                             os.path.join(self.data_dir, LOG_START_OFFSET_CHECKPOINT),
                             self._checkpoint_damage or "missing although the directory holds logs")
            starts = {}
        self._start_offsets = starts
        self._load_logs()
        if self.had_clean_shutdown:
            os.unlink(marker)
            fsync_dir(self.data_dir)

    # -- loading -------------------------------------------------------------------

    def _holds_logs(self) -> bool:
        return any(parse_topic_partition(n) is not None and os.path.isdir(os.path.join(self.data_dir, n))
                   for n in os.listdir(self.data_dir))

    def _load_meta(self, node_id: int, cluster_id: str | None) -> dict[str, str]:
        path = os.path.join(self.data_dir, META_PROPERTIES)
        try:
            meta = read_properties(path)
        except FileNotFoundError:
            meta = None
        except CorruptCheckpointError as exc:
            raise KafkaStorageError(
                f"{exc}: it says which cluster and node this data directory belongs to, so pylog "
                f"will not start on a guess; restore it from a backup (or delete it to have a new "
                f"one written for node {node_id})") from None
        if meta is not None:
            problem = _check_meta(meta)
            if problem is not None:
                raise KafkaStorageError(
                    f"{path}: {problem}; restore it from a backup (or delete it to have a new one "
                    f"written for node {node_id})")
            stored_node = meta.get("node.id", meta.get("broker.id"))
            if stored_node != str(node_id):
                raise KafkaStorageError(
                    f"{path} belongs to node {stored_node}, not node {node_id}: "
                    f"use another data directory or node_id={stored_node}")
            if cluster_id is not None and meta["cluster.id"] != cluster_id:
                raise KafkaStorageError(f"{path} belongs to cluster {meta['cluster.id']}, not {cluster_id}")
            return meta
        meta = {"version": "1", "cluster.id": cluster_id or _random_id(), "node.id": str(node_id),
                "directory.id": _random_id()}
        if self._holds_logs():
            _log.warning("%s: missing although the directory holds logs; writing a new one "
                         "(cluster.id=%s, node.id=%d)", path, meta["cluster.id"], node_id)
        write_properties(path, meta, comment="Written by pylog")
        return meta

    def _read_checkpoint(self, name: str) -> dict[tuple[str, int], int] | None:
        """The entries of checkpoint ``name``; None when the file is damaged (then
        ``_checkpoint_damage`` says how) or missing while the directory holds logs."""
        self._checkpoint_damage = None
        try:
            entries = CheckpointFile(os.path.join(self.data_dir, name)).read()
        except CorruptCheckpointError as exc:
            self._checkpoint_damage = str(exc).split(": ", 1)[-1]
            return None
        if not entries and not os.path.exists(os.path.join(self.data_dir, name)) and self._holds_logs():
            return None
        return entries

    def _load_logs(self) -> None:
        jobs: list[tuple[tuple[str, int], str]] = []
        defer = self._defer and self.had_clean_shutdown and self._trust_recovery_points
        rps = self._recovery_points
        # One scandir: its entries know whether they are directories (d_type) without a
        # stat each, which for thousands of partitions was most of a clean open.
        with os.scandir(self.data_dir) as it:
            entries = sorted((e.name, e) for e in it)
        for name, entry in entries:
            if name.endswith("-delete") and _DELETE_DIR.match(name):
                if entry.is_dir():
                    shutil.rmtree(entry.path, ignore_errors=True)
                continue
            tp = parse_topic_partition(name)
            if tp is None or not entry.is_dir():
                continue
            if defer and tp in rps:
                self._deferred[tp] = entry.path
                continue
            jobs.append((tp, entry.path))
        self._open_logs(jobs)

    def _open_logs(self, jobs: list[tuple[tuple[str, int], str]]) -> None:
        """Open (and recover) the logs of ``jobs`` in ``recovery_threads`` threads, as
        Kafka's log loading does with ``num.recovery.threads.per.data.dir``: most of a
        recovery is I/O and the Cython CRC scan, both outside the GIL.  Every log opened
        lands in ``self._logs`` (closed by the caller if the open fails); the first
        failure, in directory order, is raised once every job has ended."""
        threads = min(self.recovery_threads, len(jobs))
        if threads <= 1:
            for tp, full in jobs:
                self._logs[tp] = self._open_log(tp, full)
            return
        from concurrent.futures import ThreadPoolExecutor

        failed = threading.Event()

        def load(tp: tuple[str, int], full: str) -> Log | None:
            if failed.is_set():
                return None          # the open fails anyway: spare the rest of the work
            try:
                return self._open_log(tp, full)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(threads, thread_name_prefix="pylog-log-recovery") as pool:
            futures = [(tp, pool.submit(load, tp, full)) for tp, full in jobs]
        error: BaseException | None = None
        for tp, fut in futures:
            exc = fut.exception()
            if exc is not None:
                error = error or exc
            elif (log := fut.result()) is not None:
                self._logs[tp] = log
        if error is not None:
            raise error

    def _load_deferred_locked(self, tp: tuple[str, int]) -> Log | None:
        path = self._deferred.pop(tp, None)
        if path is None:
            return None
        log = self._logs[tp] = self._open_log(tp, path)
        return log

    def load_deferred(self, stop: Callable[[], bool] | None = None) -> int:
        """Load every deferred log (one at a time, each under the manager's lock, so a
        caller's first use of another log waits for at most one load); stops early when
        ``stop()`` says so.  Returns how many it loaded."""
        n = 0
        for tp in sorted(self._deferred):
            if stop is not None and stop():
                break
            with self._lock:
                if self._closed:
                    break
                if self._load_deferred_locked(tp) is not None:
                    n += 1
        return n

    def is_deferred(self, topic: str, partition: int) -> bool:
        """Whether that log waits for its deferred load."""
        return (topic, partition) in self._deferred

    @property
    def deferred_count(self) -> int:
        """How many logs wait for their deferred load."""
        return len(self._deferred)

    def topic_partitions(self) -> list[tuple[str, int]]:
        """Every log's ``(topic, partition)``, loaded or deferred, sorted."""
        with self._lock:
            return sorted([*self._logs, *self._deferred])

    def _open_log(self, tp: tuple[str, int], path: str, config: LogConfig | None = None) -> Log:
        """Open one existing log at load: the clean-shutdown marker is trusted only for a
        log the (intact) recovery-point checkpoint lists."""
        config = config or self.config_for(tp[0])
        recovery_point = self._recovery_points.get(tp)
        clean = self.had_clean_shutdown and self._trust_recovery_points and recovery_point is not None
        if self.had_clean_shutdown and self._trust_recovery_points and recovery_point is None:
            _log.warning("%s: %s-%d is not listed although the directory was shut down cleanly; "
                         "recovering the whole log", os.path.join(self.data_dir, RECOVERY_POINT_CHECKPOINT), *tp)
        start = self._start_offsets.get(tp)
        log = Log.open(path, config=config, recovery_point=recovery_point, log_start_offset=start,
                       clean_shutdown=clean, cache=self.cache, clock=self._clock)
        if start is not None and start > log.log_end_offset:
            # Above every offset the log holds: damage (a checkpointed start is never past
            # the end), and trusting it would hide every record.  Reopen without it.
            _log.warning("%s: %s-%d starts at %d, above the log end offset %d; deriving the log start "
                         "offset from the segments", os.path.join(self.data_dir, LOG_START_OFFSET_CHECKPOINT),
                         tp[0], tp[1], start, log.log_end_offset)
            log.close()
            del self._start_offsets[tp]
            log = Log.open(path, config=config, recovery_point=log.log_end_offset, log_start_offset=None,
                           clean_shutdown=True, cache=self.cache, clock=self._clock)
        return log

    def config_for(self, topic: str) -> LogConfig:
        return self.topic_configs.get(topic, self.config)

    # -- logs ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log manager {self.data_dir} is closed")

    def get_log(self, topic: str, partition: int) -> Log | None:
        """The log of ``topic``-``partition`` (loaded now if it was deferred), or None."""
        with self._lock:
            log = self._logs.get((topic, partition))
            if log is None and self._deferred and not self._closed:
                log = self._load_deferred_locked((topic, partition))
            return log

    def get_or_create_log(self, topic: str, partition: int, config: LogConfig | Mapping[str, Any] | None = None) -> Log:
        """The log of ``topic``-``partition``, created empty if it does not exist."""
        with self._lock:
            self._check_open()
            tp = (topic, partition)
            log = self._logs.get(tp)
            if log is None and tp in self._deferred:
                log = self._load_deferred_locked(tp)
            if log is not None:
                return log
            if not isinstance(topic, str) or not _LEGAL_TOPIC.match(topic) or topic in (".", ".."):
                raise InvalidTopicError(
                    f"invalid topic name {topic!r}: use 1-249 characters of [a-zA-Z0-9._-]")
            if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
                raise InvalidTopicError(f"invalid partition {partition!r}")
            if isinstance(config, Mapping):
                config = self.config_for(topic).replace(**config)
            if config is not None:
                self.topic_configs[topic] = config
            path = os.path.join(self.data_dir, f"{topic}-{partition}")
            existed = os.path.isdir(path)
            log = Log.open(path, config=config or self.config_for(topic),
                           recovery_point=self._recovery_points.get(tp), log_start_offset=self._start_offsets.get(tp),
                           clean_shutdown=False, cache=self.cache, clock=self._clock)
            if not existed:
                fsync_dir(self.data_dir)
            self._logs[tp] = log
            return log

    def delete_log(self, topic: str, partition: int) -> bool:
        """Close and delete a log (renamed to ``...-delete`` first, so a crash midway
        leaves a directory the next open removes).  Returns whether it existed."""
        with self._lock:
            self._check_open()
            self._load_deferred_locked((topic, partition))
            log = self._logs.pop((topic, partition), None)
            if log is None:
                return False
            log.close()
            doomed = os.path.join(self.data_dir, f"{topic}-{partition}.{random_uuid_bytes().hex()}-delete")
            os.rename(log.path, doomed)
            fsync_dir(self.data_dir)
            shutil.rmtree(doomed, ignore_errors=True)
            self._recovery_points.pop((topic, partition), None)
            self._start_offsets.pop((topic, partition), None)
            self.checkpoint()
            return True

    def logs(self) -> dict[tuple[str, int], Log]:
        """A snapshot ``{(topic, partition): Log}`` of the loaded logs (deferred ones are
        unchanged since the open: nothing to flush, retain or clean until loaded)."""
        with self._lock:
            return dict(self._logs)

    def __iter__(self) -> Iterator[Log]:
        return iter(self.logs().values())

    def __len__(self) -> int:
        return len(self._logs) + len(self._deferred)

    # -- maintenance ---------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write the recovery-point and log-start-offset checkpoints for all logs."""
        with self._lock:
            rps, starts = {}, {}
            for tp, log in self._logs.items():
                rps[tp] = log.recovery_point
                starts[tp] = log.log_start_offset
            self._recovery_points.update(rps)
            self._start_offsets.update(starts)
            for tp in self._deferred:   # unchanged since the open: their entries stand
                rps[tp] = self._recovery_points[tp]
                if tp in self._start_offsets:
                    starts[tp] = self._start_offsets[tp]
            CheckpointFile(os.path.join(self.data_dir, RECOVERY_POINT_CHECKPOINT)).write(rps)
            CheckpointFile(os.path.join(self.data_dir, LOG_START_OFFSET_CHECKPOINT)).write(starts)

    def flush(self) -> None:
        """Flush every log, then checkpoint."""
        for log in self.logs().values():
            if not log.closed:
                log.flush()
        self.checkpoint()

    def maybe_flush(self, now_ms: int | None = None) -> int:
        """Apply each log's flush policy (for a periodic timer); returns how many flushed."""
        n = sum(1 for log in self.logs().values() if not log.closed and log.maybe_flush(now_ms))
        if n:
            self.checkpoint()
        return n

    def apply_retention(self, now_ms: int | None = None) -> dict[tuple[str, int], RetentionResult]:
        """Apply retention to every log; returns the logs where something was deleted."""
        out = {}
        for tp, log in self.logs().items():
            res = log.apply_retention(now_ms)
            if res.deleted_segments:
                out[tp] = res
        if out:
            self.checkpoint()
        return out

    def close(self, after_sync: Callable[[], None] | None = None) -> None:
        """Close every log, write the checkpoints and the clean-shutdown marker, and
        release the directory's lock (also when one of those steps fails: the marker is
        then missing, so the next open recovers).

        Batched durability, in this order (what a kill at each point leaves):

        1. every log closes without an fsync or msync of its own (``Log.close(sync=False)``:
           a log untouched since open has nothing to write beyond the trim of its active
           segment's files); a kill here: no marker, old checkpoints, so the next open
           recovers each log from its old recovery point (nothing acknowledged is lost:
           it is in the page cache, or was flushed below that point);
        2. one :func:`sync_filesystem` makes all of it durable together; then
           ``after_sync`` runs (the broker renames its producer snapshots, written without
           fsync before this close, into place) and a second ``syncfs`` makes those
           renames durable; a kill in between leaves ``.tmp`` snapshots (deleted at
           open) and no marker: as 1;
        3. the checkpoints are written (each atomically: tmp, fsync, rename, fsync dir);
           a kill here: no marker, so the new recovery points only shorten recovery;
        4. the marker is created and the directory fsync-ed: from then on the next open
           trusts the checkpoints and skips recovery.
        """
        with self._lock:
            if self._closed:
                return
            try:
                for log in self._logs.values():
                    log.close(sync=False)
                sync_filesystem(self.data_dir)
                if after_sync is not None:
                    after_sync()
                    sync_filesystem(self.data_dir)
                self.checkpoint()
                with open(os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE), "wb") as f:
                    os.fsync(f.fileno())
                fsync_dir(self.data_dir)
            finally:
                self._closed = True
                self._dir_lock.release()

    def __enter__(self) -> "LogManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
