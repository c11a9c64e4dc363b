"""Event counts kept ahead of time (``ledger/rollup.py``) answer exactly what a scan of the
entries answers, on both backends: for every filter, interval and time range (ragged or
aligned, open or closed), whether the counts cover the whole log, part of it or none."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from immutablelog.entry import timestamp
from immutablelog.ledger import rollup
from immutablelog.ledger.sqlite import SQLiteStorage, counts
from immutablelog.ledger.storage import EventQuery, NewEntry, Storage
from tests.ledger.test_storage_contract import append_events, new_tenant, raw_sql, storage

__all__ = ["storage"]

START = datetime(2026, 2, 27, 22, 58, 30, tzinfo=UTC)  # past a month's end and a day's
SERVICES = ("billing", "shop", "gw")
ENVS = (None, "", "production", "staging")
NAMES = ("invoice.paid", "invoice.void", "invite.sent", "user.login")


def _events(rng: random.Random, count: int) -> list[tuple[dict[str, Any], str, str]]:
    events = []
    for _ in range(count):
        # Clustered and spread: many within minutes of each other, some days apart.
        offset = rng.choice((rng.uniform(0, 180), rng.uniform(0, 3 * 86400)))
        meta: dict[str, Any] = {
            "type": rng.choice(("success", "info", "warning", "error")),
            "service": rng.choice(SERVICES),
            "event_name": rng.choice(NAMES),
        }
        env = rng.choice(ENVS)
        if env is not None:
            meta["env"] = env
        if rng.random() < 0.5:
            meta["actor"] = rng.choice(("alice", "bob"))
        events.append((meta, "{}", timestamp(START + timedelta(seconds=offset))))
    return events


def _moment(rng: random.Random) -> str | None:
    """A bound: open, on a boundary of a day, an hour or a minute, or anywhere."""
    kind = rng.randrange(5)
    if kind == 0:
        return None
    moment = START + timedelta(seconds=rng.uniform(-600, 3 * 86400 + 600))
    if kind == 1:
        moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    elif kind == 2:
        moment = moment.replace(minute=0, second=0, microsecond=0)
    elif kind == 3:
        moment = moment.replace(second=0, microsecond=0)
    return timestamp(moment)


def _query(rng: random.Random) -> EventQuery:
    name = rng.choice((None, None, *NAMES))
    prefix = rng.choice((None, None, "invoice.", "inv", "user.login", "zzz"))
    return EventQuery(
        service=rng.choice((None, None, *SERVICES)),
        env=rng.choice((None, *ENVS[1:])),
        type=rng.choice((None, None, "error", "info")),
        event_name=name,
        event_name_prefix=None if name else prefix,
        actor=rng.choice((None, None, None, "alice")),
        since=_moment(rng),
        until=_moment(rng),
    )


def _expected(rows: list[NewEntry], query: EventQuery, width: int) -> list[tuple[str, str, int]]:
    found: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if (
            all(
                getattr(query, f) is None or getattr(row, f) == getattr(query, f)
                for f in ("service", "env", "type", "event_name", "actor")
            )
            and (not query.event_name_prefix or row.event_name.startswith(query.event_name_prefix))
            and (query.since is None or row.received_at >= query.since)
            and (query.until is None or row.received_at < query.until)
        ):
            found[row.received_at[:width], row.type] += 1
    return sorted((bucket, kind, n) for (bucket, kind), n in found.items())


def _check(storage: Storage, tenant: int, rows: list[NewEntry], rng: random.Random) -> None:
    for _ in range(60):
        query = _query(rng)
        width = rng.choice((4, 7, 10, 13, 16))
        found = sorted(storage.count_events(tenant, query, width).rows)
        assert found == _expected(rows, query, width), (query, width)


def test_counts_are_exact_before_during_and_after_rolling_up(storage: Storage) -> None:
    rng = random.Random(14)
    acme, other = new_tenant(storage, "acme"), new_tenant(storage, "other")
    rows: list[NewEntry] = []
    for _ in range(3):
        rows += append_events(storage, acme, _events(rng, 150))
        append_events(storage, other, _events(rng, 20))  # never counted for acme
    assert storage.rollup_backlog() == 510
    _check(storage, acme, rows, rng)  # nothing rolled up: all from the entries
    assert storage.roll_up(200) == 200
    _check(storage, acme, rows, rng)  # partly
    while storage.roll_up(1000):
        pass
    assert storage.rollup_backlog() == 0
    _check(storage, acme, rows, rng)
    rows += append_events(storage, acme, _events(rng, 40))  # newer than the counts
    _check(storage, acme, rows, rng)
    assert storage.roll_up(1000) == 40
    _check(storage, acme, rows, rng)


def test_a_rolled_up_minute_is_one_row_per_kind(storage: Storage) -> None:
    acme = new_tenant(storage)
    meta = {"type": "error", "service": "s", "event_name": "e"}
    at = timestamp(START)
    append_events(storage, acme, [(meta, "{}", at)] * 50)
    storage.roll_up(100)
    table = "event_counts"
    if isinstance(storage, SQLiteStorage):
        conn = sqlite3.connect(storage.path)
        conn.execute("ATTACH DATABASE ? AS search", (str(storage.search_path),))
        stored = conn.execute(f"SELECT width, bucket, n FROM search.{table} ORDER BY 1").fetchall()
        conn.close()
    else:
        stored = raw_sql(storage, f"SELECT width, bucket, n FROM {table} ORDER BY 1")
    assert stored == [(10, at[:10], 50), (13, at[:13], 50), (16, at[:16], 50), (19, at[:19], 50)]


def test_long_names_in_every_column_are_counted(storage: Storage) -> None:
    """Three 255-character names of 4-byte characters: past what a PostgreSQL btree entry
    holds unless hashed."""
    acme = new_tenant(storage)
    long = "\U0001f600" * 255
    meta = {"type": "info", "service": long, "event_name": long, "env": long}
    rows = append_events(storage, acme, [(meta, "{}", timestamp(START))])
    assert storage.roll_up(10) == 1
    query = EventQuery(service=long, env=long, event_name=long)
    assert storage.count_events(acme, query, 16).rows == _expected(rows, query, 16)


@pytest.mark.parametrize(
    ("since", "until", "width"),
    [
        (None, None, 10),
        ("2026-02-27T22:58:30.500000Z", "2026-03-02T01:00:00.000000Z", 13),
        ("2026-02-28T00:00:00.000000Z", None, 4),
        (None, "2026-02-28T00:01:00.000001Z", 16),
        ("2026-02-28T10:00:00.000000Z", "2026-02-28T10:00:00.000000Z", 10),
        ("2026-12-31T23:59:59.999999Z", "2027-01-01T00:00:00.000001Z", 7),
        ("2026-03-01T10:00:07.000000Z", "2026-03-01T10:02:00.000000Z", 4),
    ],
)
def test_a_plan_covers_the_range_once(since: str | None, until: str | None, width: int) -> None:
    """Every minute of three years falls in exactly one part of the plan, and only those
    inside the range; raw parts are under a minute at the ends."""
    layout = rollup.plan(since, until, width)
    for level, _, _ in layout.rollups:
        assert level >= width
    for lo, hi in layout.raw:
        assert hi is not None and timedelta(0) < _parse(hi) - _parse(lo) < timedelta(seconds=1)
    moments = []
    moment = datetime(2026, 2, 27, 0, 0, tzinfo=UTC)
    while moment < datetime(2027, 1, 3, tzinfo=UTC):
        moments.append(moment)
        moment += timedelta(minutes=7, seconds=13, microseconds=1)
    for bound in (since, until):
        if bound is not None:
            moments += [_parse(bound) + timedelta(microseconds=d) for d in (-1, 0, 1)]
    for moment in moments:
        at = timestamp(moment)
        inside = (since is None or at >= since) and (until is None or at < until)
        parts = [
            1
            for level, first, last in layout.rollups
            if (first is None or at[:level] >= first) and (last is None or at[:level] < last)
        ] + [1 for lo, hi in layout.raw if lo <= at < hi]
        assert len(parts) == (1 if inside else 0), at


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_the_end_of_time_is_counted_from_the_entries() -> None:
    layout = rollup.plan("9999-12-31T23:59:59.500000Z", None, 10)
    assert layout.rollups == () and layout.raw == (("9999-12-31T23:59:59.500000Z", None),)
    layout = rollup.plan("9999-12-31T22:00:00.000000Z", None, 10)
    assert layout.rollups == ((13, "9999-12-31T22", None),)


def test_a_full_text_count_adds_up_the_newest_matches(storage: Storage) -> None:
    rng = random.Random(11)
    tenant = new_tenant(storage)
    words = [rng.choice(("needle", "hay")) for _ in range(300)]
    events = [
        (meta, f'{{"note": "{word} {n}"}}', at)
        for n, (word, (meta, _, at)) in enumerate(zip(words, _events(rng, 300), strict=True))
    ]
    stored = append_events(storage, tenant, events)
    while storage.index_search(1000):
        pass
    matching = sorted(
        (e for e, word in zip(stored, words, strict=True) if word == "needle"),
        key=lambda e: e.index,
        reverse=True,
    )
    assert 100 < len(matching) < 200

    def newest(n: int) -> list[tuple[str, str, int]]:
        counted = Counter((e.received_at[:16], e.type) for e in matching[:n])
        return sorted((b, t, c) for (b, t), c in counted.items())

    query = EventQuery(text="needle")
    found = storage.count_events(tenant, query, 16, matches=50)
    assert not found.complete and found.from_index == matching[50].index + 1
    assert sorted(found.rows) == newest(50)
    every = storage.count_events(tenant, query, 16, matches=len(matching))
    assert every.complete and every.from_index is None
    assert sorted(every.rows) == newest(len(matching))
    # The newest entries holding the words are taken, then other filters narrow them.
    errors = storage.count_events(tenant, replace(query, type="error"), 16, matches=50)
    assert not errors.complete and errors.from_index == matching[50].index + 1
    wanted = Counter((e.received_at[:16], e.type) for e in matching[:50] if e.type == "error")
    assert sorted(errors.rows) == sorted((b, t, c) for (b, t), c in wanted.items())
    # None of the newest holding the words pass the filters: nothing counted, and it says so.
    none = storage.count_events(tenant, replace(query, service="nowhere"), 16, matches=50)
    assert none.rows == [] and not none.complete and none.from_index == found.from_index
    # Another tenant's entries holding the words take no part.
    other = new_tenant(storage, "other")
    append_events(storage, other, events[:100])
    while storage.index_search(1000):
        pass
    again = storage.count_events(tenant, query, 16, matches=50)
    assert again == found


def test_a_count_past_its_time_is_stopped(tmp_path: Any) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    with pytest.raises(rollup.CountTooSlow), counts.time_limit(conn, 0.05):
        conn.execute(endless).fetchall()
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the handler is gone
