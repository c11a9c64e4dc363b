"""The hello-world apps that ``benchmarks/server_overhead.py`` serves with real servers: FastAPI
(``asgi``, for uvicorn) and Django (``wsgi``, for gunicorn), each bare or instrumented as the
environment says:

* ``BENCH_VARIANT``: ``bare``, ``ours`` (ImmutableLog's middleware, delivering to
  ``BENCH_URL`` with ``BENCH_API_KEY``), ``sentry`` (sentry-sdk, errors only), ``sentry-tracing``
  (sentry-sdk, every request traced) or ``otel`` (OpenTelemetry's instrumentation for the
  framework, spans batched to an OTLP/HTTP endpoint). Sentry and OTLP send to the local sink at
  ``BENCH_SINK_PORT``.
* ``BENCH_SERVICE``: the service name our events carry (the benchmark counts them by it).
* ``BENCH_SPOOL``: our spool directory.

Only the module attribute the server asks for is built.
"""

from __future__ import annotations

import os
from typing import Any

VARIANT = os.environ.get("BENCH_VARIANT", "bare")
SERVICE = os.environ.get("BENCH_SERVICE", "bench")
SINK = f"127.0.0.1:{os.environ.get('BENCH_SINK_PORT', '9')}"
BODY = "Hello, World!"


def _ours_delivery() -> Any:
    from immutablelog.sdk import DeliveryOptions

    # Nothing dropped under a saturating load, and all of it delivered before the process ends.
    return DeliveryOptions(
        spool_dir=os.environ["BENCH_SPOOL"], max_queue=1_000_000, shutdown_timeout=300
    )


def _sentry(tracing: bool) -> None:
    import sentry_sdk

    sentry_sdk.init(
        dsn=f"http://public@{SINK}/1",
        traces_sample_rate=1.0 if tracing else None,
    )


def _otel_provider() -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    exporter = OTLPSpanExporter(endpoint=f"http://{SINK}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _instrument_common() -> None:
    if VARIANT in ("sentry", "sentry-tracing"):
        _sentry(VARIANT == "sentry-tracing")
    elif VARIANT == "otel":
        _otel_provider()
    elif VARIANT not in ("bare", "ours"):
        raise SystemExit(f"unknown variant {VARIANT}")


def build_asgi() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    _instrument_common()
    app = FastAPI()

    @app.get("/hello", response_class=PlainTextResponse)
    async def hello() -> str:
        return BODY

    if VARIANT == "otel":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app)
    if VARIANT == "ours":
        from immutablelog.asgi import AuditMiddleware

        return AuditMiddleware(
            app,
            api_key=os.environ["BENCH_API_KEY"],
            api_url=os.environ["BENCH_URL"],
            service_name=SERVICE,
            delivery=_ours_delivery(),
        )
    return app


def hello_view(request: Any) -> Any:
    from django.http import HttpResponse

    response = HttpResponse(BODY, content_type="text/plain")
    response["Content-Length"] = str(len(BODY))  # keep-alive without chunking
    return response


def build_wsgi() -> Any:
    import django
    from django.conf import settings
    from django.urls import path

    _instrument_common()
    settings.configure(
        SECRET_KEY="bench",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=["immutablelog.django.AuditMiddleware"] if VARIANT == "ours" else [],
        IMMUTABLELOG={
            "api_key": os.environ.get("BENCH_API_KEY", ""),
            "api_url": os.environ.get("BENCH_URL", ""),
            "service_name": SERVICE,
            "delivery": _ours_delivery() if VARIANT == "ours" else None,
        },
    )
    globals()["urlpatterns"] = [path("hello", hello_view)]
    if VARIANT == "otel":
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument()
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def __getattr__(name: str) -> Any:
    builders = {"asgi": build_asgi, "wsgi": build_wsgi}
    if name not in builders:
        raise AttributeError(name)
    app = builders[name]()
    globals()[name] = app
    return app
