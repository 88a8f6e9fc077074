"""pylog._uuid makes the random ids uuid.uuid4() made, without importing uuid: checked
against the uuid module itself (an independent implementation)."""

from __future__ import annotations

import base64
import uuid

import pytest

from pylog import _uuid


def test_random_uuid_bytes_are_a_version_4_rfc_4122_uuid():
    seen = set()
    for _ in range(500):
        raw = _uuid.random_uuid_bytes()
        u = uuid.UUID(bytes=raw)
        assert len(raw) == 16
        assert u.version == 4 and u.variant == uuid.RFC_4122
        seen.add(raw)
    assert len(seen) == 500


def test_the_canonical_form_is_what_uuid_prints():
    for _ in range(200):
        text = _uuid.random_uuid_str()
        u = uuid.UUID(text)
        assert str(u) == text
        assert u.version == 4 and u.variant == uuid.RFC_4122


def test_the_kafka_form_is_22_url_safe_base64_characters_of_a_version_4_uuid():
    for _ in range(500):
        text = _uuid.random_kafka_uuid()
        assert len(text) == 22 and not text.startswith("-")
        u = uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=="))
        assert u.version == 4 and u.variant == uuid.RFC_4122


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch):
    # 0xF8 as the first byte encodes as '-' in URL-safe base64: Kafka draws again.
    draws = iter([b"\xf8" + bytes(15), b"\x01" + bytes(15)])
    monkeypatch.setattr(_uuid.os, "urandom", lambda n: next(draws))
    text = _uuid.random_kafka_uuid()
    assert text[0] == "A"
    assert base64.urlsafe_b64decode(text + "==")[0] == 0x01


@pytest.mark.parametrize("bad", [bytes(16), b"\x00" * 15 + b"\x01"])
def test_reserved_ids_cannot_be_made(monkeypatch, bad):
    # The zero UUID and the metadata topic's id (1) get version bits: never returned.
    monkeypatch.setattr(_uuid.os, "urandom", lambda n: bad)
    raw = base64.urlsafe_b64decode(_uuid.random_kafka_uuid() + "==")
    assert uuid.UUID(bytes=raw).int not in (0, 1)
