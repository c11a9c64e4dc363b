"""Framework-neutral SDK: capture, redaction and background delivery of audit events.

Integrations (the Flask extension today; WSGI/ASGI, Django, FastAPI later) are thin layers over
these pieces: they fill a capture in the request thread and submit it to a
:class:`DeliveryPipeline`, which does everything else; one background thread per process
serves every pipeline (:mod:`immutablelog.sdk.worker`).
"""

from __future__ import annotations

from immutablelog.sdk.capture import (
    CustomCapture,
    EventBuilder,
    RequestCapture,
    RequestInfo,
    accept_request_id,
    client_ip,
)
from immutablelog.sdk.client import ImmutableLogClient
from immutablelog.sdk.events import MAX_PAYLOAD_BYTES, WireEvent, clamp_payload
from immutablelog.sdk.log_handler import ImmutableLogHandler
from immutablelog.sdk.options import DeliveryOptions
from immutablelog.sdk.pipeline import DeliveryPipeline
from immutablelog.sdk.redaction import FILTERED, Redactor, Scrubber
from immutablelog.sdk.stats import DeliveryStats
from immutablelog.sdk.transport import (
    HttpTransport,
    ItemResult,
    RejectedBatchError,
    RetryableDeliveryError,
    Transport,
)

__all__ = [
    "FILTERED",
    "MAX_PAYLOAD_BYTES",
    "CustomCapture",
    "DeliveryOptions",
    "DeliveryPipeline",
    "DeliveryStats",
    "EventBuilder",
    "HttpTransport",
    "ImmutableLogClient",
    "ImmutableLogHandler",
    "ItemResult",
    "Redactor",
    "RejectedBatchError",
    "RequestCapture",
    "RequestInfo",
    "RetryableDeliveryError",
    "Scrubber",
    "Transport",
    "WireEvent",
    "accept_request_id",
    "clamp_payload",
    "client_ip",
]
