"""What does auditing cost a Flask request? Bare app vs the seed's extension vs ours, vs the tools
users already know (sentry-sdk errors-only, OpenTelemetry with a batching OTLP exporter).

Usage (from the repository root)::

    .venv/bin/python benchmarks/flask_overhead.py                 # starts a ledger server itself
    .venv/bin/python benchmarks/flask_overhead.py --rounds 7 --requests 20000
    .venv/bin/python benchmarks/flask_overhead.py --url http://127.0.0.1:8080 --api-key iml_live_…
    .venv/bin/python benchmarks/flask_overhead.py --pin        # on a quiet machine with ≥ 2 CPUs
    .venv/bin/python benchmarks/flask_overhead.py --variants bare,ours --baseline main  # A/B
    .venv/bin/python benchmarks/flask_overhead.py --baseline main --instructions  # callgrind

Method:

* One hello-world view, driven through Flask's test client (no sockets on the request path, so
  what is measured is the extension's own cost).
* Every variant runs in its own fresh process; rounds interleave the variants (the order rotates
  each round), so drift in machine load hits all of them alike. Reported numbers are medians
  over rounds; "added" is each round's variant minus that round's bare app.
* Latency: p50/p99/p99.9 over ``--requests`` sequential requests after a warm-up. On Linux
  the request thread's run-queue wait (``/proc/thread-self/schedstat``: time it was runnable
  but another process had the CPU) is read around each request, outside the timed span, and a
  second p99 is reported without it. The plain p99 stays the headline; the second one tells the
  app's own cost (our code, the GIL, GC) from a machine shared with the ledger server and other
  jobs. Waiting for the GIL is not run-queue time, so it stays in both.
  Throughput: requests/s of a saturated loop for ``--seconds``.
* The ledger server runs on the same machine but, by default, at ``nice`` 10 (``--server-nice``)
  — in production it runs elsewhere; here it would otherwise take CPU from the measured app
  whenever the machine has fewer free cores than both need, and charge its ingest work to our
  latency. It still gets every CPU cycle the app leaves idle.
* Events arrived: the seed and ours send to a real ``immutablelog serve`` process; after the
  loop the worker flushes (outside the timing) and the events stored under the variant's service
  name are counted. OpenTelemetry's spans go to a local OTLP sink that counts them. sentry-sdk in
  errors-only mode sends nothing for successful requests (expected: 0).

Two controls split ours into parts (``--variants bare,ours,ours-capture,ours-offline``): the
request path alone (``ours-capture``, whose events are built and sent only by the flush after
the loop) and everything but the network (``ours-offline``).

``--baseline REV`` adds a variant ``baseline``: ours as of git revision ``REV`` of this
repository (its ``src`` exported to a temporary directory), interleaved with the others in the
same rounds, so a change to the SDK is measured before and after in one run.

``--instructions`` counts, under valgrind's callgrind, the instructions per request of bare,
ours and the baseline instead — the request path alone (ours capturing only, its worker
asleep), and with the worker building and batching every event (``ours-offline``'s transport
without a socket): counts, not seconds, so a comparison that a busy machine cannot blur.

The optional variants need ``sentry-sdk``, ``opentelemetry-instrumentation-flask`` and
``opentelemetry-exporter-otlp-proto-http``; missing ones are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ALL_VARIANTS = ("bare", "seed", "ours", "sentry", "otel")

#: Controls, run only when named in ``--variants``: how much of ours is the request path alone
#: (``ours-capture``: events queue up during the loop and are built and sent only by the flush
#: after it) and how much is the network (``ours-offline``: built and batched as usual,
#: acknowledged by a transport with no socket).
CONTROL_VARIANTS = ("ours-capture", "ours-offline")
DELIVERING = ("seed", "ours", "ours-capture", "baseline")


def worker_pythonpath(src: Path) -> str:
    """The app processes import the SDK from ``src`` (this checkout's, or the baseline's),
    whatever an installed (editable) copy points at, and keep the caller's PYTHONPATH behind."""
    return os.pathsep.join([str(src), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def export_baseline(revision: str, tmp: Path) -> Path:
    """``src`` of ``revision`` of this repository, exported under ``tmp``; its path."""
    target = tmp / "baseline"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


# -- the instrumented app (runs in a worker process) ------------------------------------------


def build_app(variant: str, url: str, api_key: str, service: str, sink_port: int) -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get("/")
    def hello() -> str:
        return "Hello, World!"

    if variant == "seed":
        from tests.fixtures.seed_middleware import ImmutableLogAudit as SeedAudit

        SeedAudit(app, api_key=api_key, api_url=url, service_name=service)
    elif variant in ("ours", "baseline", *CONTROL_VARIANTS):
        _instrument_ours(app, variant, url, api_key, service)
    elif variant == "sentry":
        import sentry_sdk
        from sentry_sdk.integrations.flask import FlaskIntegration

        sentry_sdk.init(
            dsn=f"http://public@127.0.0.1:{sink_port}/1",
            integrations=[FlaskIntegration()],
            traces_sample_rate=None,  # errors only
        )
    elif variant == "otel":
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{sink_port}/v1/traces"))
        )
        trace.set_tracer_provider(provider)
        FlaskInstrumentor().instrument_app(app)
    elif variant != "bare":
        raise SystemExit(f"unknown variant {variant}")
    return app


def _instrument_ours(app: Any, variant: str, url: str, api_key: str, service: str) -> None:
    from immutablelog.flask import ImmutableLogAudit
    from immutablelog.sdk import DeliveryOptions
    from immutablelog.sdk.transport import ItemResult, Transport

    delivery = DeliveryOptions(spool_dir=tempfile.mkdtemp(prefix="bench-spool-"), max_queue=100_000)
    transport: Transport | None = None
    if variant == "ours-capture":
        delivery = replace(
            delivery, max_queue=1_000_000, max_batch_events=1_000_000, batch_interval=3600
        )
    elif variant == "ours-offline":

        class Acknowledging:
            def send_batch(self, events: Any) -> list[ItemResult]:
                b",".join([event.encoded for event in events])  # what the body would cost
                return [ItemResult(True) for _ in events]

            def close(self) -> None:
                pass

        transport = Acknowledging()
    ImmutableLogAudit(
        app,
        api_key=api_key,
        api_url=url,
        service_name=service,
        delivery=delivery,
        transport=transport,
    )


def _cpu_wait_clock() -> Any:
    """Seconds this thread has spent runnable but not running (Linux), else a constant 0.

    ``os.pread`` releases the GIL, so each request is framed by two releases, as it is in
    production by the server's socket read and write (the test client has no socket): that is
    where a real app's other threads, our delivery worker among them, get the GIL.
    """
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        os.pread(fd, 128, 0)
    except OSError:
        return lambda: 0.0
    return lambda: int(os.pread(fd, 128, 0).split()[1]) / 1e9


def count_requests(variant: str, requests: int, deliver: bool) -> None:
    """Serve ``requests`` requests and exit: the body of an ``--instructions`` measurement.

    Without ``deliver``, ours captures only (its events gather in the queue; the worker thread
    sleeps throughout), so what differs between two request counts is the request path alone,
    instruction for instruction. With ``deliver``, the worker builds, batches and settles every
    event as in ``ours-offline`` (a transport without a socket), and the count includes its
    thread (batch sizes follow the clock, so this one is close, not exact, from run to run).
    """
    if deliver:
        app = build_app("ours-offline", "", "", "bench", 0)
    else:
        app = build_app("bare", "", "", "bench", 0)
    if variant != "bare" and not deliver:
        from immutablelog.flask import ImmutableLogAudit
        from immutablelog.sdk import DeliveryOptions

        endless = DeliveryOptions(
            spool_dir=False, max_queue=10**6, max_batch_events=10**6, batch_interval=3600
        )
        ImmutableLogAudit(app, api_key="k", api_url="http://127.0.0.1:9", delivery=endless)
    client = app.test_client()
    for _ in range(requests):
        client.get("/")
    if deliver:
        assert app.extensions["immutablelog"].flush(600)
    os._exit(0)  # no exit drain: nothing to measure there


def measure_instructions(variants: list[str], sources: dict[str, Path]) -> str:
    """Instructions per request under callgrind (counts, not seconds: the same on a busy
    machine as on an idle one), from the difference of two runs of 200 and 1200 requests."""
    from benchmarks.common import callgrind_instructions

    lines = [
        "| variant | instructions per request | added to bare |",
        "|---|---:|---:|",
    ]
    per_request: dict[str, float] = {}
    runs = [(v, False) for v in variants] + [(v, True) for v in variants if v != "bare"]
    for variant, deliver in runs:
        counts = []
        for requests in (200, 1200):
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--count-requests",
                str(requests),
                *(["--count-delivery"] if deliver else []),
                "--worker",
                variant,
            ]
            counts.append(callgrind_instructions(command, worker_pythonpath(sources[variant])))
        label = f"{variant}, {'building and batching (offline)' if deliver else 'request path'}"
        per_request[label] = (counts[1] - counts[0]) / 1000
        bare = per_request.get("bare, request path", per_request[label])
        lines.append(f"| {label} | {per_request[label]:,.0f} | {per_request[label] - bare:+,.0f} |")
    return "\n".join(lines)


def run_worker(args: argparse.Namespace) -> None:
    if PIN:
        os.sched_setaffinity(0, APP_CPUS)
    app = build_app(args.worker, args.url, args.api_key, args.service, args.sink_port)
    client = app.test_client()
    clock = time.perf_counter
    cpu_wait = _cpu_wait_clock()
    for _ in range(args.warmup):
        client.get("/")
    samples = []
    own = []  # each sample minus the time the thread waited for a CPU
    for _ in range(args.requests):
        waited = cpu_wait()
        start = clock()
        response = client.get("/")
        elapsed = clock() - start
        waited = cpu_wait() - waited
        samples.append(elapsed)
        own.append(max(0.0, elapsed - waited))
        assert response.status_code == 200
    samples.sort()
    own.sort()
    count = 0
    cpu_start = time.process_time()  # all threads of this process: includes our worker
    thread_cpu_start = time.thread_time()
    deadline = clock() + args.seconds
    while clock() < deadline:
        for _ in range(100):
            client.get("/")
        count += 100
    elapsed = args.seconds + (clock() - deadline)
    cpu = time.process_time() - cpu_start
    thread_cpu = time.thread_time() - thread_cpu_start
    result: dict[str, Any] = {
        "variant": args.worker,
        "p50_us": samples[len(samples) // 2] * 1e6,
        "p99_us": samples[int(len(samples) * 0.99)] * 1e6,
        "p999_us": samples[int(len(samples) * 0.999)] * 1e6,
        "p99_own_us": own[int(len(own) * 0.99)] * 1e6,
        "rps": count / elapsed,
        "cpu_us_per_request": cpu / count * 1e6,
        "thread_cpu_us_per_request": thread_cpu / count * 1e6,
        "sent_requests": args.warmup + args.requests + count,
    }
    if args.worker in ("ours", "baseline", *CONTROL_VARIANTS):
        audit = app.extensions["immutablelog"]
        result["flushed"] = audit.flush(120)
        result["stats"] = audit.stats().as_dict()
    elif args.worker == "otel":
        from opentelemetry import trace

        trace.get_tracer_provider().force_flush(60_000)  # type: ignore[attr-defined]
    print(json.dumps(result), flush=True)


# -- the orchestrator ---------------------------------------------------------------------------


class _Sink:
    """A local stand-in for Sentry's and an OTLP collector's ingest: counts what arrives."""

    def __init__(self) -> None:
        self.spans = 0
        self.sentry_envelopes = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/v1/traces"):
                    sink._count_spans(body)
                else:
                    with sink.lock:
                        sink.sentry_envelopes += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _count_spans(self, body: bytes) -> None:
        try:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest,
            )
        except ImportError:
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        with self.lock:
            self.spans += spans


def available(variant: str) -> bool:
    modules = {
        "sentry": ["sentry_sdk"],
        "otel": ["opentelemetry.instrumentation.flask", "opentelemetry.exporter.otlp.proto.http"],
    }.get(variant, [])
    try:
        for name in modules:
            __import__(name)
    except ImportError:
        return False
    return True


def start_server(tmp: Path, nice: int) -> Any:
    from tests.live import LiveServer

    server = LiveServer(tmp / "ledger")
    server.start()
    if PIN:
        os.sched_setaffinity(server.process.pid, SERVER_CPUS)
    if nice and hasattr(os, "setpriority"):
        # Every thread it has now; threads it starts later inherit their creator's niceness.
        tasks = Path(f"/proc/{server.process.pid}/task")
        for tid in [int(t.name) for t in tasks.iterdir()] if tasks.exists() else []:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    return server


# --pin (on a quiet machine with two or more CPUs): the measured app processes get the first
# CPU and the ledger server the others, so the server's work on the events does not compete with
# the request loop being measured. On a shared machine, leave scheduling to the kernel.
PIN = "--pin" in sys.argv and hasattr(os, "sched_setaffinity")
PIN = PIN and len(os.sched_getaffinity(0)) >= 2
APP_CPUS = {min(os.sched_getaffinity(0))} if PIN else set()
SERVER_CPUS = set(os.sched_getaffinity(0)) - APP_CPUS if PIN else set()


def count_stored(server: Any, url: str, service: str) -> int | None:
    if server is None:
        return None
    return sum(1 for entry in server.entries() if entry.get("service") == service)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS))
    parser.add_argument("--url", help="use this ledger server instead of starting one")
    parser.add_argument("--api-key", default="")
    parser.add_argument(
        "--baseline", metavar="REV", help="also run ours as of this git revision (variant baseline)"
    )
    parser.add_argument("--pin", action="store_true", help="pin app and server to separate CPUs")
    parser.add_argument(
        "--server-nice", type=int, default=10, help="niceness of the ledger server (0: none)"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the request path's instructions under valgrind instead of timing it",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--count-requests", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count-delivery", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--service", help=argparse.SUPPRESS)
    parser.add_argument("--sink-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_requests:
        count_requests(args.worker, args.count_requests, args.count_delivery)
        return
    if args.worker:
        run_worker(args)
        return

    variants = [v for v in args.variants.split(",") if v]
    if args.baseline and "baseline" not in variants:
        variants.append("baseline")
    skipped = [v for v in variants if not available(v)]
    variants = [v for v in variants if v not in skipped]
    if "bare" not in variants:
        variants.insert(0, "bare")
    tmp = Path(tempfile.mkdtemp(prefix="flask-overhead-"))
    sources = {v: ROOT / "src" for v in variants}
    if "baseline" in variants:
        if not args.baseline:
            raise SystemExit("the baseline variant needs --baseline REV")
        sources["baseline"] = export_baseline(args.baseline, tmp)
    if args.instructions:
        print(
            measure_instructions(
                [v for v in variants if v in ("bare", "ours", "baseline")], sources
            )
        )
        return
    server = None
    url, api_key = args.url, args.api_key
    if not url:
        server = start_server(tmp, args.server_nice)
        url, api_key = server.url, server.ingest_key
    sink = _Sink()
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    arrived: dict[str, int] = {v: 0 for v in variants}
    expected: dict[str, int] = {v: 0 for v in variants}
    try:
        for round_no in range(args.rounds):
            order = variants[round_no % len(variants) :] + variants[: round_no % len(variants)]
            for variant in order:
                service = f"bench-{variant}-{round_no}"
                spans_before = sink.spans
                out = subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--worker",
                        variant,
                        "--service",
                        service,
                        "--url",
                        url,
                        "--api-key",
                        api_key,
                        "--sink-port",
                        str(sink.port),
                        "--requests",
                        str(args.requests),
                        "--warmup",
                        str(args.warmup),
                        "--seconds",
                        str(args.seconds),
                        *(["--pin"] if PIN else []),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    env={**os.environ, "PYTHONPATH": worker_pythonpath(sources[variant])},
                )
                if out.returncode != 0:
                    raise SystemExit(f"{variant} failed:\n{out.stderr}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results[variant].append(result)
                expected[variant] += result["sent_requests"]
                if variant in DELIVERING:
                    arrived[variant] += count_stored(server, url, service) or 0
                elif variant == "otel":
                    arrived[variant] += sink.spans - spans_before
                print(
                    f"round {round_no + 1}/{args.rounds} {variant:>8}: "
                    f"p50 {result['p50_us']:7.1f} µs  p99 {result['p99_us']:7.1f} µs  "
                    f"(w/o CPU wait {result['p99_own_us']:7.1f})  "
                    f"p99.9 {result['p999_us']:7.1f} µs  "
                    f"{result['rps']:7.0f} req/s  {result['cpu_us_per_request']:6.1f} µs CPU/req "
                    f"({result['thread_cpu_us_per_request']:6.1f} in the request thread)",
                    file=sys.stderr,
                )
    finally:
        if server is not None:
            server.kill()
        sink.server.shutdown()
    print(report(variants, results, arrived, expected, server is not None, skipped, args))


def report(
    variants: list[str],
    results: dict[str, list[dict[str, Any]]],
    arrived: dict[str, int],
    expected: dict[str, int],
    counted: bool,
    skipped: list[str],
    args: argparse.Namespace,
) -> str:
    bare = results["bare"]

    def added(variant: str, key: str) -> float:
        return statistics.median(
            r[key] - b[key] for r, b in zip(results[variant], bare, strict=True)
        )

    lines = [
        f"Flask {_version('flask')}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{args.rounds} rounds × {args.requests} requests (+{args.seconds:g} s saturated), "
        f"ledger server at nice {args.server_nice}, test client, medians over rounds. "
        "CPU µs/req: all threads of the app process in the "
        "saturated loop (its worker thread included, the ledger server excluded); "
        "'% of bare' = bare CPU/req ÷ variant CPU/req, the throughput share on a dedicated core. "
        "'w/o CPU wait': the p99 without the time the request thread waited for a CPU held by "
        "another process (the ledger server, other jobs).",
        "",
        "| variant | p50 µs | added p50 | p99 µs | added p99 | added p99 w/o CPU wait "
        "| added p99.9 | req/s | CPU µs/req | % of bare | events arrived |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    bare_cpu = statistics.median(r["cpu_us_per_request"] for r in bare)
    for variant in variants:
        runs = results[variant]
        p50 = statistics.median(r["p50_us"] for r in runs)
        p99 = statistics.median(r["p99_us"] for r in runs)
        rps = statistics.median(r["rps"] for r in runs)
        cpu = statistics.median(r["cpu_us_per_request"] for r in runs)
        if variant in DELIVERING and counted:
            events = f"{arrived[variant]} / {expected[variant]}"
        elif variant == "otel":
            events = f"{arrived[variant]} / {expected[variant]} spans"
        elif variant == "sentry":
            events = "n/a (errors only)"
        else:
            events = "—"
        extra, extra99, own99, extra999 = (
            ("", "", "", "")
            if variant == "bare"
            else tuple(
                f"{added(variant, key):+.1f}"
                for key in ("p50_us", "p99_us", "p99_own_us", "p999_us")
            )
        )
        label = f"baseline ({args.baseline})" if variant == "baseline" else variant
        lines.append(
            f"| {label} | {p50:.1f} | {extra} | {p99:.1f} | {extra99} | {own99} | {extra999} | "
            f"{rps:.0f} | {cpu:.1f} | {100 * bare_cpu / cpu:.0f}% | {events} |"
        )
    if skipped:
        lines += ["", f"Skipped (not installed): {', '.join(skipped)}"]
    return "\n".join(lines)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
