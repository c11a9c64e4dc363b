"""A real ``immutablelog serve`` process for end-to-end tests."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from immutablelog.checkpoint import Checkpoint, Verifier, open_checkpoint
from immutablelog.entry import ADMIN_SERVICE
from immutablelog.ledger import DEFAULT_TENANT, Ledger, LedgerConfig
from immutablelog.merkle import leaf_hash, root_from_leaves, verify_consistency

#: One client for every test request: creating an httpx client costs tens of milliseconds
#: (TLS context), which would dominate concurrent tests. Thread-safe, keep-alive.
HTTP = httpx.Client(timeout=30)


def serve_command(data_dir: Path, port: int, *more: str) -> list[str]:
    """``immutablelog serve`` on ``data_dir`` and ``port``, run by this interpreter."""
    return [sys.executable, "-m", "immutablelog", "serve", "--data-dir", str(data_dir),
            "--port", str(port), *more]  # fmt: skip


def interrupt_once_shown(process: subprocess.Popen[str], expect: str) -> tuple[int, str]:
    """For a command that runs until Ctrl-C (``tail``): wait until its output shows
    ``expect``, check that it keeps running, then SIGINT it. Returns its exit code and output.
    """
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while expect not in "".join(lines) and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.1)
    time.sleep(1)  # and it keeps running
    if process.poll() is not None:
        reader.join(10)
        raise AssertionError(f"ended by itself ({process.returncode}):\n{''.join(lines)}")
    process.send_signal(signal.SIGINT)
    process.wait(30)
    reader.join(10)
    return process.returncode, "".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    process: subprocess.Popen[bytes], url: str, timeout: float, log: Callable[[], str]
) -> None:
    """Until ``GET url/healthz`` answers 200; the process's log if it dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy:\n{log()}")


class LiveProcess:
    """A server process started in its own process group, logging to ``log_path``."""

    process: subprocess.Popen[bytes] | None
    log_path: Path

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # The whole group: with --workers the children must die too, as in a crash.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LiveServer(LiveProcess):
    """Starts, stops, restarts and kills a server on one data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
        signing_key: Path | None = None,
        create: bool = True,
    ):
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.database_url = database_url
        self.signing_key = signing_key
        config = LedgerConfig(
            data_dir=data_dir, database_url=database_url, signing_key_file=signing_key
        )
        with Ledger.open(config) as ledger:
            if create:
                ledger.create_tenant(DEFAULT_TENANT)
            self.ingest_key, _ = ledger.create_api_key(DEFAULT_TENANT, frozenset({"ingest"}))
            self.read_key, _ = ledger.create_api_key(DEFAULT_TENANT, frozenset({"read"}))
            self.admin_key, _ = ledger.create_api_key(
                DEFAULT_TENANT, frozenset({"ingest", "read", "admin"})
            )
            self.verifier_key = ledger.verifier_key()

    def start(self, timeout: float = 30.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        env = {**os.environ, **self.extra_env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "immutablelog",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--log-format",
                "text",
                *(["--database-url", self.database_url] if self.database_url else []),
                *(["--signing-key", str(self.signing_key)] if self.signing_key else []),
            ],
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # its own process group, so kill() takes the workers too
        )
        wait_healthy(self.process, self.url, timeout, self.log)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a process manager would; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def headers(self, key: str | None = None, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.ingest_key}", **more}

    def raw_entries(self, tenant: str = DEFAULT_TENANT) -> list[bytes]:
        """Every stored entry of ``tenant`` in index order, read straight from the database."""
        sql = (
            "SELECT e.entry FROM entries e JOIN tenants t ON t.id = e.tenant_id "
            "WHERE t.name = ? ORDER BY e.idx"
        )
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url) as pg:
                rows = pg.execute(sql.replace("?", "%s"), (tenant,)).fetchall()
            return [bytes(row[0]) for row in rows]
        conn = sqlite3.connect(f"file:{self.data_dir / 'ledger.db'}?mode=ro", uri=True)
        try:
            rows = conn.execute(sql, (tenant,)).fetchall()
        finally:
            conn.close()
        return [bytes(row[0]) for row in rows]

    def entries(self, tenant: str = DEFAULT_TENANT, *, admin: bool = False) -> list[dict[str, Any]]:
        """Stored entries, decoded; without the log's own admin events unless ``admin``."""
        decoded = [json.loads(data) for data in self.raw_entries(tenant)]
        return [e for e in decoded if admin or e["service"] != ADMIN_SERVICE]

    def get(self, path: str, **params: Any) -> httpx.Response:
        """GET with the read key."""
        return HTTP.get(self.url + path, params=params, headers=self.headers(self.read_key))

    def checkpoint(self) -> Checkpoint:
        """The latest checkpoint, its signature checked against the log key."""
        response = self.get("/v1/checkpoint")
        response.raise_for_status()
        return open_checkpoint(Verifier(self.verifier_key), response.text)

    def assert_consistent(self, old: Checkpoint, new: Checkpoint) -> None:
        proof = self.get("/v1/proofs/consistency", first=old.size, second=new.size).json()
        verify_consistency(
            old.size,
            new.size,
            [base64.b64decode(h) for h in proof["hashes"]],
            old.root_hash,
            new.root_hash,
        )

    def assert_tree_intact(self) -> Checkpoint:
        """The signed root equals the root recomputed from every stored entry's bytes."""
        checkpoint = self.checkpoint()
        raw = self.raw_entries()
        assert len(raw) == checkpoint.size
        assert [json.loads(e)["index"] for e in raw] == list(range(len(raw)))
        assert root_from_leaves(leaf_hash(e) for e in raw) == checkpoint.root_hash
        return checkpoint


@contextlib.contextmanager
def served_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """An ASGI app on a real uvicorn server in a thread of this process (for faults injected
    into the app's objects); yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, port=port, log_level="critical", **{"lifespan": "off", **config})
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
