"""The state of one stream task: its stores, their changelog offsets, the task's
``.checkpoint`` file, and restoring the stores from their changelogs (Kafka's
ProcessorStateManager and the restore half of its StoreChangelogReader).

Life cycle, driven by the task::

    m = ProcessorStateManager(state_dir, application_id, task_id, exactly_once=False)
    m.register(store, ("app-counts-changelog", 3))   # None: a store without a changelog
    m.initialize(context)          # reads .checkpoint, wipes what must be wiped, inits stores
    for name, (tp, start) in m.restore_start_offsets().items():
        m.restore(name, records_from(tp, start), end_offset)   # records: (offset, key, value)
    ... processing; the record collector reports written offsets:
    m.update_changelog_offsets({tp: offset})
    m.commit()                     # flush caches; every 10,000 changelog records (or when
                                   # enforced) flush the stores and write .checkpoint
    m.close()                      # flush, checkpoint, close (a clean close)

On-disk: ``<state_dir>/<application_id>/<task_id>/.checkpoint`` in Kafka's
OffsetCheckpoint format (:mod:`.checkpoint`), holding for each persistent logged store
the last changelog offset it holds.  In-memory stores are never checkpointed: they
are restored from the beginning every time.

Crash behaviour, Kafka's rule:

* at-least-once: a commit rewrites the checkpoint once the changelogs have moved
  10,000 records past it (Kafka's threshold), always after flushing the stores, so
  it never claims more than the stores hold.  A store directory left by
  a crash is kept, and restored from its checkpointed offset + 1 (from the beginning
  when it has none); replaying records it already holds rewrites the same values.
* exactly-once: the checkpoint is read and deleted at initialisation and written
  again only by a clean close, so a crash leaves none.  A persistent store without a
  checkpointed offset may hold writes of an aborted transaction: its directory is
  wiped and it is restored from the beginning of its changelog.
* a damaged checkpoint is logged and treated as absent, never trusted.

Thread safety: one task thread.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Dict, Iterable, List, Optional, Tuple

from pylog.errors import IllegalStateError

from .changelogging import WrappedStore
from .checkpoint import CHECKPOINT_FILE_NAME, read_checkpoint, write_checkpoint
from .persistent import store_directory

__all__ = ["ProcessorStateManager", "DEFAULT_RESTORE_BATCH", "OFFSET_DELTA_THRESHOLD_FOR_CHECKPOINT"]

log = logging.getLogger(__name__)

TopicPartition = Tuple[str, int]
DEFAULT_RESTORE_BATCH = 1000
#: Kafka's StateManagerUtil.OFFSET_DELTA_THRESHOLD_FOR_CHECKPOINT.
OFFSET_DELTA_THRESHOLD_FOR_CHECKPOINT = 10_000


class _StoreMetadata:
    __slots__ = ("store", "changelog", "offset")

    def __init__(self, store: Any, changelog: Optional[TopicPartition]) -> None:
        self.store = store
        self.changelog = changelog
        #: Last changelog offset the store holds (None: nothing known).
        self.offset: Optional[int] = None


def _innermost(store: Any) -> Any:
    return store.wrapped() if isinstance(store, WrappedStore) else store


class ProcessorStateManager:
    """The stores of one task and their changelog offsets; see the module docstring.

    Parameters
    ----------
    exactly_once : bool
        ``processing_guarantee="exactly_once_v2"``: checkpoint only on clean close,
        wipe persistent stores that have no checkpointed offset.
    restore_listener : StateRestoreListener, optional
        Told when each store's restore starts, after each batch, and at the end.
    show_progress : bool
        Draw a ``tqdm`` progress bar per restoring store (on stderr).
    """

    def __init__(self, state_dir: str, application_id: str, task_id: Any, *, exactly_once: bool = False,
                 restore_listener: Any = None, show_progress: bool = False) -> None:
        self.state_dir = state_dir
        self.application_id = application_id
        self.task_id = task_id
        self.exactly_once = exactly_once
        self.restore_listener = restore_listener
        self.show_progress = show_progress
        self.task_dir = os.path.dirname(os.path.dirname(store_directory(state_dir, application_id, task_id, "-")))
        self.checkpoint_path = os.path.join(self.task_dir, CHECKPOINT_FILE_NAME)
        self._stores: Dict[str, _StoreMetadata] = {}
        self._initialized = False
        #: Changelog offsets at the last checkpoint written (or read).
        self._checkpointed: Dict[TopicPartition, int] = {}

    # -- registration and start-up ---------------------------------------------
    def register(self, store: Any, changelog_partition: Optional[TopicPartition]) -> None:
        """Add ``store`` (not yet initialised) with its changelog partition, or None."""
        if self._initialized:
            raise IllegalStateError(f"task {self.task_id}: register stores before initialize()")
        if store.name in self._stores:
            raise ValueError(f"task {self.task_id}: store {store.name!r} is registered twice")
        self._stores[store.name] = _StoreMetadata(store, changelog_partition)

    def store(self, name: str) -> Any:
        return self._stores[name].store

    @property
    def stores(self) -> List[Any]:
        return [m.store for m in self._stores.values()]

    def initialize(self, context: Any) -> None:
        """Read the checkpoint, wipe what the crash rule says to wipe, init every store."""
        os.makedirs(self.task_dir, exist_ok=True)
        offsets = read_checkpoint(self.checkpoint_path)
        if offsets is None:
            offsets = {}  # damaged: logged by read_checkpoint, restore everything
        for meta in self._stores.values():
            store = meta.store
            offset = offsets.get(meta.changelog) if (store.persistent and meta.changelog) else None
            if store.persistent and offset is None and self.exactly_once:
                path = store_directory(self.state_dir, self.application_id, self.task_id, store.name)
                if os.path.exists(path):
                    log.warning("task %s: store %r has no checkpointed offset under exactly-once (the "
                                "task did not close cleanly); wiping %s and restoring it from its changelog",
                                self.task_id, store.name, path)
                    shutil.rmtree(path)
            store.init(context)
            if getattr(_innermost(store), "wiped", False):
                offset = None
            meta.offset = offset
        self._checkpointed = self.changelog_offsets()
        if self.exactly_once and os.path.exists(self.checkpoint_path):
            # A crash from here on must not leave offsets that the stores' contents
            # (possibly including aborted writes) do not match.
            os.remove(self.checkpoint_path)
        self._initialized = True

    def restore_start_offsets(self) -> Dict[str, Tuple[TopicPartition, int]]:
        """For each logged store: ``(changelog partition, first offset to read)``."""
        return {name: (m.changelog, 0 if m.offset is None else m.offset + 1)
                for name, m in self._stores.items() if m.changelog is not None}

    # -- restore ----------------------------------------------------------------
    def restore(self, store_name: str, records: Iterable[Tuple[int, Optional[bytes], Optional[bytes]]],
                end_offset: int, batch_size: int = DEFAULT_RESTORE_BATCH) -> int:
        """Apply changelog ``records`` (``(offset, key, value)``, in offset order, from
        :meth:`restore_start_offsets`) to the store, ``batch_size`` keyed records at a
        time, up to ``end_offset`` (exclusive), through the restore loop every restore
        runs (:func:`pylog.streams.restore.restore_loop`: the listener and the progress
        bar; a store already at ``end_offset`` gets no listener call).  Returns the
        number of records applied."""
        from ..restore import restore_loop

        self._check_initialized()
        meta = self._stores[store_name]
        if meta.changelog is None:
            raise ValueError(f"store {store_name!r} has no changelog to restore from")
        it = iter(records)

        def fetch() -> Tuple[List[Tuple[int, int]], int]:
            batch: List[Tuple[bytes, Optional[bytes]]] = []
            last = -1
            for offset, key, value in it:
                if offset >= end_offset:
                    break
                if key is None:
                    continue  # a changelog record without a key is not a store entry
                batch.append((key, value))
                last = offset
                if len(batch) >= batch_size:
                    meta.store.restore_batch(batch)
                    meta.offset = last
                    return [(len(batch), last)], last + 1
            if batch:
                meta.store.restore_batch(batch)
                meta.offset = last
            return [(len(batch), last)], end_offset     # the records are used up
        start = 0 if meta.offset is None else meta.offset + 1
        return restore_loop(meta.changelog, store_name, start, end_offset, fetch, listener=self.restore_listener,
                            progress=self.show_progress)

    # -- processing -------------------------------------------------------------
    def update_changelog_offsets(self, written: Dict[TopicPartition, int]) -> None:
        """Record the offsets of the last changelog records written (the record
        collector's acknowledgements)."""
        by_tp = {m.changelog: m for m in self._stores.values() if m.changelog is not None}
        for tp, offset in written.items():
            meta = by_tp.get(tp)
            if meta is not None:
                meta.offset = offset

    def changelog_offsets(self) -> Dict[TopicPartition, int]:
        return {m.changelog: m.offset for m in self._stores.values()
                if m.changelog is not None and m.offset is not None}

    def flush(self) -> None:
        for meta in self._stores.values():
            if meta.store.is_open():
                meta.store.flush()

    def commit(self, enforce_checkpoint: bool = False) -> bool:
        """Flush the caches (their writes reach the stores, the changelog and the flush
        listeners); then, under at-least-once, flush the stores and write the
        checkpoint if ``enforce_checkpoint`` or the changelogs moved more than
        :data:`OFFSET_DELTA_THRESHOLD_FOR_CHECKPOINT` records since the last one
        (Kafka's rule: a RocksDB flush per commit would cost more than the restore it
        saves).  Returns True when it wrote a checkpoint."""
        self._check_initialized()
        for meta in self._stores.values():
            flush_cache = getattr(meta.store, "flush_cache", None)  # a custom store may have none
            if flush_cache is not None and meta.store.is_open():
                flush_cache()
        if self.exactly_once:
            return False
        if not enforce_checkpoint and self._offset_delta() <= OFFSET_DELTA_THRESHOLD_FOR_CHECKPOINT:
            return False
        self.flush()
        self.checkpoint()
        return True

    def _offset_delta(self) -> int:
        delta = 0
        for tp, offset in self.changelog_offsets().items():
            delta += offset - self._checkpointed.get(tp, -1)
        return delta

    def checkpoint(self) -> None:
        """Write ``.checkpoint`` with the offsets of the persistent logged stores (the
        caller flushed them first)."""
        offsets = {m.changelog: m.offset for m in self._stores.values()
                   if m.store.persistent and m.changelog is not None and m.offset is not None}
        write_checkpoint(self.checkpoint_path, offsets)
        self._checkpointed = self.changelog_offsets()

    def close(self, clean: bool = True) -> None:
        """Close every store.  A clean close flushes and writes the checkpoint (in both
        modes); an unclean one (the task is corrupted) writes nothing, and under
        exactly-once wipes the persistent stores so the next start restores them."""
        if not self._initialized:
            return
        if clean:
            self.flush()
            self.checkpoint()
        for meta in self._stores.values():
            if meta.store.is_open():
                meta.store.close()
        if not clean and self.exactly_once:
            for meta in self._stores.values():
                if meta.store.persistent:
                    shutil.rmtree(store_directory(self.state_dir, self.application_id, self.task_id,
                                                  meta.store.name), ignore_errors=True)
        self._initialized = False

    def _check_initialized(self) -> None:
        if not self._initialized:
            raise IllegalStateError(f"task {self.task_id}: the state manager is not initialized")
