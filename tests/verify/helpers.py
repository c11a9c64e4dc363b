"""Shared helpers for verifier tests: feeding a live server and running the commands."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from click.testing import CliRunner

from immutablelog.cli.commands import cli
from immutablelog.entry import ENTRIES_MEDIA_TYPE, ENTRY_RECORD
from immutablelog.verify import LogClient
from tests.live import LiveServer


def ingest(server: LiveServer, count: int, *, label: str = "e") -> None:
    """Append ``count`` events over HTTP, in batches the server accepts."""
    for first in range(0, count, 1000):
        events = [
            {
                "payload": json.dumps({"n": n, "note": f"event {n}"}),
                "meta": {"type": "info", "event_name": f"{label}.{n}", "service": "svc"},
                "idempotency_key": str(uuid.uuid4()),
            }
            for n in range(first, min(count, first + 1000))
        ]
        response = httpx.post(
            server.url + "/v1/events/batch",
            json={"events": events},
            headers=server.headers(server.ingest_key),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert all(item["ok"] for item in response.json()["results"])


def client(server: LiveServer, **options: Any) -> LogClient:
    return LogClient(server.url, server.read_key, **options)


class CountingTransport(httpx.HTTPTransport):
    """Counts the entries the server hands out, to show what a run really downloaded."""

    def __init__(self) -> None:
        super().__init__()
        self.entries_served = 0
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.paths.append(request.url.path)
        if request.url.path == "/v1/entries" and response.status_code == 200:
            response.read()
            self.entries_served += len(decode_records(response.content))
        return response


def encode_records(
    items: Sequence[tuple[int, bytes] | tuple[int, bytes, bytes | None]],
) -> bytes:
    """A binary ``GET /v1/entries`` body of ``(index, entry bytes[, erasable part])``."""
    out = []
    for index, data, *rest in items:
        part = rest[0] if rest and rest[0] is not None else b""
        out.append(ENTRY_RECORD.pack(index, len(data), len(part)) + data + part)
    return b"".join(out)


def decode_records(body: bytes) -> list[tuple[int, bytes]]:
    """The ``(index, entry bytes)`` records of a well-formed binary ``GET /v1/entries`` body."""
    return [(index, data) for index, data, _ in decode_records_with_parts(body)]


def decode_records_with_parts(body: bytes) -> list[tuple[int, bytes, bytes | None]]:
    """The records of a well-formed binary ``GET /v1/entries`` body, with erasable parts."""
    out: list[tuple[int, bytes, bytes | None]] = []
    offset = 0
    while offset < len(body):
        index, length, part_length = ENTRY_RECORD.unpack_from(body, offset)
        offset += ENTRY_RECORD.size
        data = body[offset : offset + length]
        offset += length
        out.append((index, data, body[offset : offset + part_length] or None))
        offset += part_length
    assert offset == len(body)
    return out


def binary_response(
    items: Sequence[tuple[int, bytes] | tuple[int, bytes, bytes | None]],
) -> httpx.Response:
    return httpx.Response(
        200, content=encode_records(items), headers={"Content-Type": ENTRIES_MEDIA_TYPE}
    )


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    """Run ``immutablelog ARGS`` in-process; returns (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def cli_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(*args, "--json")
    return code, json.loads(out)


def write_bundle(server: LiveServer, path: Path) -> list[bytes]:
    """A bundle built by hand from the database, the signed checkpoint and the log key."""
    note = server.get("/v1/checkpoint").text
    size = int(note.split("\n")[1])
    entries = server.raw_entries()[:size]
    header = {
        "format": "immutablelog-bundle/2",
        "origin": note.split("\n")[0],
        "log_key": server.verifier_key,
        "checkpoint": note,
        "tree_size": size,
        "erasable": "omitted",  # the entry bytes only: what is proven is their clear fields
    }
    lines = [orjson.dumps(header)]
    lines += [orjson.dumps({"index": i, "entry": e.decode()}) for i, e in enumerate(entries)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines
