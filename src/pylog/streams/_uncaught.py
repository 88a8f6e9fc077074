"""The app's state (Kafka's ``KafkaStreams.State``) with its listener, and the uncaught
exception handler (``StreamsUncaughtExceptionHandler``), as a part of
:class:`~pylog.streams.StreamsApp`.

States: CREATED -> REBALANCING (``run`` joined the group) -> RUNNING (the first poll
after the member received its assignment, and every stream thread has its own) ->
PENDING_SHUTDOWN -> NOT_RUNNING when ``run`` returns; on a fatal error PENDING_ERROR
-> ERROR.  A stream thread that starts rebalancing takes the instance back to
REBALANCING.  Each later assignment (a
rebalance completed) goes RUNNING -> REBALANCING -> RUNNING at the next poll (Kafka
enters REBALANCING when the rebalance starts; pylog sees it when it ends).  ``set_state_listener(fn)`` is called
``fn(new_state, old_state)`` on the app's thread at each change.

An exception that escapes processing goes to the handler set with
:meth:`set_uncaught_exception_handler` (``fn(exception) ->
StreamThreadExceptionResponse``); without one ``run`` raises it (state ERROR).

* REPLACE_THREAD: the failing stream thread only (the others go on): its tasks are
  closed dirty (nothing committed; under exactly-once its transaction is aborted), its
  consumer leaves the group and joins again as a new member, and the tasks it is given
  are rebuilt from their changelogs.  Input after the last commit is processed again
  (at-least-once).
* SHUTDOWN_CLIENT: the tasks are closed dirty and every stream thread stops; ``run``
  returns; state ERROR.
* SHUTDOWN_APPLICATION: as SHUTDOWN_CLIENT, after asking every instance of the app to
  shut down through the group (:mod:`._shutdown`); each other instance commits, closes
  and ends in ERROR.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, List, Optional

from ._shutdown import SHUTDOWN_REQUESTED, ShutdownSignalAssignor
from .errors import State, StreamThreadExceptionResponse

__all__ = ["AppStateMixin"]

log = logging.getLogger("pylog.streams")


class AppStateMixin:
    """State, state listener and uncaught exception handling of a StreamsApp."""

    #: ``StreamsApp.State.RUNNING`` ..., as Kafka's ``KafkaStreams.State``
    State = State
    _state = State.CREATED
    _state_listener: Optional[Callable[[State, State], None]] = None
    _uncaught_handler: Optional[Callable[[BaseException], Any]] = None
    _signal_assignors: List[ShutdownSignalAssignor] = []
    _assigned = False
    _state_change_lock = threading.RLock()

    @property
    def state(self) -> State:
        return self._state

    def set_state_listener(self, listener: Optional[Callable[[State, State], None]]) -> None:
        """``listener(new_state, old_state)`` at every state change."""
        self._state_listener = listener

    def set_uncaught_exception_handler(self, handler: Callable[[BaseException], Any]) -> None:
        """``handler(exception)`` answers a StreamThreadExceptionResponse (module docstring)."""
        if not callable(handler):
            raise TypeError(f"the uncaught exception handler must be callable, got {handler!r}")
        self._uncaught_handler = getattr(handler, "handle", handler)

    def _set_state(self, new: State) -> None:
        with self._state_change_lock:
            old = self._state
            if old is new or not old.is_valid_transition(new):
                return
            self._state = new
        parent = getattr(self, "_parent", None)
        if parent is not None:
            # an added stream thread: the instance rebalances while any thread does
            if new is State.REBALANCING and parent._state is State.RUNNING:
                parent._set_state(State.REBALANCING)
            return
        log.info("%s: state %s -> %s", getattr(self, "application_id", "?"), old.name, new.name)
        if self._state_listener is not None:
            self._state_listener(new, old)

    def _threads_rebalancing(self) -> bool:
        """An added stream thread has not received its assignment yet."""
        return any(t._state in (State.CREATED, State.REBALANCING)
                   for t in getattr(self, "_children", ()))

    # -- hooks of run()
    def _join_streams_group(self, consumer: Any) -> None:
        """Run joined the group: the consumer's assignors carry shutdown requests."""
        consumer.assignors = self._signal_assignors = [
            a if isinstance(a, ShutdownSignalAssignor) else ShutdownSignalAssignor(a, self._on_assigned)
            for a in consumer.assignors]
        self._assigned = False
        self._set_state(State.REBALANCING)

    def _on_assigned(self) -> None:
        self._assigned = True
        self._set_state(State.REBALANCING)

    def _after_poll(self) -> None:
        if any(a.shutdown_requested.is_set() for a in self._signal_assignors):
            if self._state is not State.PENDING_ERROR:
                log.error("%s: an instance of the application requested its shutdown (SHUTDOWN_APPLICATION): "
                          "shutting down", self.application_id)  # type: ignore[attr-defined]
                self._set_state(State.PENDING_ERROR)
            self._stop.set()  # type: ignore[attr-defined]
        elif self._state is State.REBALANCING and self._assigned and not self._threads_rebalancing():
            self._set_state(State.RUNNING)

    def _finish_state(self) -> None:
        if self.failed or self._state is State.PENDING_ERROR:  # type: ignore[attr-defined]
            self._set_state(State.PENDING_ERROR)
            self._set_state(State.ERROR)
        else:
            self._set_state(State.PENDING_SHUTDOWN)
            self._set_state(State.NOT_RUNNING)

    def _handle_uncaught(self, exc: BaseException) -> bool:
        """Apply the uncaught exception handler's answer; False: there is none (raise)."""
        handler = self._uncaught_handler
        if handler is None:
            return False
        response = handler(exc)
        if not isinstance(response, StreamThreadExceptionResponse):
            raise TypeError(f"the uncaught exception handler returned {response!r}, not a "
                            "StreamThreadExceptionResponse") from exc
        log.error("%s: uncaught exception %r: %s", self.application_id, exc, response.name)  # type: ignore
        self._close_tasks_dirty()
        if response is StreamThreadExceptionResponse.REPLACE_THREAD:
            self._assigned = False
            self._rejoin()
            self._set_state(State.REBALANCING)
            return True
        self.failed = True
        self._set_state(State.PENDING_ERROR)
        if response is StreamThreadExceptionResponse.SHUTDOWN_APPLICATION:
            self._request_application_shutdown()
        self._stop.set()  # type: ignore[attr-defined]
        return True

    def _close_tasks_dirty(self) -> None:
        if self.exactly_once:  # type: ignore[attr-defined]
            self._abort_and_close_tasks()  # type: ignore[attr-defined]
            return
        for task in self.tasks.values():  # type: ignore[attr-defined]
            task.close()
        self.tasks.clear()  # type: ignore[attr-defined]
        self._offsets.clear()  # type: ignore[attr-defined]

    def _rejoin(self) -> None:
        """Leave the group and join again as a new member (a replaced stream thread's
        new consumer); what is revoked meanwhile is dropped, not committed."""
        from .runtime import _TaskMover
        consumer = self.consumer  # type: ignore[attr-defined]
        was_failed, self.failed = self.failed, True  # type: ignore[has-type]
        try:
            consumer.unsubscribe()
        finally:
            self.failed = was_failed
        consumer.subscribe(sorted(self._topic_group), _TaskMover(self))  # type: ignore[attr-defined]

    def _request_application_shutdown(self, timeout_s: float = 30.0) -> None:
        """Join again with SHUTDOWN_REQUESTED in the subscription and wait (polling, the
        records dropped) until the group's assignment carries it back to this member."""
        for a in self._signal_assignors:
            a.error_code = SHUTDOWN_REQUESTED
        consumer = self.consumer  # type: ignore[attr-defined]
        # stay a member (leaving would hand this instance's partitions to the others,
        # which would process them before they learn of the request)
        consumer.enforce_rebalance("SHUTDOWN_APPLICATION requested")
        deadline = time.monotonic() + timeout_s
        while not any(a.shutdown_requested.is_set() for a in self._signal_assignors):
            if time.monotonic() >= deadline:
                log.error("%s: the shutdown request did not come back through the group within %.0f s",
                          self.application_id, timeout_s)  # type: ignore[attr-defined]
                return
            consumer.poll(timeout_ms=100, max_records=1)
