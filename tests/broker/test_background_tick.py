"""The broker's background thread sleeps until its next work is due: a log cleaner
running in its own thread adds no deadline of its own to the broker's tick."""

from __future__ import annotations

from pylog.broker.core import Broker


def test_a_tick_past_the_cleaner_backoff_is_next_due_in_the_future(tmp_path):
    with Broker(tmp_path / "data", offsets_topic_num_partitions=1) as b:
        assert b.cleaner is not None and b.cleaner.running
        now = b.clock() + b.config.log_cleaner_backoff_ms + 1
        # Before: the cleaner's backoff, never advanced while its thread ran, was the
        # next deadline for good, and the background thread ticked every millisecond.
        assert b.tick(now) > now
        assert b.tick(now + 1) > now + 1
