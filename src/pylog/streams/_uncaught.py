"""The app's state (Kafka's ``KafkaStreams.State``) with its listener, and the uncaught
exception handler (``StreamsUncaughtExceptionHandler``), as a part of
:class:`~pylog.streams.StreamsApp`; each :class:`~.stream_thread.StreamThread` applies
the handler's answer to itself.

States: CREATED -> REBALANCING (``run`` joined the group) -> RUNNING (every stream
thread is RUNNING: it polled after its member received its assignment) ->
PENDING_SHUTDOWN -> NOT_RUNNING when ``run`` returns; on a fatal error PENDING_ERROR
-> ERROR.  A stream thread that starts rebalancing takes the instance back to
REBALANCING.  Each later assignment (a rebalance completed) goes RUNNING ->
REBALANCING -> RUNNING at the thread's next poll (Kafka enters REBALANCING when the
rebalance starts; pylog sees it when it ends).  Each stream thread has a state of its
own in the same terms (``metadata_for_local_threads``).  ``set_state_listener(fn)``
is called ``fn(new_state, old_state)`` at each change, on the stream thread that
made it (any of them).

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
from typing import Any, Callable, Optional, Tuple

from .errors import State
from .errors import State as _State

__all__ = ["AppStateMixin", "final_states"]

log = logging.getLogger("pylog.streams")


class AppStateMixin:
    """State, state listener and uncaught exception handler of a StreamsApp; its
    stream threads report their own state changes and failures here."""

    #: ``StreamsApp.State.RUNNING`` ..., as Kafka's ``KafkaStreams.State``
    State = _State
    _state = State.CREATED
    _state_listener: Optional[Callable[[_State, _State], None]] = None
    _uncaught_handler: Optional[Callable[[BaseException], Any]] = None
    #: the app is failing: it ends in ERROR
    failed = False

    def _init_state(self) -> None:
        self._state_change_lock = threading.RLock()

    @property
    def state(self) -> _State:
        return self._state

    def set_state_listener(self, listener: Optional[Callable[[_State, _State], None]]) -> None:
        """``listener(new_state, old_state)`` at every state change."""
        self._state_listener = listener

    def set_uncaught_exception_handler(self, handler: Callable[[BaseException], Any]) -> None:
        """``handler(exception)`` answers a StreamThreadExceptionResponse (module docstring)."""
        if not callable(handler):
            raise TypeError(f"the uncaught exception handler must be callable, got {handler!r}")
        self._uncaught_handler = getattr(handler, "handle", handler)

    def _set_state(self, new: _State) -> None:
        with self._state_change_lock:
            old = self._state
            if old is new or not old.is_valid_transition(new):
                return
            self._state = new
        log.info("%s: state %s -> %s", getattr(self, "application_id", "?"), old.name, new.name)
        if self._state_listener is not None:
            self._state_listener(new, old)

    def _thread_state_changed(self, thread: Any, new: _State) -> None:
        """A stream thread rebalances: so does the instance; every thread runs: so does
        the instance."""
        if new is State.REBALANCING:
            self._set_state(State.REBALANCING)
        elif new is State.RUNNING and self._state is State.REBALANCING:
            with self._state_change_lock:
                if all(t.state is State.RUNNING for t in self.stream_threads()):  # type: ignore[attr-defined]
                    self._set_state(State.RUNNING)

    def _fail_client(self) -> None:
        """SHUTDOWN_CLIENT or SHUTDOWN_APPLICATION answered in a stream thread: the
        instance ends in ERROR, and thread 1 commits nothing more."""
        self.failed = True
        threads = self.stream_threads()  # type: ignore[attr-defined]
        if threads:
            threads[0].failed = True
        self._set_state(State.PENDING_ERROR)

    def _shutdown_requested_by_group(self) -> None:
        """An instance of the application asked the group to shut it down
        (SHUTDOWN_APPLICATION, :mod:`._shutdown`): every stream thread stops."""
        with self._state_change_lock:
            if self._state is not State.PENDING_ERROR:
                log.error("%s: an instance of the application requested its shutdown (SHUTDOWN_APPLICATION): "
                          "shutting down", getattr(self, "application_id", "?"))
                self._set_state(State.PENDING_ERROR)
        self.stop()  # type: ignore[attr-defined]

    def _finish_state(self) -> None:
        for state in final_states(self.failed or self._state is State.PENDING_ERROR):
            self._set_state(state)


def final_states(failed: bool) -> Tuple[State, State]:
    """The states an app or a stream thread goes through when it stops."""
    return (State.PENDING_ERROR, State.ERROR) if failed else (State.PENDING_SHUTDOWN, State.NOT_RUNNING)
