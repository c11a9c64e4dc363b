"""tlog-tiles and witnessing on a big log: tile serving, ``tiles sync``, time to a cosigned
checkpoint, and what witnessing costs ingest.

Run from the repository root::

    .venv/bin/python -m benchmarks.tiles                  # 1,000,000 entries
    .venv/bin/python -m benchmarks.tiles --entries 10000000 --keep /tmp/tb
    .venv/bin/python -m benchmarks.tiles --quick          # 20,000 entries, a smoke run

In one run, minutes apart, on the same pre-filled log (in-process fill, as benchmarks/read.py):

1. ``GET /tlog/default/tile/...`` through a real ``immutablelog serve``: random full level-0
   (once the upkeep has packed them into their rows) and level-1 hash tiles and entry
   bundles, beside ``GET /v1/proofs/inclusion`` (the dynamic API a tile replaces), on one
   keep-alive connection;
2. ``immutablelog tiles sync`` of the whole log into an empty directory, then again after
   1,000 more entries (the incremental case);
3. two ``immutablelog witness serve`` processes and the server asking them every 0.25 s, under
   1,000 events/s (batches of 100 every 0.1 s): for each batch, the time from its 2xx to the
   first tiles checkpoint cosigned by both witnesses that covers it; the same load on the same
   server without witnesses gives the ingest latency and server CPU witnessing is compared to;
4. ingest capacity (1,000-event batches back to back from 2 clients) without and with the
   witnesses, in alternating rounds on fresh server processes: what witnessing costs ingest.

Targets are printed beside the numbers, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import orjson
from rich.console import Console
from tests.live import LiveServer
from tests.witness.live import LiveWitness

from benchmarks.common import process_tree_cpu, seed_events
from benchmarks.read import Http, Stat, bench_log, entry_count, prefill, time_calls
from immutablelog.cosignature import CosignatureVerifier
from immutablelog.ledger import DEFAULT_TENANT, Ledger, LedgerConfig
from immutablelog.tiles.layout import encode_index

console = Console()


def tile_paths(rng: random.Random, size: int, count: int) -> dict[str, list[str]]:
    full0, full1 = size // 256, size // 65536
    cases = {
        "full level-0 hash tile": [
            f"tile/0/{encode_index(rng.randrange(full0))}" for _ in range(count)
        ],
        "entry bundle (identity)": [
            f"tile/entries/{encode_index(rng.randrange(full0))}" for _ in range(count)
        ],
    }
    if full1:
        cases["full level-1 hash tile"] = [
            f"tile/1/{encode_index(rng.randrange(full1))}" for _ in range(count)
        ]
    return cases


def packing_catch_up(
    backlog: Callable[[], int], since: float | None = None, every: float = 30.0
) -> float:
    """Seconds from ``since`` (a ``perf_counter`` time, default now) until ``backlog()``
    (entries whose full level-0 tiles the upkeep has not packed into their rows yet) is 0,
    so that tiles are timed as served from those rows; a log filled by a release without
    them is packed at the first start. Shows progress."""
    started = time.perf_counter() if since is None else since
    shown = started
    while left := backlog():
        if time.perf_counter() - shown >= every:
            shown = time.perf_counter()
            console.print(f"packing tiles: {left:,} entries to go, {shown - started:.0f} s in")
        time.sleep(0.25)
    return time.perf_counter() - started


def serve_tiles(server: LiveServer, size: int, samples: int, seed: int) -> list[Stat]:
    rng = random.Random(seed)
    http = Http(server.url, server.read_key)
    http.headers["Accept-Encoding"] = "identity"
    stats: list[Stat] = []
    try:
        for label, paths in tile_paths(rng, size, samples).items():
            calls = [lambda p=p: http.get(f"/tlog/{DEFAULT_TENANT}/{p}", {}) for p in paths]
            time_calls(calls[:50])  # warm up
            target = "p99 <= 2 ms" if "hash" in label else ""
            stats.append(Stat("tiles", f"GET {label}", time_calls(calls), target))
        indexes = [rng.randrange(size) for _ in range(samples)]
        calls = [
            lambda i=i: http.get("/v1/proofs/inclusion", {"index": i, "size": size})
            for i in indexes
        ]
        time_calls(calls[:50])
        stats.append(Stat("tiles", "GET /v1/proofs/inclusion (for comparison)", time_calls(calls)))
        checkpoint = [lambda: http.get(f"/tlog/{DEFAULT_TENANT}/checkpoint", {})] * samples
        stats.append(Stat("tiles", "GET checkpoint", time_calls(checkpoint)))
    finally:
        http.close()
    return stats


def run_sync(data_dir: Path, out: Path) -> tuple[float, str]:
    started = time.perf_counter()
    command = [sys.executable, "-m", "immutablelog", "tiles", "sync", "--to", str(out)]
    done = subprocess.run(
        [*command, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, done.stdout.strip()


class Ingest:
    """Batches of 100 events every 0.1 s (1,000 events/s) on one keep-alive connection."""

    def __init__(self, server: LiveServer, seconds: float, seed: int) -> None:
        self.server = server
        self.seconds = seconds
        self.events = seed_events(int(seconds * 1000) + 1000, seed)
        self.acked: list[tuple[float, int]] = []  # (time of the 2xx, highest index)
        self.latencies: list[float] = []

    def run(self) -> None:
        host, port = self.server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {**self.server.headers(), "Content-Type": "application/json"}
        started = time.perf_counter()
        tick = 0
        while time.perf_counter() - started < self.seconds:
            batch = [next(self.events) for _ in range(100)]
            body = orjson.dumps(
                {
                    "events": [
                        {"payload": e.payload, "meta": e.meta, "idempotency_key": e.idempotency_key}
                        for e in batch
                    ]
                }
            )
            sent = time.perf_counter()
            conn.request("POST", "/v1/events/batch", body=body, headers=headers)
            response = conn.getresponse()
            answer = orjson.loads(response.read())
            done = time.perf_counter()
            if response.status != 200:
                raise RuntimeError(f"ingest answered {response.status}: {answer}")
            self.latencies.append(done - sent)
            self.acked.append((done, max(r["index"] for r in answer["results"])))
            tick += 1
            time.sleep(max(0.0, started + tick * 0.1 - time.perf_counter()))
        conn.close()


class Flood:
    """As fast as the server takes them: 1,000-event batches back to back from ``clients``
    keep-alive connections (bodies encoded beforehand), for ``seconds``. Ingest capacity."""

    def __init__(self, server: LiveServer, seconds: float, seed: int, clients: int = 2) -> None:
        self.server = server
        self.seconds = seconds
        self.clients = clients
        events = seed_events(int(seconds * 20_000), seed)
        self.bodies: list[bytes] = []
        while len(self.bodies) < seconds * 20:
            batch = [e for _, e in zip(range(1000), events, strict=False)]
            self.bodies.append(
                orjson.dumps(
                    {
                        "events": [
                            {
                                "payload": e.payload,
                                "meta": e.meta,
                                "idempotency_key": e.idempotency_key,
                            }
                            for e in batch
                        ]
                    }
                )
            )
        self.acked = 0
        self._lock = threading.Lock()

    def run(self) -> float:
        """Events acknowledged per second."""
        host, port = self.server.url.removeprefix("http://").split(":")
        headers = {**self.server.headers(), "Content-Type": "application/json"}
        bodies = iter(self.bodies)
        started = time.perf_counter()

        def client() -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            while time.perf_counter() - started < self.seconds:
                with self._lock:
                    body = next(bodies, None)
                if body is None:
                    break
                conn.request("POST", "/v1/events/batch", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"ingest answered {response.status}")
                with self._lock:
                    self.acked += 1000
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.acked / (time.perf_counter() - started)


class CosignWatcher(threading.Thread):
    """Polls the tiles checkpoint; records when each size became cosigned by every witness."""

    def __init__(self, server: LiveServer, witnesses: list[LiveWitness]) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.verifiers = [CosignatureVerifier(w.verifier_key) for w in witnesses]
        self.seen: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        http = Http(self.server.url, self.server.read_key)
        last = -1
        while not self.stop.is_set():
            _, body = http.get(f"/tlog/{DEFAULT_TENANT}/checkpoint", {})
            note = body.decode()
            size = int(note.split("\n")[1])
            if size != last and all(v.find(note) for v in self.verifiers):
                self.seen.append((time.perf_counter(), size))
                last = size
            time.sleep(0.01)
        http.close()

    def latency(self, acked_at: float, index: int) -> float | None:
        for seen_at, size in self.seen:
            if size > index and seen_at >= acked_at:
                return seen_at - acked_at
            if size > index:  # cosigned before the client even read its answer
                return 0.0
        return None


def _rates(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def witnessing(
    root: Path,
    server: LiveServer,
    seconds: float,
    seed: int,
    rounds: int = 3,
    flood_seconds: float = 10.0,
) -> list[Stat]:
    origin = f"immutablelog/{DEFAULT_TENANT}"
    witnesses = [
        LiveWitness(root / f"w{n}", f"bench.example/w{n}", [(origin, server.verifier_key)])
        for n in (1, 2)
    ]
    stats: list[Stat] = []
    try:
        # Without witnesses first: the baseline the same load is compared with (the watcher
        # polls there too, so that both runs serve the same reads).
        server.start()
        idle = CosignWatcher(server, [])
        idle.start()
        cpu_before = process_tree_cpu(server.process.pid if server.process else 0)
        base = Ingest(server, seconds, seed)
        base.run()
        base_cpu = process_tree_cpu(server.process.pid if server.process else 0) - cpu_before
        idle.stop.set()
        idle.join()
        server.stop()

        for witness in witnesses:
            witness.start()
        server.extra_env = {
            "IMMUTABLELOG_WITNESSES": json.dumps([[w.url, w.verifier_key] for w in witnesses]),
            "IMMUTABLELOG_WITNESS_INTERVAL": "0.25",
        }
        server.start()
        watcher = CosignWatcher(server, witnesses)
        watcher.start()
        cpu_before = process_tree_cpu(server.process.pid if server.process else 0)
        load = Ingest(server, seconds, seed + 1)
        load.run()
        cpu = process_tree_cpu(server.process.pid if server.process else 0) - cpu_before
        time.sleep(2)  # let the last batches be cosigned
        watcher.stop.set()
        watcher.join()
        server.stop()
        # Ingest capacity, in alternating rounds (a fresh server each, with the witnesses'
        # environment or without), so that a shared machine's drift hits both sides alike.
        with_env = server.extra_env
        floods: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(rounds):
            for witnessed in (False, True):
                server.extra_env = with_env if witnessed else {}
                server.start()
                floods[witnessed].append(
                    Flood(server, flood_seconds, seed + 10 + 2 * round_ + witnessed).run()
                )
                server.stop()
        waits = [watcher.latency(at, index) for at, index in load.acked]
        missing = sum(w is None for w in waits)
        stats.append(
            Stat(
                "witness",
                "event 2xx -> tiles checkpoint cosigned by 2 witnesses",
                [w for w in waits if w is not None],
                "p99 <= 1 s",
                f"{len(load.acked)} batches, {missing} never seen cosigned; interval 0.25 s",
            )
        )
        stats.append(Stat("witness", "ingest batch latency, no witnesses", base.latencies))
        stats.append(
            Stat(
                "witness",
                "ingest batch latency, 2 witnesses",
                load.latencies,
                "<= 5% worse",
                f"server CPU {cpu:.2f} s vs {base_cpu:.2f} s without "
                f"({(cpu / base_cpu - 1) * 100 if base_cpu else 0:+.1f}%)",
            )
        )
        without, with_ = statistics.median(floods[False]), statistics.median(floods[True])
        console.print(
            f"ingest capacity (1,000-event batches, 2 clients, {rounds} alternating rounds of "
            f"{flood_seconds:g} s): without witnesses {_rates(floods[False])} events/s, "
            f"with 2 witnesses {_rates(floods[True])}; medians {without:,.0f} vs {with_:,.0f} "
            f"({(with_ / without - 1) * 100:+.1f}%; target: no more than 5% lower)"
        )
    finally:
        server.kill()
        for witness in witnesses:
            witness.kill()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=None, help="log size (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 entries")
    parser.add_argument("--keep", type=Path, help="data directory to keep (reused if filled)")
    parser.add_argument("--seconds", type=float, default=None, help="witness load duration")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3, help="ingest capacity rounds, each way")
    parser.add_argument("--flood-seconds", type=float, default=10.0, help="one capacity run")
    args = parser.parse_args(argv)
    entries = args.entries or (20_000 if args.quick else 1_000_000)
    samples = 300 if args.quick else 2000
    seconds = args.seconds or (5.0 if args.quick else 20.0)

    root, data_dir, db, server = bench_log(args.keep, "immutablelog-tiles-")
    stats: list[Stat] = []
    sync_rows: list[tuple[str, str, str]] = []
    try:
        config = LedgerConfig(data_dir=data_dir, idempotency_retention=timedelta(0))
        with Ledger.open(config) as ledger:
            ledger.start()
            have = entry_count(db)
            if have < entries:
                rate = prefill(ledger, have, entries, args.seed)
                console.print(f"pre-filled {entries - have:,} entries at {rate:,.0f} events/s")
            size = ledger.checkpoint(ledger.tenant(DEFAULT_TENANT)).size
            caught_up = packing_catch_up(ledger.tile_backlog)
            console.print(f"tiles packed {caught_up:.1f} s after the fill")

        console.print(f"log size {size:,}; tiles sync into an empty directory…")
        out = root / "static"
        shutil.rmtree(out, ignore_errors=True)
        full_seconds, full_out = run_sync(data_dir, out)
        sync_rows.append(
            (f"tiles sync, full ({size:,} entries)", f"{full_seconds:.1f} s", full_out)
        )

        console.print("serving tiles…")
        server.start()
        stats += serve_tiles(server, size, samples, args.seed)
        Ingest(server, 1.0, args.seed + 7).run()  # ~1,000 more entries
        server.stop()
        inc_seconds, inc_out = run_sync(data_dir, out)
        sync_rows.append(
            ("tiles sync, incremental (+~1,000 entries)", f"{inc_seconds:.2f} s", inc_out)
        )

        console.print(f"witnessing: {seconds:.0f} s of 1,000 events/s without, then with…")
        stats += witnessing(root, server, seconds, args.seed + 3, args.rounds, args.flood_seconds)
    finally:
        server.kill()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print("| section | what | n | p50 ms | p99 ms | target | note |")
    print("|---|---|---:|---:|---:|---|---|")
    for st in stats:
        cells = [st.section, st.what, str(len(st.samples)), f"{st.ms(50):.2f}", f"{st.ms(99):.2f}"]
        print("| " + " | ".join([*cells, st.target, st.note]) + " |")
    print()
    print("| what | time | output |")
    print("|---|---:|---|")
    for what, spent, output in sync_rows:
        print(f"| {what} | {spent} | {output.rsplit(': ', 1)[-1]} |")
    print(f"\nlog size {size:,}; target: tiles sync of 1,000,000 entries <= 60 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
