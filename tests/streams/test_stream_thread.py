"""A stream thread's life outside the happy path: dropped from its group by the
coordinator, and a run that fails before it processes anything."""

from __future__ import annotations

import threading

import pytest

import pylog
from pylog.client.transport import MemberIdentity
from pylog.streams import StreamsBuilder, TopologyError
from pylog.streams.errors import State
from server.conftest import wait_until

from .test_runtime import S, final_counts, produce, word_count


class Running:
    """``app.run(client)`` on a thread, stopped on exit; what run raised is kept."""

    def __init__(self, app, client):
        self.app = app
        self.errors = []
        self.thread = threading.Thread(target=self._run, args=(client,))

    def _run(self, client):
        try:
            self.app.run(client, poll_timeout_ms=20)
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.app.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()


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
        with Running(app, client) as run:
            wait_until(lambda: run.errors or (app.state is State.RUNNING and final_counts(client).get("x") == 2),
                       what="the first counts")
            member = app.consumer.member_id()
            res = client.transport.leave_group("dropped", [MemberIdentity(member, None, "dropped by the test")])
            assert res.error_code == 0
            produce(client, "lines", [("b", "x z")])
            wait_until(lambda: run.errors or (final_counts(client).get("z") and app.consumer.member_id() != member
                                              and app.state is State.RUNNING),
                       what="the member back in the group and the new line counted")
            assert not run.errors
        assert not run.errors and app.state is State.NOT_RUNNING
        counts = final_counts(client)
        # at-least-once: what was processed after the last commit may be counted again
        assert counts["x"] >= 3 and counts["z"] >= 1


def test_a_run_that_fails_before_processing_closes_what_it_opened(tmp_path):
    b = StreamsBuilder({"default.key.serde": S, "default.value.serde": S})
    b.stream("clicks").join(b.table("users"), lambda c, u: c).to("out")
    with pylog.open(tmp_path / "data") as client:
        client.create_topic("clicks", 2)
        client.create_topic("users", 3)
        app = b.build("cp", {"state.dir": str(tmp_path / "state")})
        states = []
        app.set_state_listener(lambda new, old: states.append(new))
        with pytest.raises(TopologyError, match="co-partition"):
            app.run(client, until_idle=True)
        assert app.producer is not None and app.producer.closed
        assert states == [State.PENDING_ERROR, State.ERROR] and app.state is State.ERROR
