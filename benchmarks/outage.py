"""How fast a server answers while its PostgreSQL database refuses connections.

Run from the repository root (needs a local PostgreSQL, as the tests do)::

    .venv/bin/python -m benchmarks.outage                        # this checkout
    .venv/bin/python -m benchmarks.outage --code /path/to/older  # another checkout's src/

One ``immutablelog serve`` process on a fresh database; a few events; then the database is
made to refuse every connection without stopping the shared server (``ALTER DATABASE …
ALLOW_CONNECTIONS false`` and ``pg_terminate_backend`` of its sessions). Each endpoint is then
asked a few times in turn, sequentially, and the answer time and status recorded; finally
connections are allowed again and the time until the next event is accepted measured.
``--code`` runs the server from another checkout (``PYTHONPATH=<code>/src``), so the same
command measures the code before a change; the server is started through its own CLI, which
creates the schema its release knows. Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from tests.live import free_port
from tests.postgres_fixture import _server_url, _with_database

META = {"type": "info", "event_name": "outage.bench", "service": "bench"}
_KEY_LINE = re.compile(r"^\s*(ingest|read) key:\s+(\S+)", re.M)


def _start(
    code: Path | None, data_dir: Path, url: str, port: int
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code / "src")
    process = subprocess.Popen(
        [sys.executable, "-m", "immutablelog", "serve", "--data-dir", str(data_dir),
         "--database-url", url, "--port", str(port), "--log-format", "text"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    keys: dict[str, str] = {}
    while len(keys) < 2:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the server exited before printing its first keys")
        keys.update(dict(_KEY_LINE.findall(line)))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return process, keys
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become healthy")


def _timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - started, response.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", type=Path, help="run the server from this checkout's src/")
    parser.add_argument("--rounds", type=int, default=5, help="requests per endpoint")
    args = parser.parse_args()

    server_url = _server_url()
    dbname = f"iml_outage_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = _with_database(server_url, dbname)
    port = free_port()
    process, keys = _start(args.code, Path(tempfile.mkdtemp()) / "data", url, port)
    ingest = {"Authorization": f"Bearer {keys['ingest']}"}
    read = {"Authorization": f"Bearer {keys['read']}"}
    event = {"payload": "{}", "meta": META}
    endpoints = [
        ("POST /v1/events", "POST", "/v1/events", {"json": event, "headers": ingest}),
        ("GET /v1/checkpoint", "GET", "/v1/checkpoint", {"headers": read}),
        ("GET /healthz", "GET", "/healthz", {}),
        ("GET /readyz", "GET", "/readyz", {}),
        ("GET /livez", "GET", "/livez", {}),
        ("GET /metrics", "GET", "/metrics", {}),
    ]
    rows: list[tuple[str, str, list[float], set[int]]] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(3):
                client.post("/v1/events", json=event, headers=ingest).raise_for_status()
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
                        sql.Identifier(dbname)
                    )
                )
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (dbname,),
                )
                try:
                    first = _timed(client, "POST", "/v1/events", json=event, headers=ingest)
                    rows.append(("first request after the outage", "POST /v1/events",
                                 [first[0]], {first[1]}))  # fmt: skip
                    for name, method, path, kwargs in endpoints:
                        times, statuses = [], set()
                        for _ in range(args.rounds):
                            took, status = _timed(client, method, path, **kwargs)
                            times.append(took)
                            statuses.add(status)
                        rows.append(("database refusing connections", name, times, statuses))
                finally:
                    admin.execute(
                        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                            sql.Identifier(dbname)
                        )
                    )
            back = time.perf_counter()
            while client.post("/v1/events", json=event, headers=ingest).status_code != 202:
                time.sleep(0.05)
            rows.append(("connections allowed again", "until the next 202",
                         [time.perf_counter() - back], {202}))  # fmt: skip
    finally:
        process.kill()
        process.wait()
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )

    print(f"code: {args.code or 'this checkout'}; {args.rounds} sequential requests each")
    print("| phase | request | n | median s | max s | statuses |")
    print("|---|---|--:|--:|--:|---|")
    for phase, name, times, statuses in rows:
        print(
            f"| {phase} | {name} | {len(times)} | {statistics.median(times):.3f} | "
            f"{max(times):.3f} | {', '.join(map(str, sorted(statuses)))} |"
        )


if __name__ == "__main__":
    main()
