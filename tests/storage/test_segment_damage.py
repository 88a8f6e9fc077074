"""Outside damage to a stopped log's segment files (issue 11): every file kind of a
sealed and of the active segment (``.log``, ``.index``, ``.timeindex``) flipped, truncated,
grown with garbage or zeros, or deleted, with the clean-shutdown marker present or not.

For each case the reopened log must: keep every acknowledged (flushed) record that
precedes the damage (and, for a sealed segment, every record of the later segments);
never serve a batch as valid that is not (a batch served either passes its CRC or is the
damaged batch itself, which the client's CRC check then reports, as with Kafka); never
answer a read past the damage with an endless empty result (a read returns data, or
raises CorruptRecordError naming the next readable offset); take an append that reads
back and survives a clean restart; and say in the log what it found.  The open succeeds
or raises KafkaStorageError, never another exception.
"""

from __future__ import annotations

import logging
import os
import random

import pytest

from pylog import _core
from pylog.errors import CorruptRecordError, KafkaStorageError
from pylog.storage import Log
from pylog.storage.log import CLEAN_SHUTDOWN_FILE
from tests.storage.batches import batch_headers, decode, make_batch

CFG = dict(segment_bytes=4000, index_interval_bytes=400)
N_BATCHES = 96          # three records each: offsets 0..287, in five segments (the active one with index entries)

# Where a flip lands in a batch (byte offset from the batch's start).
_LENGTH_BYTE = 10        # batchLength, third byte: the length runs past the file
_DELTA_BYTE = 26         # lastOffsetDelta, low byte
_BASE_BYTE = 7           # baseOffset, low byte (not covered by the CRC)
_BODY_BYTE = 70          # inside the first record (covered by the CRC)


def _value(offset: int) -> bytes:
    return b"record-%05d-" % offset + bytes([offset % 251]) * 20


def _build(log_dir: str) -> dict[int, bytes]:
    log = Log.open(log_dir, **CFG)
    expected: dict[int, bytes] = {}
    for i in range(N_BATCHES):
        base = i * 3
        log.append(make_batch([_value(base + j) for j in range(3)], base_timestamp=1_700_000_000_000 + base))
        for j in range(3):
            expected[base + j] = _value(base + j)
    assert len(log.segments) >= 4
    log.close()
    return expected


def _segment_files(log_dir: str) -> list[int]:
    return sorted(int(n[:20]) for n in os.listdir(log_dir) if n.endswith(".log"))


def _path(log_dir: str, base: int, kind: str) -> str:
    return os.path.join(log_dir, f"{base:020d}{kind}")


class Damage:
    """What was done, and which offsets it may cost."""

    def __init__(self, first_lost: int | None, lost_until: int | None, batch_position: int | None = None,
                 segment: int | None = None) -> None:
        self.first_lost = first_lost          # None: no record may be lost
        self.lost_until = lost_until          # records from here on must survive again (None: end)
        self.batch_position = batch_position  # the flipped batch (a flip in .log)
        self.segment = segment


def _damage(log_dir: str, target: str, how: str, rng: random.Random) -> Damage:
    bases = _segment_files(log_dir)
    which, kind = target.split("_", 1)
    kind = "." + kind
    base = bases[1] if which == "sealed" else bases[-1]
    following = bases[2] if which == "sealed" else None
    path = _path(log_dir, base, kind)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    with open(_path(log_dir, base, ".log"), "rb") as f:
        log_data = f.read()
    heads = batch_headers(log_data)
    mid = heads[len(heads) // 2]
    if kind != ".log":
        # Indexes are derived data: nothing may be lost, whatever happens to them.
        first_lost = None
        if how == "flip":
            if not data:
                pytest.skip("no index entries to flip")
            entry = 8 if kind == ".index" else 12
            k = (len(data) // entry) // 2
            at = k * entry + (6 if kind == ".index" else 5)  # a position byte / a timestamp byte
            data[at] ^= 0x10
        elif how == "truncate":
            data = data[: max(len(data) // 2 - 3, 0)]
        elif how == "garbage":
            data += rng.randbytes(37)
        elif how == "zeros":
            data += bytes(48)
        elif how == "delete":
            os.unlink(path)
            return Damage(None, None)
        with open(path, "wb") as f:
            f.write(data)
        return Damage(first_lost, None)
    first_lost = mid["base_offset"]
    lost_until = following
    if how == "flip_length":
        data[mid["position"] + _LENGTH_BYTE] ^= 0x40
    elif how == "flip_delta":
        data[mid["position"] + _DELTA_BYTE] ^= 0x04
    elif how == "flip_base":
        data[mid["position"] + _BASE_BYTE] ^= 0x01
    elif how == "flip_body":
        data[mid["position"] + _BODY_BYTE] ^= 0x01
    elif how == "truncate":
        data = data[: mid["position"] + mid["size"] // 2]
    elif how == "garbage":
        data += rng.randbytes(100)
        first_lost = heads[-1]["base_offset"] + heads[-1]["last_offset_delta"] + 1
    elif how == "zeros":
        data += bytes(200)
        first_lost = heads[-1]["base_offset"] + heads[-1]["last_offset_delta"] + 1
    elif how == "delete":
        os.unlink(path)
        return Damage(base, lost_until, segment=base)
    with open(path, "wb") as f:
        f.write(data)
    return Damage(first_lost, lost_until, mid["position"], base)


def _read_everything(log: Log, damage: Damage, expected: dict[int, bytes]):
    """Read from the log start to the end; returns ``(records, corrupt_errors)``.  Every
    read advances (data, or a CorruptRecordError that names a later offset)."""
    records: dict[int, bytes] = {}
    errors = []
    crc_served: set[int] = set()
    offset = log.log_start_offset
    for _ in range(10_000):
        if offset >= log.log_end_offset:
            break
        try:
            r = log.read(offset, 500)   # a few batches: later reads start at index entries
        except CorruptRecordError as exc:
            errors.append(exc)
            assert exc.resume_offset > offset, exc
            offset = exc.resume_offset
            continue
        assert r.size > 0, f"an empty answer at offset {offset} below the log end {log.log_end_offset}"
        data = bytes(r.records)
        pos = 0
        for h in batch_headers_unchecked(data):
            batch = data[pos:pos + h["size"]]
            try:
                _core.read_batch_header(batch)
            except CorruptRecordError:
                # Served as Kafka serves it: only the damaged batch itself, which the
                # client's CRC check reports; never decoded here as valid.
                assert damage.batch_position is not None and r.segment_base_offset == damage.segment \
                    and r.position + pos == damage.batch_position, (h, r)
                crc_served.update(range(h["base_offset"], h["base_offset"] + h["last_offset_delta"] + 1))
            else:
                for off, _ts, _key, value in decode(batch):
                    if off >= offset:
                        records[off] = value
            pos += h["size"]
        offset = r.next_offset
        r.release()
    else:
        raise AssertionError("reads did not reach the log end")
    for off, value in records.items():
        assert expected.get(off) == value, off
    return records, errors, crc_served


def batch_headers_unchecked(data: bytes) -> list[dict]:
    out, pos = [], 0
    while pos < len(data):
        h = _core.read_batch_header(data, pos, check_crc=False)
        out.append(h)
        pos += h["size"]
    return out


LOG_CASES = ["flip_length", "flip_delta", "flip_base", "flip_body", "truncate", "garbage", "zeros", "delete"]
INDEX_CASES = ["flip", "truncate", "garbage", "zeros", "delete"]
MATRIX = ([(t, h) for t in ("sealed_log", "active_log") for h in LOG_CASES]
          + [(t, h) for t in ("sealed_index", "active_index", "sealed_timeindex", "active_timeindex")
             for h in INDEX_CASES])


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "unclean"])
@pytest.mark.parametrize("target,how", MATRIX, ids=[f"{t}-{h}" for t, h in MATRIX])
def test_segment_damage(tmp_path, caplog, target, how, clean):
    log_dir = str(tmp_path / "orders-0")
    expected = _build(log_dir)
    rng = random.Random(f"{target}-{how}")
    damage = _damage(log_dir, target, how, rng)
    if not clean:
        os.unlink(os.path.join(log_dir, CLEAN_SHUTDOWN_FILE))
    caplog.set_level(logging.WARNING, logger="pylog")
    try:
        log = Log.open(log_dir, **CFG)
    except KafkaStorageError as exc:           # a clear refusal is allowed; nothing else
        assert str(exc)
        return
    records, errors, crc_served = _read_everything(log, damage, expected)

    # No acknowledged record before the damage is lost, nor any after the damaged segment.
    for off, value in expected.items():
        before = damage.first_lost is None or off < damage.first_lost
        after = damage.first_lost is not None and damage.lost_until is not None and off >= damage.lost_until
        if before or after:
            assert records.get(off) == value, (off, log)
    if damage.first_lost is None:
        assert not errors
        assert log.log_end_offset == len(expected)

    # The log says what happened whenever anything was dropped or refused.  (A batch
    # whose CRC alone is wrong is served, as Kafka serves it: the client's CRC check
    # reports it, the broker cannot know without reading every byte it serves.)
    lost = [off for off in expected if off not in records and off not in crc_served]
    said = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("pylog")]
    tail_damage = how in ("truncate", "garbage", "zeros", "delete") and target.endswith("_log")
    if target == "active_log" and how == "zeros" and not clean:
        tail_damage = False     # zeros past the last batch are what preallocation leaves
    if lost or errors or tail_damage:
        assert said, (lost[:5], errors)
        assert any("orders-0" in r.getMessage() for r in said)

    # An append after the reopen reads back and survives a clean restart.
    info = log.append(make_batch([b"after-damage-1", b"after-damage-2"]))
    assert info.base_offset == log.log_end_offset - 2
    got = decode(log.read(info.base_offset).records)
    assert [v for o, _, _, v in got if o >= info.base_offset] == [b"after-damage-1", b"after-damage-2"]
    end = log.log_end_offset
    log.close()
    log = Log.open(log_dir, **CFG)
    assert log.log_end_offset == end
    got = decode(log.read(info.base_offset).records)
    assert [v for o, _, _, v in got if o >= info.base_offset] == [b"after-damage-1", b"after-damage-2"]
    again, _, _ = _read_everything(log, damage, expected | {info.base_offset: b"after-damage-1",
                                                       info.base_offset + 1: b"after-damage-2"})
    assert all(again.get(off) == v for off, v in records.items())
    log.close()
