"""The ASGI application: routes, error handling, metrics, lifecycle.

``create_app`` takes a ready :class:`Ledger` (tests, embedding) or a
:class:`LedgerConfig`; ``app_from_env`` is the factory that ``immutablelog serve`` hands
to uvicorn, so that each worker process opens its own ledger on the shared data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from immutablelog import __version__
from immutablelog.ledger import (
    COUNT_MATCHES_ENV,
    COUNT_TIMEOUT_ENV,
    SIGNING_KEY_ENV,
    Ledger,
    LedgerConfig,
    StorageError,
)
from immutablelog.ledger.health import Fault
from immutablelog.server import erasures, errors, ingest, links, query, read, tiles, viewer
from immutablelog.server.errors import JSONResponse
from immutablelog.server.metrics import CONTENT_TYPE, METRICS_TOKEN_ENV, Metrics, token_matches
from immutablelog.server.openapi import openapi_document
from immutablelog.server.witnessing import Witnessing, WitnessingConfig

T = TypeVar("T")


#: Longest a health answer or a scrape waits for the database: probes must answer quickly
#: even while the database is slow (a slow answer is itself the finding).
_DEPENDENCY_TIMEOUT = 1.0


async def _within_timeout(call: Callable[[], T]) -> T:
    """``call`` on a worker thread, given up after :data:`_DEPENDENCY_TIMEOUT` (the thread
    finishes on its own), so the event loop never waits for the database."""
    return await asyncio.wait_for(asyncio.to_thread(call), _DEPENDENCY_TIMEOUT)


async def livez(request: Request) -> Response:
    """Liveness: the process answers. Never depends on the database, so an outage does not
    make an orchestrator restart servers that will recover by themselves."""
    return JSONResponse({"ok": True, "status": "alive", "version": __version__})


async def readyz(request: Request) -> Response:
    """Readiness (also ``/healthz``): whether this server can take writes now, and if not,
    which dependency is down, answered within about a second."""
    ledger: Ledger = request.app.state.ledger
    database = "ok"
    problem = ""
    if Fault.UNAVAILABLE not in ledger.storage.health.faults():
        try:
            await _within_timeout(ledger.storage.ping)
        except TimeoutError:
            database = "slow"
            problem = f"the database did not answer within {_DEPENDENCY_TIMEOUT:g} s"
        except StorageError as exc:
            database, problem = "unreachable", str(exc)
    faults = ledger.storage.health.faults()
    if Fault.UNAVAILABLE in faults:
        database, problem = "unreachable", faults[Fault.UNAVAILABLE]
    storage = "ok"
    if Fault.STORAGE_FULL in faults:
        storage = "full"
        problem = problem or faults[Fault.STORAGE_FULL]
    signing = "ok"
    if database == "ok":
        with contextlib.suppress(StorageError, TimeoutError):
            missing = await _within_timeout(ledger.missing_signing_keys)
            if missing:
                signing = "missing"
                problem = problem or (
                    f"this host lacks the log key {missing[0]}, which signs now (see its log)"
                )
    broken = ledger.broken_logs()
    checks = {
        "database": database,
        "storage": storage,
        "signing_keys": signing,
        # One tenant's broken log does not stop this server from serving the others.
        "logs": f"{len(broken)} refused (log_integrity)" if broken else "ok",
    }
    if problem:
        raise errors.ApiError(
            503,
            "not_ready",
            f"not ready: {problem}",
            headers={"Retry-After": "2"},
            checks=checks,
        )
    return JSONResponse({"ok": True, "status": "ok", "version": __version__, "checks": checks})


async def metrics(request: Request) -> Response:
    state = request.app.state
    ledger: Ledger = state.ledger
    # Read at scrape time (derived data is filled by whichever process holds its lock); with
    # the database away or slow, the other metrics still answer, at once.
    gauges = (state.metrics.search_backlog, state.metrics.tile_backlog)
    backlogs = await asyncio.gather(
        _within_timeout(ledger.search_backlog),
        _within_timeout(ledger.tile_backlog),
        return_exceptions=True,
    )
    for gauge, backlog in zip(gauges, backlogs, strict=True):
        if isinstance(backlog, (StorageError, TimeoutError)):
            continue
        if isinstance(backlog, BaseException):
            raise backlog
        gauge.set(backlog)
    state.metrics.observe_health(ledger.storage.health.faults(), len(ledger.broken_logs()))
    if state.observe_witnesses is not None:
        with contextlib.suppress(StorageError, TimeoutError):
            await _within_timeout(state.observe_witnesses)
    per_tenant = token_matches(request.headers.get("authorization"), state.metrics_token)
    return Response(state.metrics.exposition(per_tenant=per_tenant), media_type=CONTENT_TYPE)


async def events(request: Request) -> Response:
    """``/v1/events`` is one resource (so that a 405 lists both of its methods in Allow)."""
    if request.method == "POST":
        return await ingest.post_event(request)
    return await run_in_threadpool(query.list_events, request)


async def event(request: Request) -> Response:
    """``/v1/events/{id}``: read it, or (admin) erase its values."""
    if request.method == "DELETE":
        return await erasures.erase_event(request)
    return await run_in_threadpool(query.get_event, request)


async def erasures_resource(request: Request) -> Response:
    """``/v1/erasures``: record an erasure, or list those recorded."""
    if request.method == "POST":
        return await erasures.post_erasure(request)
    return await run_in_threadpool(erasures.list_erasures, request)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


ROUTES = [
    Route("/v1/events", events, methods=["GET", "POST"]),
    Route("/v1/events/batch", ingest.post_batch, methods=["POST"]),
    Route("/v1/events/{event_id}", event, methods=["GET", "DELETE"]),
    Route("/v1/erasures", erasures_resource, methods=["GET", "POST"]),
    Route("/v1/verify", query.verify_log, methods=["GET"]),
    Route("/v1/export", query.export, methods=["GET"]),
    Route("/v1/checkpoint", read.get_checkpoint, methods=["GET"]),
    Route("/v1/entries", read.get_entries, methods=["GET"]),
    Route("/v1/proofs/inclusion", read.get_inclusion_proof, methods=["GET"]),
    Route("/v1/proofs/consistency", read.get_consistency_proof, methods=["GET"]),
    Route("/v1/log-key", read.get_log_key, methods=["GET"]),
    Route("/v1/log-keys", read.get_log_keys, methods=["GET"]),
    Route("/tlog/{tenant}/checkpoint", tiles.get_checkpoint, methods=["GET"]),
    Route("/tlog/{tenant}/tile/{path:path}", tiles.get_tile, methods=["GET"]),
    Route("/livez", livez, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/healthz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    *viewer.ROUTES,
    *links.ROUTES,
]


def create_app(
    ledger: Ledger | LedgerConfig | None = None,
    *,
    public_tiles: Collection[str] = (),
    metrics_token: str | None = None,
    witnesses: WitnessingConfig | None = None,
) -> Starlette:
    """An app over ``ledger``; given a config, the app opens the ledger and closes it on exit.

    ``public_tiles`` names the tenants whose tlog-tiles checkpoint and hash tiles need no key.
    ``witnesses`` are asked to cosign each new checkpoint.
    ``metrics_token``, when set, is the Bearer token that shows per-tenant series on /metrics.
    """
    owned = not isinstance(ledger, Ledger)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if app.state.witnessing is not None:
            app.state.witnessing.stop()
        if owned:
            # uvicorn has finished in-flight requests: commit what is queued, then close.
            app.state.ledger.close()

    the_ledger = ledger if isinstance(ledger, Ledger) else Ledger.open(ledger)
    the_ledger.start()
    app = Starlette(
        routes=ROUTES,
        exception_handlers={
            errors.ApiError: errors.handle_api_error,
            HTTPException: errors.handle_http_exception,
            StorageError: errors.handle_storage_error,
            ClientDisconnect: errors.handle_client_disconnect,
            Exception: errors.handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.ledger = the_ledger
    app.state.metrics = Metrics()
    app.state.tile_access = tiles.TileAccess(public_tiles)
    app.state.metrics_token = metrics_token
    app.state.witnessing = None
    app.state.observe_witnesses = None
    if witnesses is not None:
        app.state.witnessing = Witnessing(the_ledger, witnesses)
        app.state.observe_witnesses = app.state.witnessing.register_metrics(
            app.state.metrics.registry
        )
        app.state.witnessing.start()
    app.state.started = time.time()
    the_ledger.add_commit_listener(app.state.metrics.committed)
    return app


def config_from_env(environ: dict[str, Any] | None = None) -> LedgerConfig:
    env = os.environ if environ is None else environ
    key_file = env.get(SIGNING_KEY_ENV)
    retention = env.get("IMMUTABLELOG_IDEMPOTENCY_RETENTION_HOURS")
    return LedgerConfig(
        data_dir=Path(env.get("IMMUTABLELOG_DATA_DIR") or "immutablelog-data"),
        log_name=env.get("IMMUTABLELOG_LOG_NAME") or LedgerConfig.log_name,
        signing_key_file=Path(key_file) if key_file else None,
        database_url=env.get("IMMUTABLELOG_DATABASE_URL") or None,
        idempotency_retention=(
            timedelta(hours=float(retention)) if retention else LedgerConfig.idempotency_retention
        ),
        count_seconds=float(env.get(COUNT_TIMEOUT_ENV) or LedgerConfig.count_seconds),
        count_matches=int(env.get(COUNT_MATCHES_ENV) or LedgerConfig.count_matches),
    )


def app_from_env() -> Starlette:
    """uvicorn factory: ``uvicorn --factory immutablelog.server.app:app_from_env``."""
    public = os.environ.get("IMMUTABLELOG_PUBLIC_TILES", "")
    app = create_app(
        config_from_env(),
        public_tiles=[t for t in public.split(",") if t],
        metrics_token=os.environ.get(METRICS_TOKEN_ENV) or None,
        witnesses=WitnessingConfig.from_env(os.environ),
    )
    tune_gc()
    return app


#: Collect the youngest generation after 10,000 new container objects instead of 700, and
#: the older ones after 20 collections of the one below instead of 10.
_GC_THRESHOLDS = (10_000, 20, 20)


def tune_gc() -> None:
    """Garbage collection for a server process (process-wide: so only from the factory).

    Ingest keeps about ten container objects per event alive across a batch (parsed JSON,
    submissions, rows, answers), so at the default thresholds the collector walked the same
    in-flight batches again and again, a tenth of the single writer's CPU. Rarer young
    collections walk them less often; freezing what start-up created (modules, the app,
    the ledger) keeps it out of the full collections, which had walked all of it.
    """
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
