"""Random UUIDs as Kafka makes them, without the :mod:`uuid` module.

Importing :mod:`uuid` imports :mod:`platform` too: ~2 ms of ``pylog serve``'s start-up
(#17), for ids that never need a :class:`uuid.UUID` object (topic, cluster and directory
ids, member ids, the names of deleted logs).  A random version-4 UUID is 16 bytes of
:func:`os.urandom` with the version and RFC 4122 variant bits set, which is what
:func:`uuid.uuid4` does; the forms below are the ones its object would print.  The wire's
uuid fields are still :class:`uuid.UUID` objects: the codec imports :mod:`uuid` when it
makes or checks the first one.

Thread safety: nothing here keeps state.
"""

from __future__ import annotations

import base64
import os

__all__ = ["random_uuid_bytes", "random_kafka_uuid", "random_uuid_str"]


def random_uuid_bytes() -> bytes:
    """The 16 bytes of a random version-4 UUID (``uuid.uuid4().bytes``)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40          # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80          # RFC 4122 variant
    return bytes(raw)


def random_kafka_uuid() -> str:
    """A random id in Kafka's ``Uuid`` string form: URL-safe base64 of the 16 bytes,
    without padding (22 characters).  As Kafka's ``Uuid.randomUuid()``, never one that
    starts with ``-`` (a command line would take it for an option); the zero UUID and
    the metadata topic's id (1), which Kafka reserves too, cannot have version 4."""
    while True:
        text = base64.urlsafe_b64encode(random_uuid_bytes()).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def random_uuid_str() -> str:
    """A random version-4 UUID in the canonical 8-4-4-4-12 hex form (``str(uuid.uuid4())``)."""
    h = random_uuid_bytes().hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
