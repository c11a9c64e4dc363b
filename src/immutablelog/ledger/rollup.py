"""Event counts kept ahead of time, so the viewer's chart never scans a big log.

Each backend keeps a derived table of how many entries fall in each (tenant, time bucket,
type, service, env, event name), at four bucket widths: a day, an hour, a minute and a
second (the first 10, 13, 16 and 19 characters of ``received_at``). It is filled behind the
writer from a progress mark, in the same transaction that moves the mark, like the search
index, so a reader always sees counts and mark that agree.

A count whose filters the table holds (service, env, type, event name or prefix, time
range) is then answered exactly from three sources, in one snapshot:

* the rollup rows of the entries the mark covers, at the coarsest width that fits inside
  the asked range and is not coarser than the asked interval (a day's row stands for an
  hour's only if no hour is asked for);
* at the range's ragged ends (``since`` at 10:17:23.5), finer rows, down to the second,
  and the entries of the part-second left over, read through the time index;
* the entries the mark does not cover yet (the last half second of ingest), scanned.

Filters the table cannot hold (full text, actor, request id) are answered from the
entries; they are selective, and the caller bounds their time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from immutablelog.ledger.storage import (
    EventCounts,
    EventQuery,
    StorageError,
    event_filters,
    prefix_range,
)


class CountTooSlow(StorageError):
    """A count ran past its time (``LedgerConfig.count_seconds``) and was stopped."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"counting these events took more than {seconds:g} s")
        self.seconds = seconds


def newest_matches(rows: Sequence[Sequence[Any]]) -> EventCounts:
    """The answer of a full-text count over the newest matches of its words: ``(bucket,
    type, count, None)`` rows, and one ``(None, None, 0, edge)`` row whose ``edge``, unless
    None, is the newest match of the words left out, so that every matching event above
    it is counted and none below."""
    edge = next((low for bucket, *_, low in rows if bucket is None), None)
    found = [(str(b), str(t), int(n)) for b, t, n, _ in rows if b is not None]
    if edge is None:
        return EventCounts(found)
    return EventCounts(found, complete=False, from_index=int(edge) + 1)


class CountCancelled(StorageError):
    """Nobody waited for a count any more (its client went away), and it was stopped."""

    def __init__(self) -> None:
        super().__init__("the count was cancelled")


class Cancel:
    """Set, from any thread, once nobody waits for a count's answer any more: a count that
    runs checks it (SQLite, between steps) or is stopped by the hooks it registered
    (PostgreSQL sends the server a cancel request), so a superseded count stops competing
    with the ones that replaced it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._hooks: list[Callable[[], object]] = []

    @property
    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Cancel; runs the registered hooks here, in the caller's thread."""
        with self._lock:
            if self._set:
                return
            self._set = True
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    @contextmanager
    def hook(self, action: Callable[[], object]) -> Iterator[None]:
        """Run ``action`` if this is set while inside (at once if it already is)."""
        with self._lock:
            now = self._set
            if not now:
                self._hooks.append(action)
        if now:
            action()
        try:
            yield
        finally:
            with self._lock:
                if action in self._hooks:
                    self._hooks.remove(action)


#: Bucket widths kept, coarsest first: day, hour, minute, second (the viewer's time
#: inputs hold seconds, so the ranges it asks for are read from these rows alone). Stored
#: rows hold these widths: changing them means counting the log again (a migration).
WIDTHS: Final = (10, 13, 16, 19)
#: What each width leaves out of a ``received_at`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``) at
#: the start of its bucket.
_START: Final = "0000-01-01T00:00:00.000000Z"
_STEP: Final = {
    10: timedelta(days=1),
    13: timedelta(hours=1),
    16: timedelta(minutes=1),
    19: timedelta(seconds=1),
}
_FORMAT: Final = {10: "%Y-%m-%d", 13: "%Y-%m-%dT%H", 16: "%Y-%m-%dT%H:%M", 19: "%Y-%m-%dT%H:%M:%S"}


def answers(query: EventQuery) -> bool:
    """Whether the rollup holds every filter of ``query``."""
    return (
        not (query.text and query.text.split())
        and query.actor is None
        and (query.request_id is None)
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a count's covered entries are read: rollup rows of one width in a range of
    bucket keys (``None``: open), and ``received_at`` ranges read from the entries."""

    rollups: tuple[tuple[int, str | None, str | None], ...]
    raw: tuple[tuple[str, str | None], ...]


def _start(key: str, width: int) -> str:
    return key + _START[width:]


def _next(key: str, width: int) -> str | None:
    """The key of the bucket after ``key``'s (None past year 9999)."""
    try:
        moment = datetime.strptime(key, _FORMAT[width]) + _STEP[width]
    except OverflowError:
        return None
    # isoformat-style four-digit years, as received_at has them (strftime's %Y may not).
    return moment.isoformat()[:width]


def plan(since: str | None, until: str | None, interval_width: int) -> Plan:
    """The rollup ranges and raw ranges that together cover ``[since, until)`` exactly,
    using only widths at least as fine as ``interval_width``."""
    widths = [w for w in WIDTHS if w >= interval_width]
    rollups: list[tuple[int, str | None, str | None]] = []
    raw: list[tuple[str, str | None]] = []

    def cover(lo: str | None, hi: str | None, level: int) -> None:
        if lo is not None and hi is not None and lo >= hi:
            return
        if level == len(widths):
            assert lo is not None  # an open start is always whole buckets
            raw.append((lo, hi))
            return
        width = widths[level]
        first = None
        if lo is not None:
            first = lo[:width] if _start(lo[:width], width) == lo else _next(lo[:width], width)
            if first is None:  # no whole bucket after lo: the end of representable time
                cover(lo, hi, level + 1)
                return
        last = None if hi is None else hi[:width]  # buckets before it end by hi
        if first is not None and last is not None and first >= last:
            cover(lo, hi, level + 1)
            return
        rollups.append((width, first, last))
        if lo is not None and first is not None:
            cover(lo, _start(first, width), level + 1)
        if hi is not None and last is not None:
            cover(_start(last, width), hi, level + 1)

    cover(since, until, 0)
    return Plan(tuple(rollups), tuple(raw))


def env_key(env: str | None) -> str:
    """The rollup's env column: NULL as '' and a value v as '=v', so that a key column
    never holds NULL and an empty env stays apart from none."""
    return "" if env is None else "=" + env


#: The same, in SQL, of an entry row ``e`` (both backends: ``'=' || NULL`` is NULL).
_ENV_KEY_SQL: Final = "coalesce('=' || e.env, '')"


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between backends in :func:`count_sql`.

    ``covered`` and ``uncovered`` are conditions on an entry row ``e`` (no parameters):
    whether the rollup's progress mark covers it.
    """

    mark: str
    rollup_table: str
    entries_table: str
    covered: str
    uncovered: str
    #: Where the uncovered entries are read from, as ``e``: they are few, so this must
    #: walk their index range, never let a time filter pick another index (whose
    #: estimate may be far off) and scan a range's entries to find them.
    uncovered_source: str = ""
    #: The rollup's unique key, as its index names it (PostgreSQL hashes the long text
    #: columns: a btree entry holds at most about 2.7 KB).
    conflict_target: str = "tenant_id, width, bucket, type, service, env, event_name"


def count_sql(
    dialect: Dialect, tenant_id: int, query: EventQuery, width: int
) -> tuple[str, list[object]]:
    """One statement answering :meth:`Storage.count_events` from the rollup (only when
    :func:`answers`): ``(bucket, type, count)`` rows, buckets in order."""
    m = dialect.mark
    parts: list[str] = []
    params: list[object] = []
    dims = [f"tenant_id = {m}"]
    dim_params: list[object] = [tenant_id]
    for column in ("service", "type", "event_name"):
        value = getattr(query, column)
        if value is not None:
            dims.append(f"{column} = {m}")
            dim_params.append(value)
    if query.env is not None:
        dims.append(f"env = {m}")
        dim_params.append(env_key(query.env))
    if query.event_name_prefix:
        dims.append(f"event_name >= {m} AND event_name < {m}")
        dim_params += prefix_range(query.event_name_prefix)
    layout = plan(query.since, query.until, width)
    for level, first, last in layout.rollups:
        where = [*dims, f"width = {m}"]
        level_params: list[object] = [*dim_params, level]
        if first is not None:
            where.append(f"bucket >= {m}")
            level_params.append(first)
        if last is not None:
            where.append(f"bucket < {m}")
            level_params.append(last)
        parts.append(
            f"SELECT substr(bucket, 1, {m}) AS b, type AS t, sum(n) AS c "
            f"FROM {dialect.rollup_table} WHERE {' AND '.join(where)} GROUP BY 1, 2"
        )
        params += [width, *level_params]
    for lo, hi in layout.raw:
        where, raw_params = event_filters(tenant_id, replace(query, since=lo, until=hi), m, "e.")
        parts.append(
            f"SELECT substr(e.received_at, 1, {m}) AS b, e.type AS t, count(*) AS c "
            f"FROM {dialect.entries_table} AS e "
            f"WHERE {' AND '.join(where)} AND {dialect.covered} GROUP BY 1, 2"
        )
        params += [width, *raw_params]
    where, tail_params = event_filters(tenant_id, query, m, "e.")
    parts.append(
        f"SELECT substr(e.received_at, 1, {m}) AS b, e.type AS t, count(*) AS c "
        f"FROM {dialect.uncovered_source or dialect.entries_table + ' AS e'} "
        f"WHERE {' AND '.join(where)} AND {dialect.uncovered} GROUP BY 1, 2"
    )
    params += [width, *tail_params]
    sql = (
        f"SELECT b, t, sum(c) FROM ({' UNION ALL '.join(parts)}) AS parts "
        "GROUP BY b, t ORDER BY b, t"
    )
    return sql, params


def rollup_insert(dialect: Dialect, where: str) -> str:
    """Add the entries ``e`` matching ``where`` to the rollup, at every width."""
    columns = "tenant_id, width, bucket, type, service, env, event_name"
    name = dialect.rollup_table.rpartition(".")[2]
    widths = ", ".join(f"({w})" for w in WIDTHS)
    return (
        f"INSERT INTO {dialect.rollup_table} ({columns}, n) "
        "SELECT e.tenant_id, w.column1, substr(e.received_at, 1, w.column1), e.type, "
        f"e.service, {_ENV_KEY_SQL}, e.event_name, count(*) "
        f"FROM {dialect.entries_table} AS e CROSS JOIN (VALUES {widths}) AS w "
        f"WHERE {where} GROUP BY 1, 2, 3, 4, 5, 6, 7 "
        f"ON CONFLICT ({dialect.conflict_target}) DO UPDATE SET n = {name}.n + excluded.n"
    )
