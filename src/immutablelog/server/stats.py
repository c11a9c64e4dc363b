"""``GET /v1/event-counts``: how many events of each type fall in each stretch of time, for
the filters of ``GET /v1/events``. The viewer draws its chart from it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from immutablelog.entry import EVENT_TYPES
from immutablelog.ledger import Ledger, Tenant
from immutablelog.ledger.rollup import Cancel, CountCancelled, CountTooSlow
from immutablelog.ledger.storage import EventQuery
from immutablelog.server.disconnect import unless_disconnected
from immutablelog.server.errors import ApiError, JSONResponse
from immutablelog.server.links import require_reader
from immutablelog.server.params import choice_param
from immutablelog.server.query import event_query

#: Each interval as the length of the ``received_at`` prefix that names its buckets
#: (``2026-12-07T11`` is an hour), and roughly how long it is, for choosing one.
INTERVALS: Final = {
    "minute": (16, timedelta(minutes=1)),
    "hour": (13, timedelta(hours=1)),
    "day": (10, timedelta(days=1)),
    "month": (7, timedelta(days=31)),
    "year": (4, timedelta(days=366)),
}
#: ``interval=auto`` takes the shortest interval that splits the time range into at most
#: this many buckets.
AUTO_BUCKETS: Final = 90
_TYPE_ORDER: Final = ("success", "info", "warning", "error")
_PADDING: Final = "0000-01-01T00:00:00"
assert set(_TYPE_ORDER) == EVENT_TYPES


def _moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _auto_interval(ledger: Ledger, tenant: Tenant, query: EventQuery) -> str:
    """The shortest interval that covers the queried range (else the whole log's) in at most
    :data:`AUTO_BUCKETS` buckets: two index reads, never a scan."""
    first = query.since
    last = query.until
    if first is None or last is None:
        bounds = ledger.time_bounds(tenant)
        if bounds is None:
            return "hour"
        first = first or bounds[0]
        last = last or bounds[1]
    span = _moment(last) - _moment(first)
    for name, (_, length) in INTERVALS.items():
        if span <= length * AUTO_BUCKETS:
            return name
    return "year"


def _bucket_end(start: datetime, interval: str) -> datetime:
    if interval == "year":
        return start.replace(year=start.year + 1)
    if interval == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + INTERVALS[interval][1]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def event_counts(request: Request) -> Response:
    """``GET /v1/event-counts?interval=minute|hour|day|month|year|auto`` with the filters of
    ``GET /v1/events``: non-empty buckets, oldest first, each with a count per event type.
    A count whose client goes away (a viewer whose filters changed) is stopped."""
    return await unless_disconnected(request, lambda cancel: _event_counts(request, cancel))


def _event_counts(request: Request, cancel: Cancel) -> Response:
    ledger: Ledger = request.app.state.ledger
    reader = require_reader(ledger, request)
    tenant = reader.tenant
    interval = choice_param(request, "interval", ("auto", *INTERVALS))
    query = reader.narrow(replace(event_query(request)[0], after_index=None))
    if query is None:  # outside a viewer link's filter
        empty = {"interval": "hour" if interval == "auto" else interval, "buckets": []}
        return JSONResponse({**empty, "complete": True})
    if interval == "auto":
        interval = _auto_interval(ledger, tenant, query)
    width = INTERVALS[interval][0]
    try:
        found = ledger.count_events(tenant, query, width, cancel)
    except CountCancelled:
        # Nobody reads this answer; the access log shows the count ended early.
        raise ApiError(499, "cancelled", "the client went away before the count ended") from None
    except CountTooSlow as exc:
        # Only filters the kept counts cannot hold (q, actor, request_id) scan entries.
        raise ApiError(
            422,
            "count_too_broad",
            f"{exc}: narrow the filters or the time range",
        ) from None
    counts: dict[str, dict[str, int]] = {}
    for prefix, kind, count in found.rows:
        counts.setdefault(prefix, dict.fromkeys(_TYPE_ORDER, 0))[kind] = count
    buckets: list[dict[str, Any]] = []
    for prefix, by_type in counts.items():
        start = datetime.fromisoformat(prefix + _PADDING[len(prefix) :]).replace(tzinfo=UTC)
        buckets.append(
            {
                "start": _stamp(start),
                "end": _stamp(_bucket_end(start, interval)),
                "total": sum(by_type.values()),
                "counts": by_type,
            }
        )
    answer: dict[str, Any] = {"interval": interval, "buckets": buckets, "complete": found.complete}
    if not found.complete:
        # Only the newest matches were counted: every one from this index on.
        answer["from_index"] = found.from_index
    return JSONResponse(answer)
