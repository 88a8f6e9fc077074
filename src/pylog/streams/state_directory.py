"""The local state of one application instance on disk (Kafka Streams'
``StateDirectory``): the instance's process id file, the task directories and their
``.checkpoint`` files, and the clean-up of it all.

On-disk layout, Kafka Streams'::

    <state.dir>/<application.id>/kafka-streams-process-metadata   {"processId": "<uuid>"}
    <state.dir>/<application.id>/<subtopology>_<partition>/.checkpoint
    <state.dir>/<application.id>/<subtopology>_<partition>/rocksdb/<store>/...
    <state.dir>/<application.id>/global/...

An empty ``state.dir`` is Kafka's default, ``<temp dir>/kafka-streams``.

Crash behaviour: the process id file is written to a temporary file, fsynced and
renamed into place, so a crash leaves the old id or the new one; a file that does not
parse is logged and replaced by a new id (the instance then fences nothing of its
predecessor's).  A ``.checkpoint`` is written the same way (:mod:`.state.checkpoint`).

Thread safety: :meth:`StateDirectory.process_id` may be called from any thread; the
other methods touch one task's files and are called by the stream thread that owns the
task (the app makes a task's new owner wait until its old one has let it go).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from typing import Dict, Iterable, List, Optional

from .assignor import TaskId, parse_task_id
from .state.checkpoint import CHECKPOINT_FILE_NAME, read_checkpoint
from .state.persistent import store_directory

__all__ = ["StateDirectory", "PROCESS_FILE_NAME"]

log = logging.getLogger("pylog.streams")

#: Kafka Streams' file of the instance's process id, in ``<state.dir>/<application.id>``.
PROCESS_FILE_NAME = "kafka-streams-process-metadata"


class StateDirectory:
    """``<state.dir>/<application.id>`` and what is in it (module docstring)."""

    def __init__(self, state_dir: str, application_id: str) -> None:
        self.state_dir = state_dir
        self.application_id = application_id
        self._process_id: Optional[str] = None
        self._lock = threading.Lock()

    @property
    def app_dir(self) -> str:
        return os.path.dirname(self.task_dir("-"))

    def task_dir(self, task_id: str) -> str:
        return os.path.dirname(os.path.dirname(store_directory(self.state_dir, self.application_id, task_id, "-")))

    def store_dir(self, task_id: str, store_name: str) -> str:
        return store_directory(self.state_dir, self.application_id, task_id, store_name)

    def checkpoint_path(self, task_id: str) -> str:
        return os.path.join(self.task_dir(task_id), CHECKPOINT_FILE_NAME)

    def delete_checkpoint(self, task_id: str) -> None:
        path = self.checkpoint_path(task_id)
        if os.path.exists(path):
            os.remove(path)

    def process_id(self) -> str:
        """This instance's process id: the UUID in :data:`PROCESS_FILE_NAME` (JSON
        ``{"processId": ...}``), made on first use."""
        with self._lock:
            if self._process_id is None:
                self._process_id = self._read_or_make_process_id()
            return self._process_id

    def _read_or_make_process_id(self) -> str:
        path = os.path.join(self.app_dir, PROCESS_FILE_NAME)
        try:
            with open(path, encoding="utf-8") as f:
                return str(uuid.UUID(json.load(f)["processId"]))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("%s is damaged (%s): the instance takes a new process id", path, exc)
        pid = str(uuid.uuid4())
        os.makedirs(self.app_dir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"processId": pid}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return pid

    def checkpointed_offset_sums(self, skip: Iterable[TaskId] = ()) -> Dict[TaskId, int]:
        """Per task directory on disk with a ``.checkpoint`` (but those in ``skip``):
        the sum of the next changelog offsets its stores need (what the assignor calls
        the task's offset sum)."""
        skipped = set(skip)
        try:
            entries = os.listdir(self.app_dir)
        except OSError:
            entries = []
        sums: Dict[TaskId, int] = {}
        for entry in entries:
            try:
                key = parse_task_id(entry)
            except ValueError:
                continue
            if key in skipped:
                continue
            offsets = read_checkpoint(os.path.join(self.app_dir, entry, CHECKPOINT_FILE_NAME))
            if offsets:
                sums[key] = sum(o + 1 for o in offsets.values())
        return sums

    def clean_up(self) -> List[str]:
        """Delete every task directory and the global stores' (``KafkaStreams#cleanUp``);
        the process id file stays.  Returns the directories deleted."""
        from .reset import clean_up_state

        return clean_up_state(self.state_dir, self.application_id)

