"""Shared benchmark helpers: realistic events, a cheap HTTP load generator, process accounting.

The load generator exists because on a 2-core machine the client competes with the server for
CPU: an ``httpx.AsyncClient`` spends a few hundred microseconds of Python per request, which at
thousands of requests per second would be measured as "server" slowness. Here every request is
serialized to its final bytes before the clock starts, and a separate process drives
keep-alive HTTP/1.1 connections with raw asyncio streams (uvloop when installed): per request
the client only writes bytes, reads a status line, headers and a ``Content-Length`` body.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import resource
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import orjson

# -- realistic events ---------------------------------------------------------------------------

_PATHS = (
    "/api/v1/orders",
    "/api/v1/orders/{n}",
    "/api/v1/invoices/{n}/pay",
    "/api/v1/users/{n}",
    "/api/v1/users/{n}/sessions",
    "/api/v1/reports/monthly",
    "/login",
    "/logout",
)
_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "python-requests/2.31.0",
)
_SERVICES = ("billing", "orders", "accounts")


def callgrind_instructions(command: Sequence[str], pythonpath: str) -> int:
    """The instructions ``command`` executes under valgrind's callgrind (its "Collected"
    total), with ``pythonpath``: counts, not seconds, the same on a busy machine as on an idle
    one. A command that fails ends the benchmark with its error output."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath},
        cwd=Path(__file__).resolve().parent.parent,
    )
    if out.returncode or "Collected :" not in out.stderr:
        raise SystemExit(f"the count failed: {' '.join(command)}\n{out.stderr[-2000:]}")
    return int(out.stderr.split("Collected :")[1].split()[0])


def uuid4_from(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng``, so a run's events are reproducible."""
    value = rng.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)
    return _uuid_text(value & ~(0xC << 60) | (0x8 << 60))


def uuid7_from(rng: random.Random, millis: int) -> str:
    """A version-7 UUID string of ``millis`` with random bits drawn from ``rng``."""
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    return _uuid_text(value | 0b10 << 62 | rng.getrandbits(62))


def _uuid_text(value: int) -> str:
    """The canonical 8-4-4-4-12 text of a 128-bit UUID value."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: How the generated events' ids (event id = idempotency key, and request id) are made:
#: ``uuid7`` as the SDK makes them (time-ordered), ``uuid4`` as random as a client can make
#: them (the seed extension's keys, ``event_name-request_id``, are as random as its ids).
KeyStyle = Literal["uuid7", "uuid4"]

#: Generated UUIDv7s advance one millisecond per this many events: the ids of a run look like
#: those of an app sending ~25,000 events/s, starting when the events are generated.
EVENTS_PER_MILLISECOND = 25


def id_maker(rng: random.Random, style: KeyStyle) -> Callable[[], str]:
    """A function returning the next id of ``style``, drawn from ``rng``."""
    if style == "uuid4":
        return lambda: uuid4_from(rng)
    start = time.time_ns() // 1_000_000
    made = 0

    def next_uuid7() -> str:
        nonlocal made
        made += 1
        return uuid7_from(rng, start + made // EVENTS_PER_MILLISECOND)

    return next_uuid7


@dataclass(frozen=True, slots=True)
class Event:
    """One audit event as the seed Flask extension sends it: payload string, meta, key."""

    payload: str
    meta: dict[str, str]
    idempotency_key: str


def _below(rng: random.Random, n: int) -> int:
    return int(rng.random() * n)  # randrange() is several times slower; bias is irrelevant


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[int(rng.random() * len(options))]


def _seed_json(payload: dict[str, Any]) -> str:
    """``json.dumps(payload, ensure_ascii=False)`` (the seed's encoding: ", " and ": "
    separators), three times faster. Valid because our values never contain a double quote,
    which :func:`seed_events` checks on its first event."""
    text = orjson.dumps(payload).decode()
    return text.replace('","', '", "').replace('":', '": ').replace(',"', ', "')


def seed_event(rng: random.Random, new_id: Callable[[], str]) -> Event:
    """An event shaped like the seed extension's ``_emit`` output (about 450-750 bytes).

    Mostly successful requests, some ``info`` (redirects) and a few errors, as a typical web
    app's audit stream would be.
    """
    method = _pick(rng, ("GET", "GET", "GET", "POST", "PUT", "DELETE"))
    path = _pick(rng, _PATHS).format(n=_below(rng, 100_000))
    roll = rng.random()
    status = 200 if roll < 0.80 else (302 if roll < 0.93 else (400, 404, 500)[_below(rng, 3)])
    kind = "success" if status < 300 else ("info" if status < 400 else "error")
    request_id = new_id()
    event_id = new_id()
    if kind == "success":
        message = f"{method} {path} completed successfully"
    elif kind == "info":
        message = f"{method} {path} processed"
    else:
        message = f"{method} {path} returned error {status}"
    payload: dict[str, Any] = {
        "id": event_id,
        "kind": kind,
        "message": message,
        "timestamp": f"2025-03-14T09:{_below(rng, 60):02d}:{_below(rng, 60):02d}."
        f"{_below(rng, 1_000_000):06d}+00:00",
        "context": {
            "ip": f"203.0.{_below(rng, 256)}.{_below(rng, 256)}",
            "user_agent": _pick(rng, _AGENTS),
        },
        "request": {
            "request_id": request_id,
            "method": method,
            "path": path,
            "query_params": {"page": str(1 + _below(rng, 20)), "per_page": "50"}
            if method == "GET"
            else None,
        },
        "metrics": {"latency_ms": 1 + _below(rng, 400), "status_code": status},
        "severity": "high" if kind == "error" else "low",
    }
    if kind == "success":
        payload["success"] = {"status_code": status, "result": "ok"}
    elif kind == "info":
        payload["info"] = {"status_code": status, "action": method.lower()}
    else:
        payload["error"] = {
            "status_code": status,
            "retryable": status == 500,
            "request_body_hash": f"{rng.getrandbits(256):064x}",
        }
    meta = {
        "type": kind,
        "event_name": f"http.{method}.{path}",
        "service": _pick(rng, _SERVICES),
        "request_id": request_id,
        "env": "production",
    }
    return Event(_seed_json(payload), meta, event_id)


def seed_events(count: int, seed: int, keys: KeyStyle = "uuid7") -> Iterator[Event]:
    """``count`` distinct events (unique idempotency keys), reproducible from ``seed`` (but for
    the time in UUIDv7 ids)."""
    rng = random.Random(seed)
    new_id = id_maker(rng, keys)
    for number in range(count):
        event = seed_event(rng, new_id)
        if number == 0:
            reference = json.dumps(json.loads(event.payload), ensure_ascii=False)
            assert event.payload == reference, "_seed_json diverged from json.dumps"
        yield event


# -- HTTP requests as bytes ---------------------------------------------------------------------


def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 keep-alive POST, ready to be written to a socket."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def batch_request(events: Sequence[Event], auth: dict[str, str]) -> bytes:
    items = [
        {"payload": e.payload, "meta": e.meta, "idempotency_key": e.idempotency_key} for e in events
    ]
    return http_request("/v1/events/batch", orjson.dumps({"events": items}), auth)


def single_request(event: Event, auth: dict[str, str]) -> bytes:
    """``POST /v1/events`` with the headers the seed extension sends."""
    headers = {
        **auth,
        "Idempotency-Key": event.idempotency_key,
        "Request-Id": event.meta["request_id"],
        "X-Client-TZ": "UTC",
        "X-Client-Offset-Minutes": "0",
    }
    body = orjson.dumps({"payload": event.payload, "meta": event.meta})
    return http_request("/v1/events", body, headers)


# -- the load generator -------------------------------------------------------------------------

#: ``batch``/``single``: events to the ledger's ingest; ``get``: ``GET path`` of an app (its
#: requests are "acknowledged" when answered 200).
Mode = Literal["batch", "single", "get"]


@dataclass(frozen=True)
class LoadSpec:
    """What a load-generator process sends. Picklable; the child builds the bytes itself
    (hundreds of MB for large batch runs) instead of receiving them through a pipe."""

    port: int
    auth: dict[str, str]
    mode: Mode
    requests: int
    batch_size: int
    concurrency: int
    warmup_requests: int
    seed: int
    keys: KeyStyle = "uuid7"
    path: str = "/"


@dataclass
class LoadResult:
    """What the client saw. ``acked`` counts events the server acknowledged as stored,
    warm-up included (the verification compares it with the database); ``measured_events``
    only those acknowledged during the timed phase."""

    acked: int = 0
    measured_events: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    rejected_items: int = 0
    client_cpu: float = 0.0
    transport_errors: int = 0

    @property
    def rate(self) -> float:
        return self.measured_events / self.elapsed if self.elapsed else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def build_requests(spec: LoadSpec) -> list[bytes]:
    total = spec.requests + spec.warmup_requests
    if spec.mode == "get":
        return [f"GET {spec.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()] * total
    if spec.mode == "single":
        return [single_request(e, spec.auth) for e in seed_events(total, spec.seed, spec.keys)]
    events = seed_events(total * spec.batch_size, spec.seed, spec.keys)
    return [
        batch_request([next(events) for _ in range(spec.batch_size)], spec.auth)
        for _ in range(total)
    ]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise RuntimeError("chunked responses are not supported by this client")
    return status, await reader.readexactly(length) if length else b""


async def _drive(port: int, mode: Mode, requests: list[bytes], concurrency: int) -> LoadResult:
    """Send every request over ``concurrency`` keep-alive connections, one in flight each."""
    result = LoadResult()
    pending = iter(requests)

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        try:
            for request in pending:
                started = time.perf_counter()
                writer.write(request)
                await writer.drain()
                try:
                    status, body = await _read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    result.transport_errors += 1
                    return
                result.latencies.append(time.perf_counter() - started)
                result.statuses[status] += 1
                if mode == "single":
                    result.acked += status == 202
                elif mode == "get":
                    result.acked += status == 200
                elif status == 200:
                    answer = orjson.loads(body)
                    result.acked += answer["accepted"]
                    result.rejected_items += answer["rejected"]
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(concurrency, len(requests)))))
    result.elapsed = time.perf_counter() - started
    result.measured_events = result.acked  # throughput counts acknowledged events only
    return result


def _loadgen_main(spec: LoadSpec, conn: Connection) -> None:
    """Child process: build, warm up, signal the parent, measure, report."""
    requests = build_requests(spec)
    warmup, measured = requests[: spec.warmup_requests], requests[spec.warmup_requests :]
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    warm = runner(_drive(spec.port, spec.mode, warmup, spec.concurrency)) if warmup else None
    conn.send("measuring")
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    result = runner(_drive(spec.port, spec.mode, measured, spec.concurrency))
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    if warm is not None:
        result.acked += warm.acked
        result.statuses.update(warm.statuses)
        result.rejected_items += warm.rejected_items
        result.transport_errors += warm.transport_errors
    conn.send(result)
    conn.close()


class LoadGenerator:
    """Runs one :class:`LoadSpec` in a spawned process.

    Usage: ``start()``; ``wait_measuring()`` returns once warm-up is done and the timed phase
    starts (sample server CPU, start a profiler); ``result()`` returns the client's view.
    """

    def __init__(self, spec: LoadSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._parent, child = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_loadgen_main, args=(spec, child), daemon=True)
        self._child = child

    def start(self) -> None:
        self._process.start()
        self._child.close()

    def wait_measuring(self) -> None:
        message = self._parent.recv()
        assert message == "measuring", message

    def result(self) -> LoadResult:
        result = self._parent.recv()
        self._process.join(30)
        assert isinstance(result, LoadResult)
        return result

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)


# -- process and database accounting ------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants (Linux).

    Used to report the server's CPU cost per event, which is steadier than wall-clock rates
    on a noisy machine. Returns 0.0 where ``/proc`` is unavailable.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        stack.extend(_children(current))
    return total


def process_tree_pids(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(_children(current))
    return found


@dataclass(frozen=True)
class StoredCounts:
    entries: int
    checkpoint_size: int


def stored_counts(database: Path | str, tenant: str = "default") -> StoredCounts:
    """Entries stored for ``tenant`` and the size of its latest signed checkpoint, read
    with plain SQL from a SQLite file or a PostgreSQL URL (not through the ledger's code)."""
    entries_sql = "SELECT COUNT(*) FROM entries WHERE tenant_id = {0}"
    size_sql = "SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE tenant_id = {0}"
    tenant_sql = "SELECT id FROM tenants WHERE name = {0}"
    if isinstance(database, str):
        import psycopg

        with psycopg.connect(database) as pg:
            (tenant_id,) = _one(pg.execute(tenant_sql.format("%s"), (tenant,)).fetchone())
            (entries,) = _one(pg.execute(entries_sql.format("%s"), (tenant_id,)).fetchone())
            (size,) = _one(pg.execute(size_sql.format("%s"), (tenant_id,)).fetchone())
        return StoredCounts(int(entries), int(size))
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (tenant_id,) = conn.execute(tenant_sql.format("?"), (tenant,)).fetchone()
        (entries,) = conn.execute(entries_sql.format("?"), (tenant_id,)).fetchone()
        (size,) = conn.execute(size_sql.format("?"), (tenant_id,)).fetchone()
    finally:
        conn.close()
    return StoredCounts(int(entries), int(size))


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:
        raise LookupError("expected one row")
    return row
