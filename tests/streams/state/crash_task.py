"""A stream task's state, killed mid-run: run as a subprocess by test_manager.py.

    python crash_task.py <state_dir> <changelog_file> <at_least_once|exactly_once> <n_before> <n_after>

Writes ``n_before`` updates to a persistent key-value and window store, commits
(checkpoint), writes ``n_after`` more, then SIGKILLs itself: no close, no flush.
Every changelog record is appended to ``changelog_file`` (one JSON line: topic,
offset, key hex, value hex or null) before the store write returns, as an
acknowledged produce would be.
"""

from __future__ import annotations

import json
import os
import signal
import sys


class FileChangelogContext:
    def __init__(self, state_dir, path):
        self.state_dir = state_dir
        self.application_id = "app"
        self.task_id = "1_0"
        self.partition = 0
        self.changelog_topic = None
        self.timestamp = None
        self._f = open(path, "a", buffering=1)
        self.offsets = {}
        self.current_topic = None

    def log_change(self, key, value, timestamp):
        topic = self.current_topic
        offset = self.offsets.get(topic, -1) + 1
        self.offsets[topic] = offset
        self._f.write(json.dumps([topic, offset, key.hex(), None if value is None else value.hex()]) + "\n")


def main(argv):
    from pylog.streams.state import ProcessorStateManager, Stores

    state_dir, changelog, mode, n_before, n_after = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    ctx = FileChangelogContext(state_dir, changelog)
    m = ProcessorStateManager(state_dir, "app", "1_0", exactly_once=(mode == "exactly_once"))
    kv = Stores.persistent_key_value_store("kv").build()
    win = Stores.persistent_window_store("win", 600_000, 1000).build()
    m.register(kv, ("app-kv-changelog", 0))
    m.register(win, ("app-win-changelog", 0))
    m.initialize(ctx)

    def write(i):
        ctx.current_topic = "app-kv-changelog"
        kv.put(b"k%d" % (i % 37), b"v%d" % i)
        ctx.current_topic = "app-win-changelog"
        win.put(b"w%d" % (i % 11), b"%d" % i, (i // 50) * 1000)

    for i in range(n_before):
        write(i)
    m.update_changelog_offsets({("app-kv-changelog", 0): ctx.offsets["app-kv-changelog"],
                                ("app-win-changelog", 0): ctx.offsets["app-win-changelog"]})
    m.commit(enforce_checkpoint=True)
    for i in range(n_before, n_before + n_after):
        write(i)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
