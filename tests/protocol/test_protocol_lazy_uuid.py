"""The codec imports :mod:`uuid` (and with it :mod:`platform`, ~2 ms of ``pylog serve``'s
start-up, #17) when the first uuid field is decoded, not with the codec; the field is a
real :class:`uuid.UUID` all the same, and encodes back to the same bytes."""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = r"""
import json, sys
from pylog.protocol import decode_request_body, encode_request_body, segments_to_bytes
from pylog.protocol.apis import ApiKey

before = "uuid" in sys.modules
# Metadata v12 (flexible): one topic by id, name null; allow auto-creation; no
# authorized operations; no tagged fields.
topic_id = bytes(range(1, 17))
body = b"\x02" + topic_id + b"\x00" + b"\x00" + b"\x01" + b"\x00" + b"\x00"
req = decode_request_body(ApiKey.METADATA, 12, body)
t = req.topics[0]
import uuid
print(json.dumps({
    "before": before,
    "is_uuid": isinstance(t.topic_id, uuid.UUID),
    "hex": t.topic_id.hex,
    "name": t.name,
    "same_bytes": segments_to_bytes(encode_request_body(ApiKey.METADATA, 12, req)) == body,
}))
"""


def _interpreter_imports_uuid() -> bool:
    out = subprocess.run([sys.executable, "-c", "import sys; print('uuid' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() == "True"


def test_the_first_uuid_field_imports_uuid_and_is_a_uuid():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["before"] is False or _interpreter_imports_uuid()
    assert seen["is_uuid"] is True
    assert seen["hex"] == bytes(range(1, 17)).hex()
    assert seen["name"] is None
    assert seen["same_bytes"] is True
