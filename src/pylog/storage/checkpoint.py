"""Kafka's small text files: offset checkpoints and ``meta.properties``.

Checkpoint format (``recovery-point-offset-checkpoint``, ``log-start-offset-checkpoint``,
``cleaner-offset-checkpoint``)::

    0                      version
    2                      number of entries
    orders 0 1234          topic partition offset
    orders 1 1180

Crash behaviour: a write goes to ``<name>.tmp``, is fsynced, renamed over the old file
and the directory is fsynced, so a reader sees the old file or the new one, never a mix.

Damage from outside (a flipped byte, a truncated file, garbage appended, another file
copied over it) is treated as untrusted input: the readers here are strict and bounded
(at most :data:`MAX_CHECKPOINT_BYTES`; UTF-8 text without NUL bytes, ending in a newline;
exactly the lines the header announces; legal topic names, non-negative partitions and
offsets in Kafka's ranges, written without signs or leading zeros; no entry twice), and
raise :class:`CorruptCheckpointError` naming the file and what was wrong.  The caller
decides the safe fallback (for the recovery point: recover everything from the segments;
for the log start offset: derive it from the segments; for the cleaner: clean from the
log start) and logs it.

Thread safety: none of its own; the owner (a Log or LogManager) serializes writes.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

from pylog.errors import KafkaStorageError

__all__ = ["CheckpointFile", "CorruptCheckpointError", "read_properties", "write_properties",
           "atomic_write", "fsync_dir"]

CHECKPOINT_VERSION = 0
#: Reads are bounded: a real checkpoint holds one short line per partition.
MAX_CHECKPOINT_BYTES = 64 << 20
#: ``meta.properties`` is a handful of short lines.
MAX_PROPERTIES_BYTES = 64 << 10
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_NUMBER = r"(?:0|[1-9][0-9]{0,18})"
_ENTRY = re.compile(rf"([a-zA-Z0-9._-]{{1,249}}) ({_NUMBER}) ({_NUMBER})")
_COUNT = re.compile(_NUMBER)
# Every entry line at once (the fast path of parse_checkpoint: one regex pass over a
# file of thousands of partitions instead of one match per line).
_ENTRY_LINES = re.compile(rf"(?:[a-zA-Z0-9._-]{{1,249}} {_NUMBER} {_NUMBER}\n)*")
_ENTRY_LINE = re.compile(rf"^([a-zA-Z0-9._-]{{1,249}}) ({_NUMBER}) ({_NUMBER})$", re.MULTILINE)
_PROPERTY_KEY = re.compile(r"[a-zA-Z0-9._-]{1,249}")


class CorruptCheckpointError(KafkaStorageError):
    """A checkpoint or properties file that does not parse: its message names the file
    and says what is wrong with it."""

    retriable = False


def _show(line: str, limit: int = 60) -> str:
    """A line of a damaged file as a message can show it: quoted, short."""
    return repr(line if len(line) <= limit else line[:limit] + "...")


def read_text_file(path: str, limit: int) -> str | None:
    """The UTF-8 text of ``path`` (``None`` when it is missing), read strictly and bounded.

    Raises
    ------
    CorruptCheckpointError
        Larger than ``limit`` bytes, not UTF-8, holds NUL bytes, is empty or does not end
        with a newline (every writer here ends the file with one, so a file cut short
        mid-line is told apart from a whole one).
    KafkaStorageError
        The file exists but cannot be read (permissions, a directory, an I/O error).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KafkaStorageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise CorruptCheckpointError(f"{path}: larger than {limit} bytes")
    if not data:
        raise CorruptCheckpointError(f"{path}: empty file")
    nul = data.find(0)
    if nul >= 0:
        raise CorruptCheckpointError(f"{path}: holds a NUL byte at position {nul}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(f"{path}: not UTF-8 text (bad byte at position {exc.start})") from None
    if not text.endswith("\n"):
        raise CorruptCheckpointError(f"{path}: truncated (the last line has no newline)")
    return text


def fsync_dir(path: str) -> None:
    """fsync a directory so a create, rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (tmp, fsync, rename, fsync dir).
    ``durable=False``: the same without the two fsyncs (for a caller that makes the whole
    filesystem durable next, with one ``syncfs``)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
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
            The file exists but is not a valid version-0 checkpoint (see the module
            docstring for what is checked).
        KafkaStorageError
            The file exists but cannot be read.
        """
        text = read_text_file(self.path, MAX_CHECKPOINT_BYTES)
        if text is None:
            return {}
        return parse_checkpoint(text, self.path)

    def write(self, entries: Mapping[tuple[str, int], int]) -> None:
        """Atomically replace the file with ``entries`` (sorted by topic, partition)."""
        lines = [str(CHECKPOINT_VERSION), str(len(entries))]
        for (topic, partition), offset in sorted(entries.items()):
            if " " in topic or "\n" in topic:
                raise ValueError(f"topic name {topic!r} cannot be written to a checkpoint")
            lines.append(f"{topic} {int(partition)} {int(offset)}")
        atomic_write(self.path, ("\n".join(lines) + "\n").encode("utf-8"))


def parse_checkpoint(text: str, path: str) -> dict[tuple[str, int], int]:
    """Parse the text of a version-0 checkpoint (``text`` ends with a newline)."""
    lines = text[:-1].split("\n")
    if lines[0] != str(CHECKPOINT_VERSION):
        raise CorruptCheckpointError(f"{path}: unknown checkpoint version {_show(lines[0])}")
    if len(lines) < 2 or not _COUNT.fullmatch(lines[1]):
        raise CorruptCheckpointError(
            f"{path}: bad entry count {_show(lines[1]) if len(lines) > 1 else '(missing)'}")
    count = int(lines[1])
    if count != len(lines) - 2:
        raise CorruptCheckpointError(f"{path}: header says {count} entries, the file has {len(lines) - 2}")
    body = text[len(lines[0]) + len(lines[1]) + 2:]
    if _ENTRY_LINES.fullmatch(body):
        out = {(topic, int(partition)): int(offset) for topic, partition, offset in _ENTRY_LINE.findall(body)}
        if (len(out) == count and max((p for _, p in out), default=0) <= _INT32_MAX
                and max(out.values(), default=0) <= _INT64_MAX
                and ("." not in body or not any(t in (".", "..") for t, _ in out))):
            return out
    # Damaged (or a case the fast path does not decide): line by line, to say where.
    out = {}
    for lineno, line in enumerate(lines[2:], start=3):
        m = _ENTRY.fullmatch(line)
        if m is None or m.group(1) in (".", ".."):
            raise CorruptCheckpointError(
                f"{path}: line {lineno} is not 'topic partition offset' with a legal topic name: {_show(line)}")
        topic, partition, offset = m.group(1), int(m.group(2)), int(m.group(3))
        if partition > _INT32_MAX or offset > _INT64_MAX:
            raise CorruptCheckpointError(f"{path}: line {lineno} is out of range: {_show(line)}")
        if (topic, partition) in out:
            raise CorruptCheckpointError(f"{path}: line {lineno} lists {topic}-{partition} a second time")
        out[(topic, partition)] = offset
    return out


def read_properties(path: str) -> dict[str, str]:
    """A ``.properties`` file as pylog and Kafka write it (``key=value`` lines, ``#`` or
    ``!`` comments) as a dict; read strictly and bounded, like the checkpoints.

    Raises
    ------
    FileNotFoundError
        The file is missing.
    CorruptCheckpointError
        Not a whole properties file: too large, not UTF-8, NUL bytes, no final newline,
        a line that is not ``key=value``, a key given twice.
    KafkaStorageError
        The file cannot be read.
    """
    text = read_text_file(path, MAX_PROPERTIES_BYTES)
    if text is None:
        raise FileNotFoundError(path)
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text[:-1].split("\n"), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _PROPERTY_KEY.fullmatch(key):
            raise CorruptCheckpointError(f"{path}: line {lineno} is not key=value: {_show(raw)}")
        if not value.isprintable():
            raise CorruptCheckpointError(f"{path}: line {lineno} holds control characters: {_show(raw)}")
        if key in out:
            raise CorruptCheckpointError(f"{path}: line {lineno} sets {key} a second time")
        out[key] = value
    return out


def write_properties(path: str, props: Mapping[str, str], comment: str | None = None) -> None:
    """Atomically write ``props`` as a ``.properties`` file."""
    lines = []
    if comment:
        lines.append(f"#{comment}")
    lines += [f"{k}={v}" for k, v in props.items()]
    atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))
