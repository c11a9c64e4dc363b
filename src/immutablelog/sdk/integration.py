"""What every framework integration shares: its settings, its event builder and its share of
the pipeline to its destination, delivery controls, and the rule that a bug in the audit layer
is logged once and never fails the application's request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict

from immutablelog.sdk.options import DeliveryOptions
from immutablelog.sdk.pipeline import already_built
from immutablelog.sdk.redaction import Scrubber
from immutablelog.sdk.settings import _Unset, resolve_settings
from immutablelog.sdk.stats import DeliveryStats
from immutablelog.sdk.transport import Transport

logger = logging.getLogger("immutablelog.sdk")
_NOT_SETTINGS = frozenset({"scrubber", "transport"})


class AuditOptions(TypedDict, total=False):
    """The settings every integration takes (the Flask extension's keyword arguments)."""

    api_key: str
    api_url: str
    service_name: str | _Unset
    env: str | _Unset
    skip_paths: Iterable[str] | None
    trusted_proxies: int | None
    redact_keys: Iterable[str]
    allow_keys: Iterable[str]
    scrubber: Scrubber | None
    capture_headers: Iterable[str]
    max_body_bytes: int | None
    delivery: DeliveryOptions | None
    transport: Transport | None


class Integration:
    """Settings resolved from ``options`` and ``config``, a builder, and a pipeline lease."""

    def __init__(
        self, config: Mapping[str, Any], default_service_name: str, options: AuditOptions
    ) -> None:
        # The scrubber and the transport are objects to use, not settings to resolve.
        settings: dict[str, Any] = {
            name: value for name, value in options.items() if name not in _NOT_SETTINGS
        }
        self.settings = resolve_settings(
            config, default_service_name=default_service_name, **settings
        )
        self._builder = builder = self.settings.builder(options.get("scrubber"))
        self._build = builder.build
        self._lease = self.settings.lease(builder, owner=self, transport=options.get("transport"))
        self._hook_error_logged = False
        self._actor_error_logged = False

    def submit(self, capture: Any) -> None:
        """Build ``capture``'s event and queue it. Called once the response is sent (its body
        closed) by the WSGI middleware, so the build costs the request nothing, and as the
        response is handed back by Django's; here rather than in the worker either way: a batch
        built there holds the GIL while requests wait for it (BENCHMARKS.md)."""
        self._lease.pipeline.submit(self._build(capture), already_built)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until the events recorded so far are delivered; False on timeout."""
        return self._lease.pipeline.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush and let go of the pipeline (also done at exit)."""
        return self._lease.close(timeout)

    def stats(self) -> DeliveryStats:
        """Delivery counters: queued, sent, retried, spooled, dead_lettered, dropped, …"""
        return self._lease.pipeline.stats()

    def _actor_from(self, load: Callable[[Any], Any], source: Any) -> Any:
        """``load(source)``: the application's actor function. If it raises (a database it may
        not query, say), the event is recorded without an actor instead of not at all, and the
        error is logged once, as the Flask extension does with its ``actor_loader``."""
        try:
            return load(source)
        except Exception:
            if not self._actor_error_logged:
                self._actor_error_logged = True
                logger.exception(
                    "ImmutableLog: the actor function raised; actor left empty (logged once)"
                )
            return None

    def _log_hook_error(self) -> None:
        # A bug in the audit layer must not fail the application's request; log it once.
        if not self._hook_error_logged:
            self._hook_error_logged = True
            logger.exception("ImmutableLog: error while recording a request (logged once)")
