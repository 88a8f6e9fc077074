"""Kafka's ``OffsetCheckpoint`` file: which changelog offset each store of a task
has applied, so a restore starts after it instead of at the changelog's beginning.

On-disk format (text, UTF-8, as Kafka writes ``<state.dir>/<app>/<task>/.checkpoint``)::

    0                       <- version
    2                       <- number of entries
    app-counts-changelog 3 1041      <- topic, partition, offset
    app-totals-changelog 3 77

The offset is the last changelog offset the store holds (a restore resumes at
offset + 1).  The file is replaced atomically: written to ``.checkpoint.tmp``,
fsynced, renamed over the old one, and the directory fsynced, so a crash leaves
the old file or the new one, never a torn one.

A damaged file (unknown version, a count that does not match the lines, a
malformed line, a negative offset, bytes that are not text) is never trusted:
:func:`read_checkpoint` logs what was wrong and returns ``None``, and the caller
restores those stores from the beginning of their changelogs.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

__all__ = ["CHECKPOINT_FILE_NAME", "read_checkpoint", "write_checkpoint", "CheckpointError"]

log = logging.getLogger(__name__)

CHECKPOINT_FILE_NAME = ".checkpoint"
_VERSION = 0

TopicPartition = Tuple[str, int]


class CheckpointError(ValueError):
    """What is wrong with a checkpoint file (raised inside this module, logged by it)."""


def _parse(text: str) -> Dict[TopicPartition, int]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        raise CheckpointError(f"{len(lines)} line(s): a checkpoint has at least the version and the count")
    try:
        version = int(lines[0])
    except ValueError:
        raise CheckpointError(f"version line {lines[0]!r} is not a number") from None
    if version != _VERSION:
        raise CheckpointError(f"unknown checkpoint version {version} (this reader knows {_VERSION})")
    try:
        count = int(lines[1])
    except ValueError:
        raise CheckpointError(f"count line {lines[1]!r} is not a number") from None
    entries = lines[2:]
    if count != len(entries):
        raise CheckpointError(f"says {count} entries but holds {len(entries)} line(s)")
    out: Dict[TopicPartition, int] = {}
    for n, line in enumerate(entries, start=3):
        parts = line.split(" ")
        if len(parts) != 3:
            raise CheckpointError(f"line {n} {line!r} is not 'topic partition offset'")
        topic, partition, offset = parts
        try:
            p, o = int(partition), int(offset)
        except ValueError:
            raise CheckpointError(f"line {n} {line!r}: partition and offset must be numbers") from None
        if not topic or p < 0 or o < 0:
            raise CheckpointError(f"line {n} {line!r}: empty topic or negative partition/offset")
        if (topic, p) in out:
            raise CheckpointError(f"line {n}: {topic}-{p} appears twice")
        out[(topic, p)] = o
    return out


def read_checkpoint(path: str) -> Optional[Dict[TopicPartition, int]]:
    """The offsets in the checkpoint file at ``path``: ``{}`` when there is none,
    ``None`` when it is damaged (logged at WARNING with the reason)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    try:
        return _parse(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        reason = f"not UTF-8 text ({e.reason} at byte {e.start})"
    except CheckpointError as e:
        reason = str(e)
    log.warning("ignoring damaged state checkpoint %s: %s; the stores it covers will be restored "
                "from the beginning of their changelogs", path, reason)
    return None


def write_checkpoint(path: str, offsets: Dict[TopicPartition, int]) -> None:
    """Atomically replace the checkpoint at ``path`` with ``offsets``."""
    for (topic, partition), offset in offsets.items():
        if not topic or " " in topic or "\n" in topic or partition < 0 or offset < 0:
            raise ValueError(f"cannot checkpoint {topic!r} {partition} {offset}")
    body = "".join(f"{t} {p} {o}\n" for (t, p), o in sorted(offsets.items()))
    text = f"{_VERSION}\n{len(offsets)}\n{body}"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
