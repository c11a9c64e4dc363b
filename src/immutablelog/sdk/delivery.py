"""Sending one batch: the transport's verdicts settle each event as stored or dead-lettered.

A whole-request 413 splits the batch in halves; a single event that is still too large, and any
other permanent whole-request refusal, is dead-lettered. A transient failure interrupts the
delivery (:class:`Interrupted`), saying how many leading events were settled before it. An
unexpected exception from a transport counts as transient: the events are kept and retried,
never lost to a bug.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from immutablelog.sdk.deadletter import DeadLetterFile
from immutablelog.sdk.events import WireEvent
from immutablelog.sdk.transport import (
    ACCEPTED,
    RejectedBatchError,
    RetryableDeliveryError,
    Transport,
)

logger = logging.getLogger("immutablelog.sdk")

#: Called as ``settle(start, stop, sent, duplicates)`` once ``events[start:stop]`` reached a
#: final state: ``sent`` of them stored (``duplicates`` of those already were), the rest
#: dead-lettered.
Settle = Callable[[int, int, int, int], None]


class Interrupted(Exception):
    """A delivery stopped by a transient failure after ``settled`` leading events were settled."""

    def __init__(self, settled: int, cause: RetryableDeliveryError) -> None:
        super().__init__(str(cause))
        self.settled = settled
        self.cause = cause


def deliver(
    transport: Transport,
    dead_letters: DeadLetterFile,
    events: Sequence[WireEvent],
    settle: Settle,
    offset: int = 0,
) -> None:
    """Send ``events`` and settle every one of them, or raise :class:`Interrupted`."""
    try:
        results = transport.send_batch(events)
    except RetryableDeliveryError as exc:
        raise Interrupted(0, exc) from exc
    except RejectedBatchError as exc:
        if exc.splittable and len(events) > 1:
            half = len(events) // 2
            deliver(transport, dead_letters, events[:half], settle, offset)
            try:
                deliver(transport, dead_letters, events[half:], settle, offset + half)
            except Interrupted as inner:
                raise Interrupted(half + inner.settled, inner.cause) from inner
            return
        dead_letters.write(events, reason=exc.reason, message=str(exc), status=exc.status)
        settle(offset, offset + len(events), 0, 0)
        return
    except Exception as exc:
        logger.exception("ImmutableLog: the transport failed unexpectedly; will retry")
        raise Interrupted(0, RetryableDeliveryError(repr(exc))) from exc
    if len(results) != len(events):
        raise Interrupted(0, RetryableDeliveryError("transport returned a wrong result count"))
    if results.count(ACCEPTED) == len(events):  # the usual answer, told without a loop
        settle(offset, offset + len(events), len(events), 0)
        return
    rejected: dict[tuple[str | None, str | None], list[WireEvent]] = {}
    sent = duplicates = 0
    for event, result in zip(events, results, strict=True):
        if result.accepted:
            sent += 1
            duplicates += result.duplicate
        else:
            rejected.setdefault((result.reason, result.message), []).append(event)
    for (reason, message), group in rejected.items():
        dead_letters.write(group, reason=reason, message=message, status=200)
    settle(offset, offset + len(events), sent, duplicates)
