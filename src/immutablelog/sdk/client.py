"""The framework-neutral client: custom audit events from any Python code.

Background jobs, CLI commands, queue consumers and non-Flask services record events with
:class:`ImmutableLogClient` and get the same delivery guarantees as the Flask extension (which is
built on the same pieces): the call returns after an in-memory append, one worker thread ships
batches, outages spool to disk, permanent rejections go to a dead-letter file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from immutablelog.sdk.capture import EventBuilder, custom_capture, validate_kind
from immutablelog.sdk.context import current as current_context
from immutablelog.sdk.options import DeliveryOptions, default_spool_dir
from immutablelog.sdk.pipeline import DeliveryPipeline
from immutablelog.sdk.redaction import Redactor, Scrubber
from immutablelog.sdk.sharing import PIPELINES, PipelineLease
from immutablelog.sdk.stats import DeliveryStats
from immutablelog.sdk.transport import (
    HttpTransport,
    Transport,
    embedded_data_dir,
    embedded_transport,
)

#: Environment variables read when no explicit value is given (the ``IMTBL_`` ones are the
#: seed's; the ``IMMUTABLELOG_`` spellings match the Flask config keys).
URL_ENV_VARS = ("IMMUTABLELOG_URL", "IMTBL_URL")
API_KEY_ENV_VARS = ("IMMUTABLELOG_API_KEY", "IMTBL_API_KEY")
SPOOL_DIR_ENV_VARS = ("IMMUTABLELOG_SPOOL_DIR", "IMTBL_SPOOL_DIR")


def from_env(names: Iterable[str]) -> str | None:
    """The first non-empty environment variable among ``names``."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def lease_pipeline(
    builder: EventBuilder,
    *,
    url: str,
    api_key: str,
    service_name: str,
    options: DeliveryOptions,
    transport: Transport | None = None,
    owner: object,
) -> PipelineLease:
    """A share of the pipeline from a builder to its destination — the given transport, HTTP if
    a URL is set, else embedded mode (a local ledger in ``$IMMUTABLELOG_DATA_DIR``) — made if
    there is none (see :mod:`immutablelog.sdk.sharing`); given back by ``lease.close()`` or
    when ``owner`` is garbage-collected."""
    spool_dir = _spool_dir(options, service_name, url, api_key)
    destination = (
        url,
        api_key,
        id(transport) if transport is not None else None,  # the pipeline keeps it alive
        embedded_data_dir() if not url and transport is None else None,
        spool_dir,
        options,
    )

    def make() -> DeliveryPipeline:
        sender = transport or _default_transport(url, api_key, options)
        return DeliveryPipeline(builder.build, sender, options, spool_dir=spool_dir)

    return PIPELINES.lease(destination, make, owner)


def _default_transport(url: str, api_key: str, options: DeliveryOptions) -> Transport:
    if url:
        return HttpTransport(
            url,
            api_key,
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
        )
    return embedded_transport()


def _spool_dir(options: DeliveryOptions, service_name: str, url: str, api_key: str) -> str | None:
    if options.spool_dir is False:
        return None
    return (
        options.spool_dir
        or from_env(SPOOL_DIR_ENV_VARS)
        or default_spool_dir(service_name, url, api_key)
    )


class ImmutableLogClient:
    """Record audit events from any code, with the SDK's delivery guarantees.

    ::

        audit = ImmutableLogClient(service_name="billing-worker")   # URL/key from the env
        audit.record("invoice.deleted", invoice_id=42, actor="alice")
        audit.flush()

    ``api_url``/``api_key`` default to ``IMMUTABLELOG_URL``/``IMTBL_URL`` and
    ``IMMUTABLELOG_API_KEY``/``IMTBL_API_KEY``. ``transport`` replaces the HTTP transport (the
    seam for embedded mode and for tests). The client is thread-safe and fork-safe; one per
    process and destination is enough. It is drained automatically at interpreter exit.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        service_name: str = "python-service",
        env: str = "production",
        redact_keys: Iterable[str] = (),
        allow_keys: Iterable[str] = (),
        scrubber: Scrubber | None = None,
        delivery: DeliveryOptions | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.api_url = api_url or from_env(URL_ENV_VARS) or ""
        api_key = api_key or from_env(API_KEY_ENV_VARS) or ""
        self.service_name = service_name
        self.env = env
        self.builder = EventBuilder(
            service_name=service_name,
            env=env,
            redactor=Redactor(redact_keys, allow_keys),
            scrubber=scrubber,
        )
        self._build = self.builder.build
        self._lease = lease_pipeline(
            self.builder,
            url=self.api_url,
            api_key=api_key,
            service_name=service_name,
            options=delivery or DeliveryOptions(),
            transport=transport,
            owner=self,
        )

    @property
    def pipeline(self) -> DeliveryPipeline:
        """The pipeline this client's events go through (shared with others to the same place)."""
        return self._lease.pipeline

    def record(
        self,
        event_name: str,
        kind: str = "info",
        *,
        message: str | None = None,
        actor: Any = None,
        request_id: str | None = None,
        **data: Any,
    ) -> str:
        """Queue a custom event and return its id (its UUIDv7 idempotency key).

        ``data`` lands in the payload's ``data`` object after redaction; ``actor`` (a string or
        a dict) in ``context.actor``; ``request_id`` correlates the event with a request or job
        (default: the current audit context's — the request that queued this job — else the
        event's own id; the actor likewise). Returns immediately; delivery happens in the
        background.
        """
        validate_kind(kind)
        context = current_context()
        if context is not None:  # work a request started (a job, a copied context)
            request_id = request_id or context.request_id
            actor = actor if actor is not None else context.actor()
        capture = custom_capture(
            event_name,
            kind,
            message=message,
            data=data,
            actor=actor,
            request=None,
            request_id=request_id,
        )
        self._lease.pipeline.submit(capture, self._build)
        return capture.event_id

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until the events recorded so far are delivered; False on timeout."""
        return self.pipeline.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush with a bounded timeout and let go of the pipeline (also done at exit, or when
        the client is garbage-collected); the last user of a pipeline closes it."""
        return self._lease.close(timeout)

    def stats(self) -> DeliveryStats:
        """Delivery counters: queued, sent, retried, spooled, dead_lettered, dropped, …"""
        return self.pipeline.stats()

    def logging_handler(self, level: int = logging.INFO) -> logging.Handler:
        """A :class:`logging.Handler` that records log records through this client."""
        from immutablelog.sdk.log_handler import ImmutableLogHandler

        return ImmutableLogHandler(self, level=level)

    def __enter__(self) -> ImmutableLogClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
