"""Process lifecycle of the SDK: what ``fork()``, interpreter exit and termination signals do to
delivery.

* ``fork()`` (gunicorn ``--preload``, multiprocessing): the child starts with no worker thread
  (one starts with its first event), and every pipeline with an empty queue, fresh locks and
  its own spool file. Nothing the parent's threads might have been holding at the time of the
  fork is ever used in the child. Spool databases are closed around the fork so that no SQLite
  handle crosses it.
* At exit every live pipeline is closed within the longest of their ``shutdown_timeout``\\ s:
  flushed, and whatever is still undelivered written to the spool for the next process.
* SIGTERM and SIGINT: a signal whose disposition is the default kills the process without
  ``atexit``, and uvicorn (for one) restores the handler it found and re-raises the signal
  after its graceful shutdown — so an ASGI app without a lifespan (ASGI Django) would lose the
  events still in memory. When the first pipeline starts, from the main thread, the SDK puts a
  handler on top of the one there and passes every signal on to it (see :func:`_on_signal`):
  the drain runs before the signal takes effect, and the signal still takes effect.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from types import FrameType
from typing import Any, Final, Protocol

from immutablelog.sdk.worker import WORKER

logger = logging.getLogger("immutablelog.sdk")

#: The signals that end a server: its orchestrator's stop, and Ctrl-C.
TERMINATION_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
#: Beyond the pipelines' own shutdown timeout, how long a signal waits for a drain that hangs.
_DRAIN_GRACE: Final = 1.0


class ProcessBound(Protocol):
    """What a pipeline does around forks and at exit."""

    def before_fork(self) -> None: ...

    def after_fork_in_parent(self) -> None: ...

    def after_fork_in_child(self) -> None: ...

    def shutdown_timeout(self) -> float: ...

    def close(self, timeout: float | None = None) -> bool: ...


# Every live pipeline. Weak: one that was closed and dropped does not linger.
_LIVE: weakref.WeakSet[ProcessBound] = weakref.WeakSet()
# The handler each termination signal had before ours, once installed.
_PREVIOUS: dict[int, Any] = {}
_signals_installed = False
# Signals blocked in the main thread until the exit drain is done (see _on_signal).
_HELD: set[int] = set()
_draining = False


def track(pipeline: ProcessBound) -> None:
    """Include ``pipeline`` in the fork hooks, the exit drain and the signal drain."""
    _LIVE.add(pipeline)
    if not _signals_installed:
        _install_signal_handlers()


def forget(pipeline: ProcessBound) -> None:
    _LIVE.discard(pipeline)


def _before_fork() -> None:
    for pipeline in list(_LIVE):
        pipeline.before_fork()


def _after_fork_in_parent() -> None:
    for pipeline in list(_LIVE):
        pipeline.after_fork_in_parent()


def _after_fork_in_child() -> None:
    global _draining
    WORKER.reset_after_fork()  # first: pipelines take their doorbell from it
    for pipeline in list(_LIVE):
        pipeline.after_fork_in_child()
    # The child inherits the forking thread's signal mask, not the signal that was held.
    if _HELD:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)
        _HELD.clear()
    _draining = False


def _close_all() -> None:
    pipelines = list(_LIVE)
    if not pipelines:
        return
    deadline = time.monotonic() + max(p.shutdown_timeout() for p in pipelines)
    for pipeline in pipelines:
        try:
            pipeline.close(max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("ImmutableLog: error while draining events")


def _close_all_at_exit() -> None:
    _close_all()
    _release_held_signals()


def _install_signal_handlers() -> None:
    """Put :func:`_on_signal` on top of SIGTERM's and SIGINT's handlers, where that is safe:
    only from the main thread (the only place Python allows it), never over a signal that is
    ignored, and never over a handler set outside Python (it could not be passed on)."""
    global _signals_installed
    if threading.current_thread() is not threading.main_thread():
        return  # tried again when the next pipeline starts
    _signals_installed = True
    for signum in TERMINATION_SIGNALS:
        previous = signal.getsignal(signum)
        if previous is None or previous == signal.SIG_IGN or previous is _on_signal:
            continue
        try:
            signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # not the main interpreter, say
            continue
        _PREVIOUS[signum] = previous


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Pass ``signum`` on to the handler that was there before, drained first where needed.

    * Default disposition (the signal kills): drain (bounded by the longest shutdown timeout),
      then restore the default and re-raise, so that the process ends by the signal as it
      would have. A second signal during the drain ends the process at once.
    * A Python handler (a server's graceful shutdown) gets the signal at once. SIGTERM is
      first blocked in the main thread: if that handler's server re-raises it after shutting
      down, as uvicorn does, it waits until the exit drain is done and then takes effect; a
      server that ends by returning (gunicorn's workers) exits normally, drained at exit.
      SIGINT is passed on as it is: it ends in KeyboardInterrupt, after which Python runs the
      exit drain, and a second Ctrl-C keeps working.
    """
    global _draining
    previous = _PREVIOUS.get(signum, signal.SIG_DFL)
    if previous == signal.SIG_DFL:
        if not _draining:
            _draining = True
            _drain_within_timeout()
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        signal.raise_signal(signum)
        return
    if signum == signal.SIGTERM and signum not in _HELD:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
        _HELD.add(signum)
    if callable(previous):
        previous(signum, frame)


def _drain_within_timeout() -> None:
    """The exit drain from inside a signal handler: in a thread of its own, so that a lock the
    interrupted code holds can delay the signal by the timeout at most, never block it."""
    pipelines = list(_LIVE)
    if not pipelines:
        return
    timeout = max(p.shutdown_timeout() for p in pipelines) + _DRAIN_GRACE
    drain = threading.Thread(target=_close_all, name="immutablelog-signal-drain", daemon=True)
    drain.start()
    drain.join(timeout)


def _release_held_signals() -> None:
    """At the end of the exit drain: a held signal that was re-raised meanwhile takes effect
    now, with its default disposition (what the server that re-raised it restored)."""
    if not _HELD:
        return
    pending = signal.sigpending()
    for signum in sorted(_HELD):
        if signum in pending:
            signal.signal(signum, signal.SIG_DFL)
    held = set(_HELD)
    _HELD.clear()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_close_all_at_exit)
