"""A data directory of partition logs, as Kafka's LogManager keeps one.

On disk::

    <data_dir>/
      meta.properties                      version, cluster.id, node.id, directory.id
      recovery-point-offset-checkpoint     per partition: offset up to which data is flushed
      log-start-offset-checkpoint          per partition: first readable offset
      .kafka_cleanshutdown                 present only while the manager is cleanly closed
      <topic>-<partition>/                 one Log each (pylog.storage.log)
      <topic>-<partition>.<id>-delete/     a deleted log not yet removed (swept on open)

Crash behaviour: the clean-shutdown marker is removed as soon as the manager opens, so a
crash at any later point makes the next open recover every log from its checkpointed
recovery point (a missing or corrupt checkpoint file means "recover everything").
Checkpoint files are replaced atomically (tmp, fsync, rename, fsync directory).

Resource bounds: every log keeps only its active segment open and mapped; sealed segments
open their file and map their indexes on first use and are released under one LRU limit
(``max_open_segments``) shared by all logs, so thousands of partitions and segments keep
descriptors and mappings bounded.

Thread safety: thread-safe.  Creating, deleting and listing logs take the manager's lock;
each Log has its own lock for its data.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import threading
import uuid
from typing import Any, Callable, Iterator, Mapping

from pylog.errors import InvalidTopicError, KafkaStorageError, LogClosedError
from pylog.storage.checkpoint import (CheckpointFile, CorruptCheckpointError, fsync_dir, read_properties,
                                      write_properties)
from pylog.storage.config import LogConfig
from pylog.storage.log import (CLEAN_SHUTDOWN_FILE, LOG_START_OFFSET_CHECKPOINT, RECOVERY_POINT_CHECKPOINT,
                               Log, RetentionResult, parse_topic_partition)
from pylog.storage.segment import SegmentCache

__all__ = ["LogManager", "META_PROPERTIES", "CLEANER_OFFSET_CHECKPOINT"]

META_PROPERTIES = "meta.properties"
CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_DELETE_DIR = re.compile(r"^.+-\d+\.[0-9a-f]+-delete$")


def _random_id() -> str:
    # Kafka's Uuid string form: URL-safe base64 of 16 bytes, no padding.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


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
    """

    def __init__(self, data_dir: str | os.PathLike, *, config: LogConfig | None = None,
                 topic_configs: Mapping[str, LogConfig] | None = None, max_open_segments: int = 256,
                 node_id: int = 0, cluster_id: str | None = None,
                 clock: Callable[[], int] | None = None) -> None:
        self.data_dir = os.fspath(data_dir)
        self.config = config or LogConfig()
        self.topic_configs = dict(topic_configs or {})
        self.cache = SegmentCache(max_open_segments)
        self._clock = clock
        self._lock = threading.RLock()
        self._logs: dict[tuple[str, int], Log] = {}
        self._closed = False
        os.makedirs(self.data_dir, exist_ok=True)
        self.meta = self._load_meta(node_id, cluster_id)
        self._recovery_points = self._read_checkpoint(RECOVERY_POINT_CHECKPOINT)
        self._start_offsets = self._read_checkpoint(LOG_START_OFFSET_CHECKPOINT)
        marker = os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE)
        self.had_clean_shutdown = os.path.exists(marker)
        self._load_logs()
        if self.had_clean_shutdown:
            os.unlink(marker)
            fsync_dir(self.data_dir)

    # -- loading -------------------------------------------------------------------

    def _load_meta(self, node_id: int, cluster_id: str | None) -> dict[str, str]:
        path = os.path.join(self.data_dir, META_PROPERTIES)
        if os.path.exists(path):
            meta = read_properties(path)
            if meta.get("node.id") not in (None, str(node_id)):
                raise KafkaStorageError(
                    f"{path} belongs to node {meta['node.id']}, not node {node_id}: "
                    f"use another data directory or node_id={meta['node.id']}")
            if cluster_id is not None and meta.get("cluster.id") not in (None, cluster_id):
                raise KafkaStorageError(f"{path} belongs to cluster {meta['cluster.id']}, not {cluster_id}")
            return meta
        meta = {"version": "1", "cluster.id": cluster_id or _random_id(), "node.id": str(node_id),
                "directory.id": _random_id()}
        write_properties(path, meta, comment="Written by pylog")
        return meta

    def _read_checkpoint(self, name: str) -> dict[tuple[str, int], int]:
        try:
            return CheckpointFile(os.path.join(self.data_dir, name)).read()
        except CorruptCheckpointError:
            return {}  # recovered from the segments instead

    def _load_logs(self) -> None:
        for name in sorted(os.listdir(self.data_dir)):
            full = os.path.join(self.data_dir, name)
            if not os.path.isdir(full):
                continue
            if _DELETE_DIR.match(name):
                shutil.rmtree(full, ignore_errors=True)
                continue
            tp = parse_topic_partition(name)
            if tp is None:
                continue
            self._logs[tp] = self._open_log(tp, full)

    def _open_log(self, tp: tuple[str, int], path: str, config: LogConfig | None = None) -> Log:
        return Log.open(path, config=config or self.config_for(tp[0]),
                        recovery_point=self._recovery_points.get(tp),
                        log_start_offset=self._start_offsets.get(tp),
                        clean_shutdown=self.had_clean_shutdown, cache=self.cache, clock=self._clock)

    def config_for(self, topic: str) -> LogConfig:
        return self.topic_configs.get(topic, self.config)

    # -- logs ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log manager {self.data_dir} is closed")

    def get_log(self, topic: str, partition: int) -> Log | None:
        with self._lock:
            return self._logs.get((topic, partition))

    def get_or_create_log(self, topic: str, partition: int, config: LogConfig | Mapping[str, Any] | None = None) -> Log:
        """The log of ``topic``-``partition``, created empty if it does not exist."""
        with self._lock:
            self._check_open()
            tp = (topic, partition)
            log = self._logs.get(tp)
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
            log = self._logs.pop((topic, partition), None)
            if log is None:
                return False
            log.close()
            doomed = os.path.join(self.data_dir, f"{topic}-{partition}.{uuid.uuid4().hex}-delete")
            os.rename(log.path, doomed)
            fsync_dir(self.data_dir)
            shutil.rmtree(doomed, ignore_errors=True)
            self._recovery_points.pop((topic, partition), None)
            self._start_offsets.pop((topic, partition), None)
            self.checkpoint()
            return True

    def logs(self) -> dict[tuple[str, int], Log]:
        """A snapshot ``{(topic, partition): Log}``."""
        with self._lock:
            return dict(self._logs)

    def __iter__(self) -> Iterator[Log]:
        return iter(self.logs().values())

    def __len__(self) -> int:
        return len(self._logs)

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

    def close(self) -> None:
        """Close every log, write the checkpoints and the clean-shutdown marker."""
        with self._lock:
            if self._closed:
                return
            for log in self._logs.values():
                log.close()
            self.checkpoint()
            with open(os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE), "wb") as f:
                os.fsync(f.fileno())
            fsync_dir(self.data_dir)
            self._closed = True

    def __enter__(self) -> "LogManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
