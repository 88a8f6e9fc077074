"""A stream thread's life outside the happy path: dropped from its group by the
coordinator."""

from __future__ import annotations

import pylog
from pylog.client.transport import MemberIdentity
from pylog.streams.errors import State
from server.conftest import wait_until

from .test_runtime import final_counts, produce, word_count
from .test_threads_per_instance import Running


def test_a_member_the_group_dropped_rejoins_and_goes_on(tmp_path):
    # The coordinator removes the member (as an admin's LeaveGroup, or a session that
    # expired while a record was processed, does): its next commit or heartbeat is told
    # UNKNOWN_MEMBER_ID.  Kafka's StreamThread treats that as TaskMigratedException
    # under every processing guarantee: the tasks are closed dirty, the member joins
    # again and processing goes on from the committed offsets.
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("lines", 2)
        client.create_topic("counts", 2)
        produce(client, "lines", [("a", "x y x")])
        app = word_count(tmp_path / "state", "dropped")
        run = Running(app, client)
        with run:
            wait_until(lambda: run.error or (app.state is State.RUNNING and final_counts(client).get("x") == 2),
                       what="the first counts")
            member = app.consumer.member_id()
            res = client.transport.leave_group("dropped", [MemberIdentity(member, None, "dropped by the test")])
            assert res.error_code == 0
            produce(client, "lines", [("b", "x z")])
            wait_until(lambda: run.error or (final_counts(client).get("z") and app.consumer.member_id() != member
                                              and app.state is State.RUNNING),
                       what="the member back in the group and the new line counted")
            assert not run.error
        assert app.state is State.NOT_RUNNING
        counts = final_counts(client)
        # at-least-once: what was processed after the last commit may be counted again
        assert counts["x"] >= 3 and counts["z"] >= 1

