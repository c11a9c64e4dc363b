"""Process lifecycle of the SDK: what ``fork()`` and interpreter exit do to delivery.

* ``fork()`` (gunicorn ``--preload``, multiprocessing): the child starts with no worker thread
  (one starts with its first event), and every pipeline with an empty queue, fresh locks and
  its own spool file. Nothing the parent's threads might have been holding at the time of the
  fork is ever used in the child. Spool databases are closed around the fork so that no SQLite
  handle crosses it.
* At exit every live pipeline is closed within the longest of their ``shutdown_timeout``\\ s:
  flushed, and whatever is still undelivered written to the spool for the next process.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from typing import Protocol

from immutablelog.sdk.worker import WORKER

logger = logging.getLogger("immutablelog.sdk")


class ProcessBound(Protocol):
    """What a pipeline does around forks and at exit."""

    def before_fork(self) -> None: ...

    def after_fork_in_parent(self) -> None: ...

    def after_fork_in_child(self) -> None: ...

    def shutdown_timeout(self) -> float: ...

    def close(self, timeout: float | None = None) -> bool: ...


# Every live pipeline. Weak: one that was closed and dropped does not linger.
_LIVE: weakref.WeakSet[ProcessBound] = weakref.WeakSet()


def track(pipeline: ProcessBound) -> None:
    """Include ``pipeline`` in the fork hooks and the exit drain."""
    _LIVE.add(pipeline)


def forget(pipeline: ProcessBound) -> None:
    _LIVE.discard(pipeline)


def _before_fork() -> None:
    for pipeline in list(_LIVE):
        pipeline.before_fork()


def _after_fork_in_parent() -> None:
    for pipeline in list(_LIVE):
        pipeline.after_fork_in_parent()


def _after_fork_in_child() -> None:
    WORKER.reset_after_fork()  # first: pipelines take their doorbell from it
    for pipeline in list(_LIVE):
        pipeline.after_fork_in_child()


def _close_all_at_exit() -> None:
    pipelines = list(_LIVE)
    if not pipelines:
        return
    deadline = time.monotonic() + max(p.shutdown_timeout() for p in pipelines)
    for pipeline in pipelines:
        try:
            pipeline.close(max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("ImmutableLog: error while draining events at exit")


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_close_all_at_exit)
