"""Entry format 2 against format 1, side by side in one run: what sealing the erasable part
costs where an event is built, and what checking it costs the verifier.

    .venv/bin/python -m benchmarks.entry_format [--entries 200000] [--rounds 3]

Format 1 is built the way earlier releases built it: every field in the entry (the log's
clear records are built so today, with ``v`` 2; the entry is re-encoded with ``v`` 1). The
events are the seed extension's, with an actor and a client IP in ``meta`` as the SDK sends
them. Rounds alternate between the formats, so drift on a noisy machine hits both alike;
each figure is the best round.

- **request thread**: ``validate_submission`` (format 2 also draws the salt, encodes the
  values and hashes them here, off the single writer);
- **writer thread**: ``build_entry``, ``encode_entry`` and the leaf hash, what the single
  writer does per event;
- **verifier, pages**: ``check_page`` over binary ``GET /v1/entries`` pages of the same
  events (16,384 records a page, as the server sends them): what ``immutablelog verify`` does
  per entry once a page has arrived, values included for format 2;
- **verifier, bundles**: ``verify_bundle`` (one process) over a bundle of the same events,
  values included; and format 2 without values (``"erasable": "omitted"``).

Timed loops keep nothing they build (a server holds one group of events at a time): a list of
100,000 sealed submissions would time the allocator, not the code.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.common import Event, seed_events
from immutablelog.checkpoint import Checkpoint, Signer, sign_checkpoint
from immutablelog.entry import (
    ENTRY_RECORD,
    SALT_BYTES,
    Submission,
    build_entry,
    encode_entry,
    validate_submission,
)
from immutablelog.merkle import leaf_hash, root_from_leaves
from immutablelog.verify import verify_bundle
from immutablelog.verify.checks import check_page
from immutablelog.verify.report import Status

SIGNER = Signer("bench", Ed25519PrivateKey.from_private_bytes(bytes(32)))
TENANT = "default"
AT = "2026-12-07T12:00:00.000000Z"


def events(count: int) -> list[Event]:
    out = []
    for number, event in enumerate(seed_events(count, seed=7)):
        event.meta["actor"] = f"user-{number % 5000}"
        event.meta["ip"] = f"203.0.113.{number % 256}"
        out.append(event)
    return out


def validate(batch: Sequence[Event], clear: bool) -> list[Submission]:
    return [validate_submission(e.payload, e.meta, e.idempotency_key, clear=clear) for e in batch]


def validate_each(batch: Sequence[Event], clear: bool) -> None:
    for e in batch:
        validate_submission(e.payload, e.meta, e.idempotency_key, clear=clear)


def write(subs: Sequence[Submission], version: int, keep: bool = True) -> list[bytes]:
    """What the single writer does per event: the entry, its bytes, its leaf hash."""
    out = []
    for index, sub in enumerate(subs):
        entry = build_entry(sub, tenant=TENANT, index=index, entry_id=f"id-{index}", received_at=AT)
        if version == 1:
            entry["v"] = 1
        data = encode_entry(entry)
        leaf_hash(data)
        if keep:
            out.append(data)
    return out


def pages(entries: list[bytes], parts: list[bytes | None]) -> list[tuple[int, bytes]]:
    """Binary entries pages as the server sends them: (start, body) of 16,384 records."""
    out = []
    for start in range(0, len(entries), 16_384):
        body = bytearray()
        for index in range(start, min(start + 16_384, len(entries))):
            data, part = entries[index], parts[index] or b""
            body += ENTRY_RECORD.pack(index, len(data), len(part)) + data + part
        out.append((start, bytes(body)))
    return out


def check_pages(split: list[tuple[int, bytes]], size: int) -> None:
    for start, body in split:
        result = check_page(body, start, min(start + 16_384, size), TENANT)
        assert not result.anomalies, result.anomalies[:3]


def bundle(path: Path, entries: list[bytes], parts: list[bytes | None], omit: bool) -> None:
    size = len(entries)
    root = root_from_leaves([leaf_hash(e) for e in entries])
    origin = f"{SIGNER.name}/{TENANT}"
    header: dict[str, Any] = {
        "format": "immutablelog-bundle/2",
        "origin": origin,
        "log_key": SIGNER.verifier_key(),
        "checkpoint": sign_checkpoint(SIGNER, Checkpoint(origin, size, root)),
        "tree_size": size,
    }
    if omit:
        header["erasable"] = "omitted"
    with path.open("wb") as out:
        out.write(orjson.dumps(header) + b"\n")
        for index, (data, part) in enumerate(zip(entries, parts, strict=True)):
            line: dict[str, Any] = {"index": index, "entry": data.decode()}
            if part is not None and not omit:
                line["erasable"] = {
                    "salt": part[:SALT_BYTES].hex(),
                    "values": part[SALT_BYTES:].decode(),
                }
            out.write(orjson.dumps(line) + b"\n")


def best(rounds: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Each run's best time over ``rounds``, the runs alternating within each round."""
    times: dict[str, float] = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name] = min(times[name], time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.entries
    batch = events(n)
    print(f"{n:,} events, {args.rounds} rounds, best round each")

    v1_subs = validate(batch, clear=True)
    v2_subs = validate(batch, clear=False)
    build = best(
        args.rounds,
        {
            "request thread, format 1": lambda: validate_each(batch, clear=True),
            "request thread, format 2": lambda: validate_each(batch, clear=False),
            "writer thread, format 1": lambda: write(v1_subs, 1, keep=False),
            "writer thread, format 2": lambda: write(v2_subs, 2, keep=False),
        },
    )
    for side in ("request thread", "writer thread"):
        one, two = build[f"{side}, format 1"], build[f"{side}, format 2"]
        print(
            f"{side:15} format 1 {one / n * 1e6:6.2f} µs/event   format 2 "
            f"{two / n * 1e6:6.2f} µs/event   ratio {two / one:.3f}"
        )

    with tempfile.TemporaryDirectory(prefix="entry-format-") as tmp:
        paths = {name: Path(tmp) / f"{name}.jsonl" for name in ("v1", "v2", "v2-omitted")}
        v1_entries = write(v1_subs, 1)
        v2_entries = write(v2_subs, 2)
        v2_parts: list[bytes | None] = [
            s.erasable.to_bytes() if s.erasable else None for s in v2_subs
        ]
        v1_pages = pages(v1_entries, [None] * n)
        v2_pages = pages(v2_entries, v2_parts)
        on_pages = best(
            args.rounds,
            {
                "v1": lambda: check_pages(v1_pages, n),
                "v2": lambda: check_pages(v2_pages, n),
            },
        )
        bundle(paths["v1"], v1_entries, [None] * n, omit=False)
        bundle(paths["v2"], v2_entries, v2_parts, omit=False)
        bundle(paths["v2-omitted"], v2_entries, v2_parts, omit=True)

        def check(path: Path) -> Callable[[], None]:
            def run() -> None:
                report = verify_bundle(path, pinned_key=SIGNER.verifier_key(), workers=1)
                assert report.status is Status.INTACT, report.to_json()

            return run

        verify = best(args.rounds, {name: check(path) for name, path in paths.items()})
    for what, times in (("pages", on_pages), ("bundle", verify)):
        base = times["v1"]
        for name, seconds in times.items():
            print(
                f"verifier, {what:6} {name:11} {n / seconds:10,.0f} entries/s   "
                f"ratio to format 1 {base / seconds:.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
