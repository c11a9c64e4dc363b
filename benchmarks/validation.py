"""What strict JSON costs ingest: parsing and validating a batch, strict next to lenient.

Run from the repository root::

    .venv/bin/python -m benchmarks.validation            # 20 rounds of 1000-event batches
    .venv/bin/python -m benchmarks.validation --rounds 5

The server parses every batch body and every payload string as I-JSON (``strict_json``:
duplicate keys, NaN/Infinity and numbers a double cannot hold are refused, nesting is
bounded) with the standard library's decoder, whose hooks see each of those while parsing.
The control is what that replaced: orjson, which keeps the last of duplicate keys. Both
sides then validate the same way (``validate_submission``). Rounds alternate between the two
in one process, so machine noise hits both alike; the medians and their ratio are printed.
This work runs in the API processes, in parallel, before the single writer sees an event.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks.common import seed_events
from immutablelog import strict_json
from immutablelog.entry import MAX_PAYLOAD_DEPTH, validate_submission


def _lenient(body: bytes) -> None:
    for item in orjson.loads(body)["events"]:
        orjson.loads(item["payload"])  # the former payload check
        validate_submission(item["payload"], item["meta"], item["idempotency_key"])


def _strict(body: bytes) -> None:
    for item in strict_json.loads(body, MAX_PAYLOAD_DEPTH + 3)["events"]:
        validate_submission(item["payload"], item["meta"], item["idempotency_key"])


def _time_us_per_event(run: Callable[[bytes], None], body: bytes, events: int) -> float:
    started = time.perf_counter()
    run(body)
    return (time.perf_counter() - started) / events * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args(argv)
    events = list(seed_events(args.batch_size, seed=7))
    items: list[dict[str, Any]] = [
        {"payload": e.payload, "meta": e.meta, "idempotency_key": e.idempotency_key} for e in events
    ]
    body = orjson.dumps({"events": items})
    lenient: list[float] = []
    strict: list[float] = []
    for _ in range(args.rounds):
        lenient.append(_time_us_per_event(_lenient, body, len(events)))
        strict.append(_time_us_per_event(_strict, body, len(events)))
    low, high = statistics.median(lenient), statistics.median(strict)
    print(
        f"batch of {len(events)} events, {len(body) / len(events):.0f} bytes each, "
        f"{args.rounds} rounds each, alternating"
    )
    print(f"  lenient (orjson)        {low:6.2f} us/event (median)")
    print(f"  strict  (strict_json)   {high:6.2f} us/event (median)")
    print(f"  strict / lenient        {high / low:6.2f}x   (+{high - low:.2f} us/event)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
