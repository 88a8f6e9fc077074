"""Fixtures for the state-store tests: a recording task context and one factory per
store type that builds the in-memory or the persistent implementation, so every
contract test runs against both."""

from __future__ import annotations

import itertools

import pytest

from pylog.streams.state import Stores


class RecordingContext:
    """A task context that keeps the changelog records the logging wrappers send, with
    the offsets a changelog topic would give them."""

    def __init__(self, state_dir, application_id="app", task_id="0_0", partition=0):
        self.state_dir = str(state_dir)
        self.application_id = application_id
        self.task_id = task_id
        self.partition = partition
        self.changelog_topic = f"{application_id}-store-changelog"
        self.timestamp = None
        self.changelog = []  # (offset, key, value, timestamp)
        self._offsets = itertools.count()

    def log_change(self, key, value, timestamp):
        assert isinstance(key, bytes) and (value is None or isinstance(value, bytes))
        self.changelog.append((next(self._offsets), key, value, timestamp))

    def records(self):
        """The changelog as (offset, key, value), as a restore reads it."""
        return [(o, k, v) for o, k, v, _ in self.changelog]


IMPLS = ["memory", "rocksdb"]


def build_kv(impl, name="kv", logging=True, caching=False):
    b = (Stores.in_memory_key_value_store(name) if impl == "memory"
         else Stores.persistent_key_value_store(name))
    if not logging:
        b = b.with_logging_disabled()
    if caching:
        b = b.with_caching_enabled()
    return b.build()


def build_window(impl, name="win", retention=120_000, size=1000, dups=False, logging=True, caching=False):
    b = (Stores.in_memory_window_store(name, retention, size, dups) if impl == "memory"
         else Stores.persistent_window_store(name, retention, size, dups))
    if not logging:
        b = b.with_logging_disabled()
    if caching:
        b = b.with_caching_enabled()
    return b.build()


def build_session(impl, name="ses", retention=120_000, logging=True, caching=False):
    b = (Stores.in_memory_session_store(name, retention) if impl == "memory"
         else Stores.persistent_session_store(name, retention))
    if not logging:
        b = b.with_logging_disabled()
    if caching:
        b = b.with_caching_enabled()
    return b.build()


@pytest.fixture
def ctx(tmp_path):
    return RecordingContext(tmp_path)


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


@pytest.fixture
def opened():
    """Call opened(store, ctx) to init a store; every store is closed after the test."""
    stores = []

    def _open(store, context):
        store.init(context)
        stores.append(store)
        return store

    yield _open
    for s in stores:
        if s.is_open():
            s.close()
