"""What the SDK's per-event build costs with each way of writing JSON: the public
``json.JSONEncoder`` configured once (what the SDK uses), ``json.dumps`` per call, the C
encoder built by hand through CPython's private ``json.encoder.c_make_encoder`` (what it
used before), and orjson.

    .venv/bin/python -m benchmarks.sdk_encoder [--events 20000] [--rounds 5]

The payload is compact JSON, byte for byte what ``json.dumps(..., ensure_ascii=False,
separators=(",", ":"))`` gives (the ledger's own serialization of a payload sent as a
document). orjson writes the same bytes for most values but not all (an exponent's sign, keys
that are not strings, what ``default`` makes of other types), so it is shown for scale only. Each
round builds the same captures with every encoder in turn (a GET with a query, a POST by an
actor with a JSON body and headers, an error); the best round of each is printed with its
ratio to the SDK's.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import orjson

from immutablelog.sdk import capture as capture_module
from immutablelog.sdk.capture import EventBuilder, RequestCapture
from immutablelog.sdk.events import UUIDS


class _ByHand:
    """The C encoder json.dumps ends up using, built once through the private API."""

    def __init__(self) -> None:
        from json.encoder import c_make_encoder  # type: ignore[attr-defined]

        escape = json.encoder.encode_basestring
        self._encode = c_make_encoder(None, str, escape, None, ":", ",", False, False, False)

    def encode(self, value: Any) -> str:
        return "".join(self._encode(value, 0))


class _Call:
    def __init__(self, encode: Callable[[Any], str]) -> None:
        self.encode = encode


def captures(count: int) -> list[RequestCapture]:
    shapes: list[dict[str, Any]] = [
        {"method": "GET", "query_string": "page=2&per_page=50&q=caf%C3%A9", "status_code": 200},
        {
            "method": "POST",
            "status_code": 201,
            "actor": {"id": 42, "email": "ann@example.com", "roles": ["admin", "billing"]},
            "body": b'{"amount": 120, "currency": "EUR", "password": "x"}',
            "content_type": "application/json",
            "headers": (("X-Tenant", "acme"), ("Accept-Language", "fr-FR")),
        },
        {"method": "DELETE", "status_code": 500, "exc_type": "KeyError", "exc_message": "'k'"},
    ]
    out = []
    for number in range(count):
        fields: dict[str, Any] = {
            "event_id": UUIDS.take(),
            "timestamp": 1_700_000_000.25 + number,
            "latency_seconds": 0.0123,
            "method": "GET",
            "path": f"/api/v1/orders/{number}",
            "query_string": "",
            "status_code": 200,
            "exc_type": None,
            "exc_message": None,
            "remote_addr": "10.0.0.7",
            "forwarded_for": None,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "event_name": None,
            "actor": "user-7",
            "request_id": f"req-{number}",
            "body": None,
            "content_type": None,
            "headers": None,
        }
        fields.update(shapes[number % len(shapes)])
        out.append(RequestCapture(**fields))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    batch = captures(args.events)
    builder = EventBuilder(service_name="bench", env="production")
    ours = "json.JSONEncoder, configured once (the SDK)"
    encoders: dict[str, Any] = {
        ours: capture_module._ENCODER,
        "C encoder by hand (private API)": _ByHand(),
        "json.dumps per call": _Call(
            lambda value: json.dumps(
                value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
            )
        ),
        "orjson (not always the same bytes: scale)": _Call(
            lambda value: orjson.dumps(value, default=str).decode()
        ),
    }
    best = {name: float("inf") for name in encoders}
    original = capture_module._ENCODER
    try:
        for _ in range(args.rounds):
            for name, encoder in encoders.items():
                capture_module._ENCODER = encoder  # type: ignore[misc]
                started = time.perf_counter()
                for item in batch:
                    builder.build(item)
                best[name] = min(best[name], time.perf_counter() - started)
    finally:
        capture_module._ENCODER = original  # type: ignore[misc]
    base = best[ours]
    print(f"{args.events:,} events, best of {args.rounds} rounds")
    for name, seconds in best.items():
        per_event = seconds / args.events * 1e6
        print(f"  {name:44} {per_event:6.2f} µs/event   {seconds / base:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
