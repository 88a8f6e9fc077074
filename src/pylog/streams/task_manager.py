"""The tasks of one stream thread (Kafka Streams' ``TaskManager``): its active tasks
and standby tasks, how they are built, restored, suspended, handed over and closed in a
rebalance, their ``.checkpoint`` files, and the standbys' changelog reading.

Active tasks: one :class:`~.task.StreamTask` per sub-topology and partition
(``<subtopology>_<partition>``), built when its partition is assigned and restored
first from its stores' changelogs (timestamped stores get their values' timestamps back
from the changelog records; :mod:`.restore`).  A task new to the thread is taken over
from the thread's standby of it when it has one (only the changelog's tail is restored)
or rebuilt.  A restore stops between fetches when the group rebalances or the thread
stops; what it restored is kept as a standby and resumes from there.

Standby tasks (``num.standby.replicas``; Kafka's ``StandbyTask``): the logged stores of
a task run elsewhere, kept here by reading their changelogs continuously (one consumer
for all of them, polled without waiting between input polls; ``read_committed`` under
exactly-once).  A standby's persistent stores write the task's ``.checkpoint`` when it
closes (and at a commit once 10000 changelog records came in since the last), so a new
standby or a restart resumes there; without a checkpoint its directory is wiped and it
reads from the beginning.

Crash behaviour, Kafka's rule: under exactly-once a task closed cleanly (after a
commit) writes its ``.checkpoint`` with the last changelog offset each persistent store
holds (the last stable offset, so never past it); a task being built reads and deletes
it, keeps those stores and restores them from the next offset.  Without a checkpoint (a
crash, an abort) the task's directory is wiped and its stores restored from the
beginning of their changelogs, since local state may hold writes of an aborted
transaction.  At-least-once restores every active task's store from the beginning and
deletes the checkpoint a standby left (stale once the task writes).

Repartition purge (Kafka's ``maybePurgeCommittedRecords``): after a commit, at most
every ``repartition.purge.interval.ms`` (default 30000), the records of the repartition
topics this thread's tasks consumed and committed are deleted (DeleteRecords up to the
committed offsets): nothing reads them again.  A failed delete is logged and tried at
the next purge.

Thread safety: driven by its stream thread only.  The app's query lock is held while
the task and standby maps change, so interactive queries (on other threads) read them
whole; a task moving between two threads of the instance is opened by the new one
only once the old one has let it go (:meth:`StreamsApp._wait_for_siblings`).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Dict, List, Optional, Set, Tuple

from pylog.errors import PylogError

from .assignor import LATEST_OFFSET, TaskId
from .config import now_ms, setting
from .errors import DeliveryWatch
from .restore import RestoreSuspended, changelog_records, restore_store
from .state.checkpoint import read_checkpoint, write_checkpoint
from .task import StandbyTask, StreamTask

__all__ = ["TaskManager"]

log = logging.getLogger("pylog.streams")
#: A standby's checkpoint is rewritten at a commit once its stores moved this many
#: changelog records on (Kafka's OFFSET_DELTA_THRESHOLD_FOR_CHECKPOINT); always on close.
_CHECKPOINT_DELTA = 10_000
#: Past any changelog offset: a standby applies whatever it fetched.
_NO_END = 1 << 62


class TaskManager:
    """The active and standby tasks of ``thread`` (a
    :class:`~.stream_thread.StreamThread`; module docstring)."""

    def __init__(self, thread: Any) -> None:
        self.thread = thread
        app = thread.app
        self.app = app
        self.metadata = app.metadata
        self.state_directory = app.state_directory
        #: (sub-topology, partition) -> its active task
        self.tasks: Dict[TaskId, StreamTask] = {}
        self.standbys: Dict[TaskId, StandbyTask] = {}
        #: A task's stores are being restored (queries raise InvalidStateStoreError).
        self.restoring = False
        #: Offsets to commit: (topic, partition) -> the next offset to consume.
        self.consumed: Dict[Tuple[str, int], int] = {}
        #: Exactly-once: offsets committed by this thread, of the partitions it has.
        self.committed: Dict[Tuple[str, int], int] = {}
        self._standby_consumer: Any = None
        #: (changelog topic, partition) -> (standby task, store) it feeds
        self._standby_feeds: Dict[Tuple[str, int], Tuple[TaskId, str]] = {}
        self._standby_checkpointed: Dict[TaskId, int] = {}
        self._repartition_topics = self.metadata.repartition_topics
        self._purge_interval_ms = int(setting(app.config, "repartition.purge.interval.ms", 30_000))
        self._last_purge_ms = now_ms()
        #: (repartition topic, partition) -> the offset its records were deleted up to
        self._purged: Dict[Tuple[str, int], int] = {}

    # -- active tasks
    def task(self, gid: int, partition: int, wait: bool = True) -> StreamTask:
        """The active task of (``gid``, ``partition``), built and restored if new.

        Raises
        ------
        RestoreSuspended
            The restore stopped (rebalance or stop), or another stream thread of the
            instance still holds the task (after 30 s, or at once unless ``wait``).
        """
        task = self.tasks.get((gid, partition))
        if task is not None:
            return task
        app, thread = self.app, self.thread
        if app.has_sibling_threads():
            # never waits holding the query lock: the other thread needs it to let go
            app._wait_for_siblings(thread, (gid, partition), 30.0 if wait else 0.0)
        names = self.metadata.nodes_of[gid]
        task_id = f"{gid}_{partition}"
        checkpointed: Dict[str, int] = {}
        adopted = None
        standby = self.standbys.pop((gid, partition), None)
        if standby is not None:
            # the standby's stores become the task's: only the changelogs' tail is
            # restored, from where the standby stopped
            self._unfeed(gid, partition)
            adopted = standby.take_stores()
            checkpointed = {sname: pos - 1 for sname, pos in standby.positions.items()}
            self.state_directory.delete_checkpoint(task_id)
            log.info("task %s of %s takes its state over from its standby", task_id, app.application_id)
        elif app.exactly_once:
            checkpointed = self._take_checkpoint(task_id, gid, partition)
        else:
            self.state_directory.delete_checkpoint(task_id)    # a standby's: stale once the task writes
        shared = {} if app.global_task is None else dict(app.global_task.stores)
        watch = DeliveryWatch(thread.collector)     # the production handler sees failed sends
        task = StreamTask(app.topology, names, application_id=app.application_id,
                          task_id=task_id, config=app.config, collector=watch,
                          state_dir=app.state_dir, partition=partition,
                          wall_clock=now_ms, shared_stores=shared,
                          default_key_serde=app.config.get("default.key.serde"),
                          default_value_serde=app.config.get("default.value.serde"),
                          adopted_stores=adopted)
        watch.task = task
        try:
            self._restore(task, gid, partition, checkpointed)
        except RestoreSuspended as exc:
            # keep what was restored: the task's state waits as a standby, and
            # resumes from there when the task is assigned here again
            self._task_to_standby((gid, partition), task, getattr(exc, "positions", None))
            raise
        self.tasks[(gid, partition)] = task
        return task

    def create_tasks(self, tasks: Set[TaskId]) -> None:
        """Build (and restore) the active ``tasks`` not built yet; a restore cut short
        by a stop or a rebalance leaves its task unbuilt (its records stay unconsumed)."""
        for gid, partition in sorted(tasks):
            if (gid, partition) in self.tasks:
                continue
            try:
                self.task(gid, partition)
            except RestoreSuspended as exc:
                log.info("%s: %s", self.app.application_id, exc)
                return

    def _take_checkpoint(self, task_id: str, gid: int, partition: int) -> Dict[str, int]:
        """Exactly-once, before a task is built: the stores' checkpointed changelog
        offsets (store -> last offset it holds), from the ``.checkpoint`` a clean close
        wrote.  The file is deleted at once, so a crash from here on leaves none.  A
        store without an offset may hold writes of an aborted (or never committed)
        transaction: its directory is wiped (all of the task's without a checkpoint)."""
        sd = self.state_directory
        path = sd.checkpoint_path(task_id)
        offsets = read_checkpoint(path) or {}
        if os.path.exists(path):
            os.remove(path)
        if not offsets:
            shutil.rmtree(sd.task_dir(task_id), ignore_errors=True)
            return {}
        out = {}
        for sname, topic, _meta in self.metadata.changelogs(gid):
            offset = offsets.get((topic, partition))
            if offset is None:
                shutil.rmtree(sd.store_dir(task_id, sname), ignore_errors=True)
            else:
                out[sname] = offset
        return out

    def _write_checkpoint(self, task: StreamTask, gid: int) -> None:
        """Exactly-once, after a clean close (everything the task wrote is committed):
        for each persistent logged store, the last changelog offset it holds.  The last
        stable offset is used, so an offset is never past what the store holds (a
        commit marker still to come only makes the next restore re-read records)."""
        offsets = {}
        for sname, topic, _meta in self.metadata.changelogs(gid):
            if getattr(task.stores[sname], "persistent", False):
                lso = self.app.client.list_offsets(topic, task.partition, -1, isolation_level=1).offset
                if lso > 0:
                    offsets[(topic, task.partition)] = lso - 1
        if offsets:
            write_checkpoint(self.state_directory.checkpoint_path(task.task_id), offsets)

    def close_task(self, gid: int, task: StreamTask, clean: bool) -> None:
        task.close()
        if clean and self.app.exactly_once:
            self._write_checkpoint(task, gid)

    def _restore(self, task: StreamTask, gid: int, partition: int,
                 checkpointed: Optional[Dict[str, int]] = None) -> None:
        """Each logged store from its changelog: from the offset after its checkpointed
        one, else from the beginning, telling the restore listener (:mod:`.restore`).
        Raises RestoreSuspended when the thread stops or the group rebalances meanwhile."""
        app = self.app
        self.restoring = True
        changelogs = self.metadata.changelogs(gid)
        # next offset each store needs: kept on the exception when the restore stops,
        # so the task's standby resumes there
        positions = {sname: (checkpointed or {}).get(sname, -1) + 1 for sname, _t, _m in changelogs}
        try:
            for sname, topic, meta in changelogs:
                start = (checkpointed or {}).get(sname)
                c = app.client.consumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                        isolation_level=app.isolation_level)
                try:
                    n = restore_store(c, (topic, partition), sname, task.stores[sname],
                                      start=None if start is None else start + 1, timestamped=meta.timestamped,
                                      listener=app.restore_listener, progress=app.restore_progress,
                                      suspend=self.thread.restore_suspended)
                    positions[sname] = c.position((topic, partition))
                except RestoreSuspended as exc:
                    positions[sname] = max(exc.position, 0)
                    exc.positions = positions     # type: ignore[attr-defined]
                    raise
                finally:
                    c.close(autocommit=False)
                if n:
                    log.info("restored %d records of store %s (task %s) from %s", n, sname, task.task_id, topic)
        finally:
            self.restoring = False

    # -- rebalances: suspended, moved and lost tasks
    def suspend(self, partitions: Set[Any]) -> None:
        """The partitions were revoked after a commit: their tasks stay open (and
        queryable) until :meth:`on_assignment` knows whether they stay here."""
        with self.app.iq_lock:
            for tp in partitions:
                self.consumed.pop((tp[0], tp[1]), None)
                self.committed.pop((tp[0], tp[1]), None)

    def drop(self, partitions: Set[Any], clean: bool = False) -> None:
        """Close the tasks of ``partitions``; ``clean``: what they did is committed (under
        exactly-once their checkpoints are written)."""
        topic_group = self.metadata.topic_group
        with self.app.iq_lock:
            for tp in partitions:
                topic, partition = tp[0], tp[1]
                self.consumed.pop((topic, partition), None)
                self.committed.pop((topic, partition), None)
                gid = topic_group.get(topic)
                task = self.tasks.pop((gid, partition), None) if gid is not None else None
                if gid is not None and task is not None:
                    self.close_task(gid, task, clean)
                    log.info("task %s of %s moved away", task.task_id, self.app.application_id)

    def close_dirty(self) -> None:
        """Close every active task without committing; the input offsets are forgotten."""
        with self.app.iq_lock:
            for task in self.tasks.values():
                task.close()
            self.tasks.clear()
        self.consumed.clear()
        self.committed.clear()

    def on_assignment(self, active: Set[TaskId], standby: Set[TaskId]) -> None:
        """The member got its assignment (``active`` tasks, ``standby`` tasks the
        assignor placed here): tasks kept go on, tasks given away become standbys (when
        assigned as such) or close, standbys no longer wanted close (their checkpoints
        written), new standbys open, and the new active tasks are built, from their
        standbys where this thread has them."""
        app = self.app
        stateful = self.metadata.stateful_groups()
        wanted = {t for t in standby if t[0] in stateful and t not in active}
        with app.iq_lock:
            for key in [k for k in self.tasks if k not in active]:
                task = self.tasks.pop(key)
                if key in wanted and key not in self.standbys:
                    self._task_to_standby(key, task)
                else:
                    self.close_task(key[0], task, clean=not self.thread.failed)
                    log.info("task %s of %s moved away", task.task_id, app.application_id)
            for key in [k for k in self.standbys if k not in wanted and k not in active]:
                self._close_standby(key)
        app._notify_released()
        for key in sorted(wanted - set(self.standbys)):
            self._open_standby(key)
        self.create_tasks(active)

    # -- standbys
    def _new_standby(self, key: TaskId, **kw: Any) -> StandbyTask:
        app = self.app
        gid, partition = key
        return StandbyTask(app.topology, self.metadata.nodes_of[gid], application_id=app.application_id,
                           task_id=f"{gid}_{partition}", config=app.config, state_dir=app.state_dir,
                           partition=partition, default_key_serde=app.config.get("default.key.serde"),
                           default_value_serde=app.config.get("default.value.serde"), **kw)

    def _task_to_standby(self, key: TaskId, task: StreamTask, positions: Optional[Dict[str, int]] = None) -> None:
        """An active task given away but kept as a standby: its logged stores stay open
        as they are (everything it wrote is committed: they hold their changelogs up to
        the end, or up to ``positions`` for a task whose restore was cut short), the
        rest closes."""
        gid, partition = key
        changelogs = {sname: topic for sname, topic, _ in self.metadata.changelogs(gid)}
        kept = task.close(keep_stores=changelogs)
        if positions is None:
            ends = self.end_offsets([(topic, partition) for topic in changelogs.values()])
            positions = {sname: ends[(topic, partition)] for sname, topic in changelogs.items()}
        self.standbys[key] = self._new_standby(key, adopted_stores=kept, positions=positions)
        self._feed(key)
        log.info("task %s of %s stays here as a standby", task.task_id, self.app.application_id)

    def _open_standby(self, key: TaskId) -> None:
        """A new standby: persistent stores keep what their checkpoint covers (a
        store's directory without one is wiped); the rest is read from the changelog
        as the standby catches up, between polls."""
        app = self.app
        gid, partition = key
        task_id = f"{gid}_{partition}"
        if app.has_sibling_threads():
            try:
                app._wait_for_siblings(self.thread, key)
            except RestoreSuspended:
                log.warning("%s: standby %s not opened: another stream thread still holds the task",
                            app.application_id, task_id)
                return
        checkpointed = self._take_checkpoint(task_id, gid, partition)
        standby = self._new_standby(key, positions={sname: offset + 1 for sname, offset in checkpointed.items()})
        self.standbys[key] = standby
        self._standby_checkpointed[key] = sum(standby.positions.values())
        self._feed(key)
        log.info("standby task %s of %s opened", task_id, app.application_id)

    def _close_standby(self, key: TaskId) -> None:
        standby = self.standbys.pop(key)
        self._unfeed(*key)
        standby.flush()
        self._checkpoint_standby(key, standby)
        standby.close()
        self._standby_checkpointed.pop(key, None)
        log.info("standby task %s of %s closed", standby.task_id, self.app.application_id)

    def _checkpoint_standby(self, key: TaskId, standby: StandbyTask) -> None:
        """The last changelog offset each persistent store of the standby holds, in the
        task's ``.checkpoint`` (call after a flush)."""
        offsets = {(topic, key[1]): standby.positions[sname] - 1 for sname, topic in standby.changelogs.items()
                   if getattr(standby.stores.get(sname), "persistent", False) and standby.positions[sname] > 0}
        if offsets:
            write_checkpoint(self.state_directory.checkpoint_path(standby.task_id), offsets)
            self._standby_checkpointed[key] = sum(standby.positions.values())

    def _feed(self, key: TaskId) -> None:
        """Read the standby's changelog partitions from its positions on."""
        standby = self.standbys[key]
        for sname, topic in standby.changelogs.items():
            self._standby_feeds[(topic, key[1])] = (key, sname)
        self._assign_standby_consumer()

    def _unfeed(self, gid: int, partition: int) -> None:
        self._standby_feeds = {tp: v for tp, v in self._standby_feeds.items() if v[0] != (gid, partition)}
        self._assign_standby_consumer()

    def _assign_standby_consumer(self) -> None:
        c = self._standby_consumer
        if c is None:
            if not self._standby_feeds:
                return
            c = self._standby_consumer = self.app.client.consumer(enable_auto_commit=False,
                                                                  auto_offset_reset="earliest",
                                                                  isolation_level=self.app.isolation_level)
        have = c.assignment()
        tps = sorted(self._standby_feeds)
        c.assign(tps)
        for tp in tps:
            if tp not in have:
                key, sname = self._standby_feeds[tp]
                c.seek(tp, self.standbys[key].positions[sname])

    def update_standbys(self) -> None:
        """Apply what the standby consumer fetched (no waiting), under the query lock."""
        c = self._standby_consumer
        if c is None or not self._standby_feeds:
            return
        batches = c.poll_batches(timeout_ms=0)
        if not batches:
            return
        with self.app.iq_lock:
            for b in batches:
                feed = self._standby_feeds.get((b.topic, b.partition))
                if feed is None:
                    continue
                standby = self.standbys[feed[0]]
                records, _last = changelog_records(b, _NO_END, standby.timestamped[feed[1]])
                standby.restore_batch(feed[1], records, b.next_offset)

    # -- commit and close
    def flush(self) -> None:
        """Before a commit: every task's stores flushed; a standby whose stores moved
        :data:`_CHECKPOINT_DELTA` records since its last checkpoint flushed and
        checkpointed.  Under the query lock."""
        with self.app.iq_lock:
            for task in self.tasks.values():
                task.flush()
            for key, standby in self.standbys.items():
                if sum(standby.positions.values()) - self._standby_checkpointed.get(key, 0) >= _CHECKPOINT_DELTA:
                    standby.flush()
                    self._checkpoint_standby(key, standby)

    def check_deliveries(self) -> None:
        """After the producer is flushed: each task's failed sends go to the production
        handler (Kafka's prepareCommit)."""
        for task in list(self.tasks.values()):
            task.collector.check()

    def maybe_purge_committed_records(self, committed: Dict[Tuple[str, int], int]) -> None:
        """After a commit of ``committed`` (``(topic, partition)`` -> the next offset
        to consume): once ``repartition.purge.interval.ms`` passed since the last
        purge, delete the repartition topics' records before those offsets."""
        now = now_ms()
        if not self._repartition_topics or now - self._last_purge_ms < self._purge_interval_ms:
            return
        self._last_purge_ms = now
        client = self.app.client
        for tp, offset in sorted(committed.items()):
            if tp[0] not in self._repartition_topics or self._purged.get(tp, 0) >= offset:
                continue
            try:
                client.delete_records(tp[0], tp[1], offset)
            except PylogError as exc:    # retried at the next purge
                log.warning("%s: records of %s-%d before offset %d not deleted: %s", self.app.application_id,
                            tp[0], tp[1], offset, exc)
                continue
            self._purged[tp] = offset

    def close(self, clean: bool) -> None:
        """Close every task (``clean``: checkpoints written under exactly-once) and
        standby (checkpointed), and the standby consumer."""
        for (gid, _), task in self.tasks.items():
            self.close_task(gid, task, clean=clean)
        self.tasks.clear()
        for key in list(self.standbys):
            self._close_standby(key)
        if self._standby_consumer is not None:
            self._standby_consumer.close(autocommit=False)
            self._standby_consumer = None

    # -- what the assignor asks
    def end_offsets(self, tps: List[Tuple[str, int]]) -> Dict[Tuple[str, int], int]:
        """Changelog end offsets (the last stable offset under exactly-once)."""
        level = 1 if self.app.exactly_once else 0
        out = {}
        for topic, partition in tps:
            res = self.app.client.list_offsets(topic, partition, -1, isolation_level=level)
            res.raise_for_error()
            out[(topic, partition)] = res.offset
        return out

    def task_state(self) -> Tuple[Set[TaskId], Set[TaskId], Dict[TaskId, int]]:
        """What this member reports when it joins (Kafka's SubscriptionInfo): its
        active tasks (suspended ones included), its standbys, and per task the sum of
        the changelog offsets its state holds: -2 (latest) for active tasks, the
        standbys' positions, and the ``.checkpoint`` of task directories on disk."""
        with self.app.iq_lock:
            active = set(self.tasks)
            standby = set(self.standbys)
            sums: Dict[TaskId, int] = {k: LATEST_OFFSET for k in active}
            for k, sb in self.standbys.items():
                sums[k] = sum(sb.positions.values())
        sums.update(self.state_directory.checkpointed_offset_sums(skip=sums))
        return active, standby, sums

    def end_offset_sums(self, tasks: Set[TaskId]) -> Dict[TaskId, int]:
        """The leader's side of the lags: per task, the sum of its changelogs' end offsets."""
        out = {}
        for gid, partition in tasks:
            if gid not in self.metadata.nodes_of:
                continue
            tps = [(topic, partition) for _s, topic, _m in self.metadata.changelogs(gid)]
            try:
                out[(gid, partition)] = sum(self.end_offsets(tps).values())
            except PylogError as exc:   # a lag unknown only weakens stickiness
                log.warning("%s: end offsets of task %d_%d unknown: %s", self.app.application_id, gid, partition,
                            exc)
        return out
