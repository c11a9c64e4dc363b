"""What does auditing cost a request in Starlette/FastAPI (ASGI) and Django (WSGI)?

Run from the repository root::

    .venv/bin/python -m benchmarks.framework_overhead                  # both frameworks
    .venv/bin/python -m benchmarks.framework_overhead --rounds 9 --requests 5000

Each framework's hello-world app is called in-process (an ASGI call with a prepared scope, a
WSGI call with a prepared environ: no sockets, so what is measured is the middleware's own
cost), bare and wrapped in our middleware, in alternating rounds in one process so that machine
noise hits both alike. Our events are built, batched and acknowledged by a transport without a
socket (everything but the network, which the Flask benchmark measures against a real ledger);
after each round the worker's delivery count must equal the requests made. sentry-sdk (errors
only), when installed, is measured the same way for comparison. Reported: per-request latency
p50/p99 (medians over rounds) and each variant's added microseconds over bare in the same
round, and throughput relative to bare.

``--instructions`` counts instead, under valgrind's callgrind, the instructions per request of
the bare app and of ours in three steps — the request path alone (every event's
``EventBuilder.build`` replaced by a ready-made event), with each event built (the worker
asleep, events gathering in the queue), and with delivery (the worker batching every event into
a transport without a socket) — from the difference of two runs of 500 and 2,500 requests:
counts, not seconds, the same on a busy machine as on an idle one. ``--baseline REV`` counts ours
as of git revision ``REV`` too, in the same run::

    .venv/bin/python -m benchmarks.framework_overhead --instructions --baseline main
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from immutablelog.sdk import DeliveryOptions
from immutablelog.sdk import transport as _transport
from immutablelog.sdk.transport import ItemResult

Runner = Callable[[], None]
#: The transport's own shared verdict (by its older name in a baseline's code).
_STORED = getattr(_transport, "ACCEPTED", None) or _transport._ACCEPTED


class Acknowledging:
    """A transport with no socket: counts what it is given, acknowledges everything."""

    def __init__(self) -> None:
        self.delivered = 0

    def send_batch(self, events: Any) -> list[ItemResult]:
        b",".join([event.encoded for event in events if event.encoded])  # the body's cost
        self.delivered += len(events)
        return [_STORED] * len(events)  # as HttpTransport reads a minimal answer

    def close(self) -> None:
        pass


def _delivery() -> DeliveryOptions:
    return DeliveryOptions(spool_dir=False, max_queue=1_000_000)


def _asleep() -> DeliveryOptions:
    """Delivery that never wakes during a count: events gather in the queue."""
    return DeliveryOptions(
        spool_dir=False, max_queue=10**6, max_batch_events=10**6, batch_interval=3600
    )


# -- ASGI (Starlette) ---------------------------------------------------------------------------


def asgi_runners(
    transport: Acknowledging, delivery: DeliveryOptions | None = None
) -> dict[str, tuple[Runner, Any]]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from immutablelog.asgi import AuditMiddleware

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    bare = Starlette(routes=[Route("/hello", hello)])
    ours = AuditMiddleware(
        Starlette(routes=[Route("/hello", hello)]),
        service_name="bench-asgi",
        delivery=delivery or _delivery(),
        transport=transport,
    )
    loop = asyncio.new_event_loop()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/hello", "raw_path": b"/hello", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def runner(app: Any) -> Runner:
        def run() -> None:
            loop.run_until_complete(app(dict(scope), receive, send))

        return run

    return {"bare": (runner(bare), None), "ours": (runner(ours), ours)}


# -- Django (WSGI) ------------------------------------------------------------------------------


def django_runners(
    transport: Acknowledging, delivery: DeliveryOptions | None = None
) -> dict[str, tuple[Runner, Any]]:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="bench",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[],
            IMMUTABLELOG={
                "service_name": "bench-django",
                "delivery": delivery or _delivery(),
                "transport": transport,
            },
        )
        django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    from immutablelog.django import AuditMiddleware

    bare = WSGIHandler()
    settings.MIDDLEWARE = ["immutablelog.django.AuditMiddleware"]
    ours = WSGIHandler()
    middleware = ours._middleware_chain
    while not isinstance(middleware, AuditMiddleware):  # find ours in the chain, for flush()
        middleware = middleware.__closure__[0].cell_contents  # type: ignore[union-attr]
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/hello", "QUERY_STRING": "", "SERVER_NAME": "bench",
        "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "bench", "wsgi.url_scheme": "http",
    }  # fmt: skip

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    def runner(handler: Any) -> Runner:
        def run() -> None:
            import io

            request = dict(environ, **{"wsgi.input": io.BytesIO(b"")})
            response = handler(request, start_response)
            for _ in response:
                pass
            response.close()

        return run

    return {"bare": (runner(bare), None), "ours": (runner(ours), middleware)}


def hello_view(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse("hello")


def _urlpatterns() -> list[Any]:
    from django.urls import path

    return [path("hello", hello_view)]


def __getattr__(name: str) -> Any:  # Django reads ROOT_URLCONF's urlpatterns from this module
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


# -- measuring ----------------------------------------------------------------------------------


def latencies(run: Runner, requests: int) -> list[float]:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(requests):
        started = clock()
        run()
        samples.append((clock() - started) / 1000)
    return samples


def measure(
    name: str, runners: dict[str, tuple[Runner, Any]], transport: Acknowledging, args: Any
) -> None:
    for run, _ in runners.values():
        for _ in range(500):  # warm up
            run()
    p50: dict[str, list[float]] = {v: [] for v in runners}
    p99: dict[str, list[float]] = {v: [] for v in runners}
    added50: dict[str, list[float]] = {v: [] for v in runners if v != "bare"}
    added99: dict[str, list[float]] = {v: [] for v in runners if v != "bare"}
    rate: dict[str, list[float]] = {v: [] for v in runners}
    for round_no in range(args.rounds):
        order = list(runners)
        if round_no % 2:
            order.reverse()
        this_round: dict[str, list[float]] = {}
        for variant in order:
            run, middleware = runners[variant]
            delivered_before = transport.delivered
            started = time.perf_counter()
            samples = latencies(run, args.requests)
            rate[variant].append(args.requests / (time.perf_counter() - started))
            if middleware is not None:
                assert middleware.flush(30), "events not delivered"
                delivered = transport.delivered - delivered_before
                assert delivered == args.requests, (variant, delivered, args.requests)
            samples.sort()
            this_round[variant] = samples
            p50[variant].append(samples[len(samples) // 2])
            p99[variant].append(samples[int(len(samples) * 0.99)])
        for variant in added50:
            added50[variant].append(p50[variant][-1] - p50["bare"][-1])
            added99[variant].append(p99[variant][-1] - p99["bare"][-1])
    med = statistics.median
    print(f"\n{name}: {args.rounds} rounds x {args.requests} requests, medians over rounds")
    print(f"{'variant':10} {'p50 µs':>8} {'p99 µs':>8} {'+p50 µs':>8} {'+p99 µs':>8} {'rate':>7}")
    for variant in runners:
        plus50 = f"{med(added50[variant]):8.1f}" if variant in added50 else f"{'':8}"
        plus99 = f"{med(added99[variant]):8.1f}" if variant in added99 else f"{'':8}"
        ratio = med(rate[variant]) / med(rate["bare"])
        print(
            f"{variant:10} {med(p50[variant]):8.1f} {med(p99[variant]):8.1f} "
            f"{plus50} {plus99} {ratio:6.2f}x"
        )


# -- counting instructions ----------------------------------------------------------------------

#: What a count runs: the bare app, or ours up to one of these steps.
STEPS = {
    "path": "request path",
    "built": "+ build",
    "delivered": "+ delivery",
}
COUNTS = (500, 2500)


def count(framework: str, step: str, requests: int) -> None:
    """Serve ``requests`` requests in-process and exit: the body of one callgrind run."""
    transport = Acknowledging()
    if step == "path":
        from immutablelog.sdk.capture import EventBuilder
        from immutablelog.sdk.events import WireEvent

        ready = WireEvent("0", "{}", {"type": "info", "event_name": "e", "service": "s"})
        EventBuilder.build = lambda self, capture: ready  # type: ignore[method-assign]
    delivery = _delivery() if step == "delivered" else _asleep()
    runners = (asgi_runners if framework == "asgi" else django_runners)(transport, delivery)
    run, middleware = runners["bare" if step == "bare" else "ours"]
    for _ in range(requests):
        run()
    if step == "delivered":
        assert middleware.flush(600) and transport.delivered == requests, transport.delivered
    os._exit(0)  # no exit drain: nothing to measure there


def callgrind_total(framework: str, step: str, requests: int, src: Path | None) -> int:
    """Instructions of one run of ``requests`` requests (callgrind), with the SDK imported from
    ``src`` (a baseline's) or this checkout."""
    from benchmarks.common import callgrind_instructions
    from benchmarks.flask_overhead import worker_pythonpath

    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "benchmarks.framework_overhead", "--count",
               f"{framework}:{step}:{requests}"]  # fmt: skip
    return callgrind_instructions(command, worker_pythonpath(src or root / "src"))


def count_all(frameworks: list[str], baseline: str | None) -> None:
    """Print, per framework, the instructions per request of bare and of each step of ours (and
    of the baseline's), each the difference of two runs; the runs go in parallel, one per CPU
    (a count does not depend on what else the machine does)."""
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.flask_overhead import export_baseline

    with tempfile.TemporaryDirectory() as tmp:
        sources: dict[str, Path | None] = {"ours": None}
        if baseline:
            sources[f"baseline ({baseline})"] = export_baseline(baseline, Path(tmp))
        jobs = [(f, "bare", None) for f in frameworks] + [
            (f, step, label) for f in frameworks for label in sources for step in STEPS
        ]
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            futures = {
                (job, requests): pool.submit(
                    callgrind_total, job[0], job[1], requests, sources.get(job[2] or "ours")
                )
                for job in jobs
                for requests in COUNTS
            }
            per_request = {
                job: (futures[job, COUNTS[1]].result() - futures[job, COUNTS[0]].result())
                / (COUNTS[1] - COUNTS[0])
                for job in jobs
            }
    for framework in frameworks:
        bare = per_request[framework, "bare", None]
        print(f"\n{framework}: instructions per request (callgrind, in-process)\n")
        print("| variant | step | instructions | added to bare | the step's own |")
        print("|---|---|---:|---:|---:|")
        print(f"| bare | – | {bare:,.0f} | – | – |")
        for label in sources:
            before = bare
            for step, step_label in STEPS.items():
                total = per_request[framework, step, label]
                print(
                    f"| {label} | {step_label} | {total:,.0f} | {total - bare:+,.0f} | "
                    f"{total - before:+,.0f} |"
                )
                before = total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--frameworks", default="asgi,django")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind instead"
    )
    parser.add_argument("--baseline", metavar="REV", help="with --instructions: ours at REV too")
    parser.add_argument("--count", help=argparse.SUPPRESS)  # FRAMEWORK:STEP:REQUESTS, one run
    args = parser.parse_args(argv)
    if args.count:
        framework, step, requests = args.count.split(":")
        count(framework, step, int(requests))
    if args.instructions:
        count_all(args.frameworks.split(","), args.baseline)
        return 0
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}, load {os.getloadavg()[0]:.1f}")
    for name in args.frameworks.split(","):
        transport = Acknowledging()
        runners = asgi_runners(transport) if name == "asgi" else django_runners(transport)
        measure(name, runners, transport, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
