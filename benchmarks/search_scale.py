"""SQLite's search index under a long fill at full speed: does it keep up with ingest?

Run from the repository root::

    .venv/bin/python -m benchmarks.search_scale --entries 3000000 --before main
    .venv/bin/python -m benchmarks.search_scale --entries 10000000 --keep /tmp/ss --reads

(a kept log that already holds ``--entries`` entries is not filled again: ``--reads`` alone).

The log is filled in-process at full speed (``Ledger.submit``, 10,000-event chunks, the
varied events of benchmarks/read.py: random request ids and actors, so the search file's
lookups by them take random keys), with the ledger's upkeep thread indexing behind the
writer as it does in the server. Every ``--every`` seconds it samples how many entries the
log holds and how many the search file covers; once the fill is done it times how long the
index takes to cover the rest (the catch-up). It reports, per tenth of the fill, the ingest
rate, the indexing rate, their ratio and the backlog, and over the whole fill the ratio,
the backlog's peak and end, and the catch-up time.

``--before REF`` runs the same fill first with the package as it is at git ``REF``
(``git archive`` into a temporary directory, put first on the ``PYTHONPATH`` of a
subprocess), then with the code here, so the two are measured minutes apart on the same
machine and printed side by side.

``--reads`` then serves the filled log through a real ``immutablelog serve`` and times, in
one run: proofs and filtered queries (benchmarks/read.py), and tlog-tiles (full hash tiles
beside the checkpoint and an inclusion proof, benchmarks/tiles.py). It first waits until the
server's upkeep has packed the full level-0 tiles (a log filled by an older release gets
them at this first start) and prints how long that took. Targets are printed
beside the numbers, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.ingest import thread_cpu
from benchmarks.read import (
    Stat,
    bench_log,
    entry_count,
    prefill,
    queries,
    server_proofs,
)
from benchmarks.tiles import packing_catch_up, serve_tiles
from immutablelog.ledger import Ledger, LedgerConfig

REPO = Path(__file__).resolve().parent.parent


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def covered(db: Path, job: str = "indexed") -> int:
    """The last rowid a job of the search file covers (0 before it exists): ``indexed``
    (the search index) or ``packed`` (the level-0 tiles)."""
    search = db.with_name(db.stem + "-search.db")
    if not search.exists():
        return 0
    conn = _read_only(search)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (f"{job}_rowid",)).fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
    return int(row[0]) if row else 0


def stored(db: Path) -> int:
    conn = _read_only(db)
    try:
        return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM entries").fetchone()[0])
    finally:
        conn.close()


class Sampler:
    """(seconds, entries stored, entries indexed, upkeep CPU seconds) every ``every``
    seconds, on a thread."""

    def __init__(self, db: Path, every: float, upkeep: threading.Thread) -> None:
        self.db, self.every, self.upkeep = db, every, upkeep
        self.samples: list[tuple[float, int, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.perf_counter()

    def start(self) -> None:
        self._started = time.perf_counter()
        self.sample()
        self._thread.start()

    def sample(self) -> tuple[float, int, int, float]:
        elapsed = time.perf_counter() - self._started
        row = (elapsed, stored(self.db), covered(self.db), thread_cpu(self.upkeep))
        self.samples.append(row)
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def fill(data_dir: Path, entries: int, every: float, seed: int) -> dict[str, Any]:
    """Fill to ``entries`` with sampling, then time the catch-up; returns the record."""
    db = data_dir / "ledger.db"
    config = LedgerConfig(data_dir=data_dir, idempotency_retention=timedelta(0))
    load_start = os.getloadavg()
    with Ledger.open(config) as ledger:
        ledger.start()
        have = entry_count(db)
        upkeep = next(t for t in threading.enumerate() if t.name == "immutablelog-upkeep")
        sampler = Sampler(db, every, upkeep)
        sampler.start()
        rate = prefill(ledger, have, entries, seed)
        fill_end = sampler.sample()
        while covered(db) < fill_end[1]:
            time.sleep(0.25)
        sampler.stop()
        caught_up = sampler.sample()
        upkeep_cpu = caught_up[3] - sampler.samples[0][3]
    return {
        "entries": entries,
        "started_at": have,
        "ingest_rate": rate,
        "samples": sampler.samples,
        "fill_seconds": fill_end[0],
        "catch_up_seconds": caught_up[0] - fill_end[0],
        "upkeep_cpu_us_per_entry": upkeep_cpu / max(caught_up[2] - sampler.samples[0][2], 1) * 1e6,
        "load": [*load_start, *os.getloadavg()],
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def windows(record: dict[str, Any], parts: int = 10) -> list[dict[str, float]]:
    """The fill cut into ``parts`` spans of time: each one's rates and its closing backlog."""
    samples = record["samples"]
    fill_end = record["fill_seconds"]
    during = [s for s in samples if s[0] <= fill_end + 1e-9]
    out = []
    step = max(1, (len(during) - 1) // parts)
    for a in range(0, len(during) - 1, step):
        b = min(a + step, len(during) - 1)
        (t0, s0, c0, u0), (t1, s1, c1, u1) = during[a], during[b]
        if t1 <= t0:
            continue
        ingest, index = (s1 - s0) / (t1 - t0), (c1 - c0) / (t1 - t0)
        out.append(
            {"from": c0, "to": c1, "stored_to": s1, "ingest": ingest, "index": index,
             "ratio": index / ingest if ingest else 0.0, "backlog": s1 - c1,
             "cpu_us": (u1 - u0) / (c1 - c0) * 1e6 if c1 > c0 else 0.0}
        )  # fmt: skip
    return out


def summary(record: dict[str, Any]) -> dict[str, float]:
    samples = [s for s in record["samples"] if s[0] <= record["fill_seconds"] + 1e-9]
    (_, s0, c0, _), (t1, s1, c1, _) = samples[0], samples[-1]
    half = next(s for s in samples if s[0] >= t1 / 2)
    ratio = (c1 - c0) / (s1 - s0) if s1 > s0 else 0.0
    late = (c1 - half[2]) / (s1 - half[1]) if s1 > half[1] else 0.0
    return {
        "ingest_rate": (s1 - s0) / t1,
        "index_rate": (c1 - c0) / t1,
        "ratio": ratio,
        "ratio_second_half": late,
        "backlog_peak": max(s - c for _, s, c, _ in samples),
        "backlog_end": s1 - c1,
        "backlog_growth_second_half": ((s1 - c1) - (half[1] - half[2])) / (t1 - half[0]),
        "catch_up_seconds": record["catch_up_seconds"],
        "upkeep_cpu_us_per_entry": record["upkeep_cpu_us_per_entry"],
    }


def before_fill(ref: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same fill with the package as at git ``ref``, in a subprocess (a record that an
    earlier run with ``--keep`` left for the same ref and size is reused)."""
    out = root / "before.json"
    if out.exists():
        kept: dict[str, Any] = json.loads(out.read_text())
        if kept.get("code") == ref and kept["entries"] == args.entries:
            return kept
    code = root / "before-src"
    shutil.rmtree(code, ignore_errors=True)
    code.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    env = {**os.environ, "PYTHONPATH": f"{code / 'src'}{os.pathsep}{REPO}"}
    command = [
        sys.executable, "-m", "benchmarks.search_scale", "--fill-only", "--entries",
        str(args.entries), "--every", str(args.every), "--seed", str(args.seed),
        "--keep", str(root / "before"), "--json", str(out),
    ]  # fmt: skip
    subprocess.run(command, env=env, cwd=REPO, check=True)
    record: dict[str, Any] = json.loads(out.read_text())
    record["code"] = ref
    out.write_text(json.dumps(record))
    return record


def reads(root: Path, db: Path, seed: int) -> list[Stat]:
    """Proofs, queries and tiles through a real server on the filled log."""
    _, _, _, server = bench_log(root, "unused")
    size = stored(db)
    stats: list[Stat] = []
    started = time.perf_counter()
    server.start()
    try:
        # A log filled by a release without packed tiles gets them now, from the server's
        # upkeep: everything is timed once they cover the log (and no packing runs beside).
        caught_up = packing_catch_up(lambda: max(0, size - covered(db, "packed")), started)
        print(f"level-0 tiles packed {caught_up:.1f} s after the server was started")
        stats += server_proofs(server, size, 20, 2000, seed + 1)
        stats += queries(server, db, 40, seed + 2)
        stats += serve_tiles(server, size, 2000, seed + 3)
    finally:
        server.kill()
    return stats


def print_fill(label: str, record: dict[str, Any]) -> None:
    start, end = record["load"][:3], record["load"][3:]
    print(f"\n{label}: {record['entries']:,} entries, finished {record['finished']}; load "
          f"average {start[0]:.1f} at the start, {end[0]:.1f} / {end[1]:.1f} / {end[2]:.1f} "
          "(1 / 5 / 15 min) at the end")  # fmt: skip
    print(
        "| search file covering | ingest rate/s | indexing rate/s | index / ingest | backlog "
        "| upkeep CPU µs per entry indexed |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for w in windows(record):
        print(
            f"| {w['from'] / 1e6:.2f} → {w['to'] / 1e6:.2f} M | {w['ingest']:,.0f} | "
            f"{w['index']:,.0f} | {w['ratio']:.2f} | {w['backlog']:,.0f} | {w['cpu_us']:.1f} |"
        )


def print_summaries(records: list[tuple[str, dict[str, Any]]]) -> None:
    rows = [(label, summary(r)) for label, r in records]
    print("\n| code | ingest rate/s | indexing rate/s | index / ingest (all; second half) "
          "| backlog peak | backlog at the end of the fill | backlog growth, second half "
          "| catch-up | upkeep CPU µs/entry |")  # fmt: skip
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for label, s in rows:
        print(
            f"| {label} | {s['ingest_rate']:,.0f} | {s['index_rate']:,.0f} | "
            f"{s['ratio']:.2f}; {s['ratio_second_half']:.2f} | {s['backlog_peak']:,.0f} | "
            f"{s['backlog_end']:,.0f} | {s['backlog_growth_second_half']:+,.0f} entries/s | "
            f"{s['catch_up_seconds']:.1f} s | {s['upkeep_cpu_us_per_entry']:.1f} |"
        )
    if len(rows) == 2:
        (_, a), (_, b) = rows
        print(
            f"\nnow / before: index ÷ ingest {b['ratio'] / a['ratio']:.2f}x, "
            f"catch-up {b['catch_up_seconds'] / max(a['catch_up_seconds'], 1e-9):.3f}x, "
            "upkeep CPU per entry "
            f"{b['upkeep_cpu_us_per_entry'] / a['upkeep_cpu_us_per_entry']:.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=3_000_000)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="directory to keep (a filled log is reused)")
    parser.add_argument("--before", metavar="REF", help="also fill with the code at git REF")
    parser.add_argument("--reads", action="store_true", help="then time reads on the log")
    parser.add_argument("--fill-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the records here")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="immutablelog-search-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    records: list[tuple[str, dict[str, Any]]] = []
    try:
        if args.before:
            records.append((f"before ({args.before})", before_fill(args.before, root, args)))
            shutil.rmtree(root / "before", ignore_errors=True)
        now_root = root if args.fill_only else root / "now"
        _, data_dir, db, _ = bench_log(now_root, "unused")
        if db.exists() and stored(db) >= args.entries and not args.fill_only:
            print(f"{db} already holds {stored(db):,} entries: no fill")
        else:
            record = fill(data_dir, args.entries, args.every, args.seed)
            if args.fill_only:
                assert args.json is not None
                args.json.write_text(json.dumps(record))
                return 0
            records.append(("now", record))
        for label, rec in records:
            print_fill(label, rec)
        if records:
            print_summaries(records)
        if args.json and records:
            args.json.write_text(json.dumps(dict(records)))
        if args.reads:
            stats = reads(now_root, db, args.seed)
            print(f"\nreads on the {stored(db):,}-entry log, load {os.getloadavg()[0]:.1f}")
            print("| what | n | p50 ms | p95 ms | p99 ms | target | note |")
            print("|---|---:|---:|---:|---:|---|---|")
            for st in stats:
                print(
                    f"| {st.section}: {st.what} | {len(st.samples)} | {st.ms(50):.2f} | "
                    f"{st.ms(95):.2f} | {st.ms(99):.2f} | {st.target} | {st.note} |"
                )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
