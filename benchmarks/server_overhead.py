"""What does auditing cost a request on a real server? FastAPI on uvicorn (ASGI) and Django on
gunicorn (WSGI), bare vs ImmutableLog vs sentry-sdk (errors only, and tracing every request) vs
OpenTelemetry's instrumentation for the same framework, side by side in one run.

Run from the repository root (the optional variants need the ``bench`` extra)::

    .venv/bin/python -m benchmarks.server_overhead
    .venv/bin/python -m benchmarks.server_overhead --rounds 5 --frameworks fastapi \\
        --variants bare,ours --throughput-requests 40000
    .venv/bin/python -m benchmarks.server_overhead --variants bare,ours --baseline main  # A/B
    .venv/bin/python -m benchmarks.server_overhead --frameworks fastapi --pin  # quiet machine
    .venv/bin/python -m benchmarks.server_overhead --frameworks fastapi --pin-ledger

Method:

* Each variant is its own server process, started fresh for every round (uvicorn, one process,
  uvloop and httptools; gunicorn, one gthread worker with 4 threads), serving one hello-world
  route (``benchmarks/server_apps.py``). Rounds interleave the variants (the order rotates), so
  drift in machine load hits all alike; reported numbers are medians over rounds, and "added"
  is each round's variant minus that round's bare server.
* The client is another process (``benchmarks/common.py``'s raw keep-alive HTTP/1.1 client):
  after a warm-up, ``--latency-requests`` requests one at a time (p50, p99 as the client sees
  them), then ``--throughput-requests`` over ``--concurrency`` connections (requests/s).
* On a machine shared with other work, wall-clock rates swing from round to round; the
  server's own CPU time per request under that load (its process tree, background threads
  included, until a second after the load) does not. ``capacity × bare`` is bare's CPU per
  request over the variant's: the throughput ratio of a server that has a core to itself.
* Ours delivers to a real ``immutablelog serve`` process at ``nice`` 10 (in production it runs
  elsewhere; here it gets the CPU the app and the client leave). After the load the server gets
  SIGTERM, delivers what is still queued and exits; then every request's event must be stored
  (``events`` column). sentry-sdk and OTLP send to a local sink that counts envelopes and spans.
* ``--pin`` (a quiet machine with two or more CPUs): the measured server gets the first CPU to
  itself; the client and the ledger server share the others. The ledger then cannot preempt
  the request loop it is measuring, as it cannot in production, where it runs elsewhere; bare
  and every variant are pinned alike.
* ``--pin-ledger`` (two or more CPUs): the ledger server gets the last CPU to itself; the
  measured server and the client share the others. With ``--pin`` on two CPUs the ledger's
  work on our events competes with the client, whose measured latencies then include it; here
  nothing but the app's own work (and the client's) delays a request, at the price of the
  client's CPU time in every latency, and of any work the app does after answering delaying
  the client's next request.
* ``--baseline REV`` adds a variant ``baseline``: ours as of git revision ``REV`` of this
  repository (its ``src`` exported and imported by the server first), for a before/after in one
  run.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.live import free_port

from benchmarks.common import LoadGenerator, LoadSpec, percentile, process_tree_cpu
from benchmarks.flask_overhead import (
    APP_CPUS,
    PIN,
    SERVER_CPUS,
    _Sink,
    export_baseline,
    start_server,
    worker_pythonpath,
)

ROOT = Path(__file__).resolve().parent.parent

FRAMEWORKS = ("fastapi", "django")
#: How long after the load a server's background work (our batches) is still charged to it.
BACKGROUND_SETTLE = 1.0
VARIANTS = ("bare", "ours", "sentry", "sentry-tracing", "otel")
#: Variants whose events go to our ledger (and are counted there).
DELIVERING = ("ours", "baseline")
NEEDS = {
    "sentry": ("sentry_sdk",),
    "sentry-tracing": ("sentry_sdk",),
    "otel": (
        "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry.instrumentation.fastapi",
        "opentelemetry.instrumentation.django",
    ),
}


# --pin-ledger: the ledger alone on the last CPU (see the module docstring).
PIN_LEDGER = "--pin-ledger" in sys.argv and hasattr(os, "sched_setaffinity")
PIN_LEDGER = PIN_LEDGER and len(os.sched_getaffinity(0)) >= 2
LEDGER_CPUS = {max(os.sched_getaffinity(0))} if PIN_LEDGER else set()


def pin_every_thread(pid: int, cpus: set[int]) -> None:
    """Pin each thread ``pid`` has now; threads they start later inherit it."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def server_command(framework: str, port: int) -> list[str]:
    if framework == "fastapi":
        return [sys.executable, "-m", "uvicorn", "benchmarks.server_apps:asgi",
                "--port", str(port), "--no-access-log", "--log-level", "warning",
                "--loop", "uvloop", "--http", "httptools"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread",
            "--threads", "4", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "300",
            "benchmarks.server_apps:wsgi"]  # fmt: skip


@dataclass
class Sample:
    """One variant's numbers in one round."""

    p50: float
    p99: float
    rate: float
    cpu: float  # the server's CPU µs per request under load, its background work included


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    added: dict[tuple[str, str], list[tuple[float, float, float, float]]] = field(
        default_factory=dict
    )
    requests: collections.Counter[str] = field(default_factory=collections.Counter)


def available(variant: str) -> bool:
    try:
        for module in NEEDS.get(variant, ()):
            __import__(module)
    except ImportError:
        return False
    return True


def run_variant(
    framework: str,
    variant: str,
    service: str,
    ledger: Any,
    sink_port: int,
    args: Any,
    tmp: Path,
    baseline: Path | None = None,
) -> tuple[Sample, int]:
    """Start the server, load it, stop it; the numbers and the requests it answered."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": (
            worker_pythonpath(baseline)
            if variant == "baseline" and baseline is not None
            else os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        ),
        "BENCH_VARIANT": "ours" if variant == "baseline" else variant,
        "BENCH_SERVICE": service,
        "BENCH_URL": ledger.url,
        "BENCH_API_KEY": ledger.ingest_key,
        "BENCH_SINK_PORT": str(sink_port),
        "BENCH_SPOOL": str(tmp / "spool" / service),
    }
    log = (tmp / f"{service}.log").open("wb")
    server = subprocess.Popen(
        server_command(framework, port), env=env, cwd=ROOT, stdout=log, stderr=log
    )
    if PIN:  # before it starts threads or workers: they inherit it
        os.sched_setaffinity(server.pid, APP_CPUS)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit((tmp / f"{service}.log").read_text())
            try:
                if httpx.get(f"http://127.0.0.1:{port}/hello", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{framework}/{variant} did not start")
            time.sleep(0.1)
        latency, _ = load(port, args.latency_requests, 1, args.warmup, server.pid)
        throughput, cpu = load(
            port, args.throughput_requests, args.concurrency, args.warmup, server.pid
        )
    finally:
        server.send_signal(signal.SIGTERM)  # ours delivers what is still queued, then exits
        server.wait(600)
        log.close()
    answered = 1 + sum(r.acked for r in (latency, throughput))  # + the readiness check
    failed = sum(n for s, n in (latency.statuses + throughput.statuses).items() if s != 200)
    if failed or latency.transport_errors or throughput.transport_errors:
        raise SystemExit(f"{framework}/{variant}: {failed} failed requests")
    sample = Sample(
        p50=percentile(latency.latencies, 50) * 1e6,
        p99=percentile(latency.latencies, 99) * 1e6,
        rate=len(throughput.latencies) / throughput.elapsed,
        cpu=cpu / len(throughput.latencies) * 1e6,
    )
    return sample, answered


def load(port: int, requests: int, concurrency: int, warmup: int, pid: int) -> tuple[Any, float]:
    """The client's view of ``requests`` after a warm-up, and the CPU seconds the server
    process tree used for them: from the start of the timed phase until a second after its end,
    so that work left to a background thread (building and sending our events, exporting
    spans) is counted too."""
    spec = LoadSpec(
        port=port, auth={}, mode="get", requests=requests, batch_size=1,
        concurrency=concurrency, warmup_requests=warmup, seed=0, path="/hello",
    )  # fmt: skip
    generator = LoadGenerator(spec)
    generator.start()
    try:
        generator.wait_measuring()
        before = process_tree_cpu(pid)
        result = generator.result()
        time.sleep(BACKGROUND_SETTLE)
        return result, process_tree_cpu(pid) - before
    finally:
        generator.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--latency-requests", type=int, default=3_000)
    parser.add_argument("--throughput-requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--baseline", metavar="REV", help="also run ours as of this git revision (variant baseline)"
    )
    parser.add_argument(
        "--pin", action="store_true", help="the measured server on one CPU, the rest on others"
    )
    parser.add_argument(
        "--pin-ledger", action="store_true", help="the ledger on one CPU, the rest on others"
    )
    args = parser.parse_args()
    if PIN and PIN_LEDGER:
        raise SystemExit("--pin and --pin-ledger place the processes differently: choose one")
    if PIN:  # the client and the ledger (started from here) inherit the other CPUs
        os.sched_setaffinity(0, SERVER_CPUS)
    if PIN_LEDGER:  # the client and the measured servers (started from here) inherit these
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - LEDGER_CPUS)
    frameworks = args.frameworks.split(",")
    variants = [v for v in args.variants.split(",") if available(v)]
    if args.baseline and "baseline" not in variants:
        variants.append("baseline")
    if "baseline" in variants and not args.baseline:
        raise SystemExit("the baseline variant needs --baseline REV")
    skipped = set(args.variants.split(",")) - set(variants)
    if skipped:
        print(f"skipped (not installed): {', '.join(sorted(skipped))}", file=sys.stderr)
    results = Results()
    sink = _Sink()
    with tempfile.TemporaryDirectory(prefix="server-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        baseline = export_baseline(args.baseline, tmp) if args.baseline else None
        ledger = start_server(tmp, nice=10)
        if PIN_LEDGER:
            pin_every_thread(ledger.process.pid, LEDGER_CPUS)
        try:
            for round_no in range(args.rounds):
                for framework in frameworks:
                    shift = round_no % len(variants)
                    order = variants[shift:] + variants[:shift]
                    this_round: dict[str, Sample] = {}
                    for variant in order:
                        service = f"bench-{framework}-{variant}-{round_no}"
                        sample, answered = run_variant(
                            framework, variant, service, ledger, sink.port, args, tmp, baseline
                        )
                        this_round[variant] = sample
                        results.samples.setdefault((framework, variant), []).append(sample)
                        results.requests[service] = answered
                        print(
                            f"round {round_no + 1} {framework:8} {variant:15} "
                            f"p50 {sample.p50:7.1f} µs  p99 {sample.p99:7.1f} µs  "
                            f"{sample.rate:7.0f} req/s  {sample.cpu:6.1f} CPU µs/req",
                            file=sys.stderr,
                            flush=True,
                        )
                    if "bare" in this_round:
                        bare = this_round["bare"]
                        for variant, s in this_round.items():
                            results.added.setdefault((framework, variant), []).append(
                                (
                                    s.p50 - bare.p50,
                                    s.p99 - bare.p99,
                                    s.rate / bare.rate,
                                    bare.cpu / s.cpu,
                                )
                            )
            stored = collections.Counter(e.get("service") for e in ledger.entries())
        finally:
            ledger.kill()
    report(args, frameworks, variants, results, stored, sink)


def report(
    args: Any,
    frameworks: list[str],
    variants: list[str],
    results: Results,
    stored: collections.Counter[str],
    sink: Any,
) -> None:
    med = statistics.median
    print(
        f"\n{args.rounds} rounds; per round and variant: {args.latency_requests} requests one at "
        f"a time, then {args.throughput_requests} over {args.concurrency} connections; "
        f"medians over rounds. load average {os.getloadavg()[0]:.1f}"
        + (
            f"; server on CPU {sorted(APP_CPUS)}, client and ledger on {sorted(SERVER_CPUS)}"
            if PIN
            else f"; ledger on CPU {sorted(LEDGER_CPUS)}, server and client on the others"
            if PIN_LEDGER
            else ""
        )
        + "\n"
    )
    print(
        "| framework | variant | p50 | +p50 | p99 | +p99 | req/s | × bare "
        "| CPU/req | capacity × bare | delivered |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for framework in frameworks:
        for variant in variants:
            samples = results.samples.get((framework, variant), [])
            if not samples:
                continue
            added = results.added.get((framework, variant), [])
            plus50 = f"{med(a[0] for a in added):+.1f} µs" if added else "–"
            plus99 = f"{med(a[1] for a in added):+.1f} µs" if added else "–"
            ratio = f"{med(a[2] for a in added):.2f}×" if added else "–"
            capacity = f"{med(a[3] for a in added):.2f}×" if added else "–"
            delivered = ""
            if variant in DELIVERING:
                services = [f"bench-{framework}-{variant}-{r}" for r in range(args.rounds)]
                made = sum(results.requests[s] for s in services)
                got = sum(stored[s] for s in services)
                delivered = f"{got}/{made} events" + ("" if got == made else " (MISSING)")
            label = f"baseline ({args.baseline})" if variant == "baseline" else variant
            print(
                f"| {framework} | {label} | {med(s.p50 for s in samples):.1f} µs | {plus50} | "
                f"{med(s.p99 for s in samples):.1f} µs | {plus99} | "
                f"{med(s.rate for s in samples):.0f} | {ratio} | "
                f"{med(s.cpu for s in samples):.0f} µs | {capacity} | {delivered} |"
            )
    print(f"\nsink: {sink.sentry_envelopes} Sentry envelopes, {sink.spans} OTLP spans")


if __name__ == "__main__":
    main()
