"""``Broker.wait_for_data`` and the locks of its ``stop`` callback.

A consumer's ``stop`` asks its group coordinator whether the group is rebalancing,
under the coordinator's lock; the coordinator holds that lock while it appends an
offset commit to __consumer_offsets, and an append wakes the data waiters.  When
``stop`` ran under the broker's data lock, a waiting poll and a commit in another
thread took the two locks in opposite orders and deadlocked (two streams instances of
one application in one process: every thread stuck, the members' sessions expired, and
the commit failed UNKNOWN_MEMBER_ID once the stall ended).
"""

from __future__ import annotations

import threading

from pylog import _core
from pylog.broker.core import Broker, NewTopic


def one_batch(value: bytes) -> bytes:
    b = _core.RecordBatchBuilder(producer_id=-1, producer_epoch=-1, base_sequence=-1, compression="none")
    b.append(None, None, value)
    return b.build()


def test_an_append_under_the_lock_that_stop_takes_does_not_deadlock(tmp_path):
    broker = Broker(tmp_path / "data", background=False, offsets_topic_num_partitions=1)
    try:
        broker.create_topics([NewTopic("t", 1)])
        coordinator_lock = threading.Lock()     # stands for the group coordinator's
        in_stop = threading.Event()

        def stop() -> bool:                     # a consumer's "is my group rebalancing?"
            in_stop.set()
            with coordinator_lock:
                return False

        woke: list[bool] = []
        waiter = threading.Thread(target=lambda: woke.append(broker.wait_for_data({("t", 0): 0}, 60, stop=stop)))
        with coordinator_lock:
            waiter.start()
            assert in_stop.wait(30)             # the waiter is in stop(), blocked on the lock
            # the commit's append, made holding the coordinator's lock, wakes the waiters
            appended = threading.Thread(target=broker.append, args=("t", 0, one_batch(b"x")))
            appended.start()
            appended.join(10)
            assert not appended.is_alive(), "the append waits for the data lock, held by a waiter in stop()"
        waiter.join(30)
        assert woke == [True]
    finally:
        broker.close()
