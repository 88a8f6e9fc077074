"""Kafka's small text files: offset checkpoints and ``meta.properties``.

Checkpoint format (``recovery-point-offset-checkpoint``, ``log-start-offset-checkpoint``,
``cleaner-offset-checkpoint``)::

    0                      version
    2                      number of entries
    orders 0 1234          topic partition offset
    orders 1 1180

Crash behaviour: a write goes to ``<name>.tmp``, is fsynced, renamed over the old file
and the directory is fsynced, so a reader sees the old file or the new one, never a mix.
A file that does not parse raises :class:`CorruptCheckpointError`; callers treat that as
"no checkpoint" (everything is then recovered from the segments themselves).

Thread safety: none of its own; the owner (a Log or LogManager) serializes writes.
"""

from __future__ import annotations

import os
from typing import Mapping

from pylog.errors import KafkaStorageError

__all__ = ["CheckpointFile", "CorruptCheckpointError", "read_properties", "write_properties",
           "atomic_write", "fsync_dir"]

CHECKPOINT_VERSION = 0


class CorruptCheckpointError(KafkaStorageError):
    """A checkpoint or properties file that does not parse."""


def fsync_dir(path: str) -> None:
    """fsync a directory so a create, rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (tmp, fsync, rename, fsync dir)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


class CheckpointFile:
    """A ``topic partition offset`` checkpoint file in Kafka's text format.

    Parameters
    ----------
    path : str
        The file; it need not exist (reading a missing file gives ``{}``).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict[tuple[str, int], int]:
        """Entries as ``{(topic, partition): offset}``; ``{}`` when the file is missing.

        Raises
        ------
        CorruptCheckpointError
            The file exists but is not a valid version-0 checkpoint.
        """
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return {}
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        try:
            if int(lines[0]) != CHECKPOINT_VERSION:
                raise CorruptCheckpointError(f"{self.path}: unknown checkpoint version {lines[0]!r}")
            count = int(lines[1])
            if count != len(lines) - 2:
                raise CorruptCheckpointError(
                    f"{self.path}: header says {count} entries, the file has {len(lines) - 2}")
            out: dict[tuple[str, int], int] = {}
            for line in lines[2:]:
                topic, partition, offset = line.split(" ")
                out[(topic, int(partition))] = int(offset)
            return out
        except (IndexError, ValueError) as exc:
            raise CorruptCheckpointError(f"{self.path}: malformed checkpoint ({exc})") from None

    def write(self, entries: Mapping[tuple[str, int], int]) -> None:
        """Atomically replace the file with ``entries`` (sorted by topic, partition)."""
        lines = [str(CHECKPOINT_VERSION), str(len(entries))]
        for (topic, partition), offset in sorted(entries.items()):
            if " " in topic or "\n" in topic:
                raise ValueError(f"topic name {topic!r} cannot be written to a checkpoint")
            lines.append(f"{topic} {int(partition)} {int(offset)}")
        atomic_write(self.path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_properties(path: str) -> dict[str, str]:
    """A Java ``.properties`` file (``key=value`` lines, ``#`` comments) as a dict."""
    out: dict[str, str] = {}
    with open(path, "r", encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#!":
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise CorruptCheckpointError(f"{path}: line {raw!r} is not key=value")
            out[key.strip()] = value.strip()
    return out


def write_properties(path: str, props: Mapping[str, str], comment: str | None = None) -> None:
    """Atomically write ``props`` as a ``.properties`` file."""
    lines = []
    if comment:
        lines.append(f"#{comment}")
    lines += [f"{k}={v}" for k, v in props.items()]
    atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))
