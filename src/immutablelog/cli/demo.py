"""``immutablelog demo``: the whole system in one command.

Starts a real server on the embedded default (SQLite), runs a small Flask shop instrumented
with :class:`~immutablelog.flask.ImmutableLogAudit`, sends it a mix of traffic (successes, a
404, an exception, a failed login whose password must not reach the log, a custom event),
verifies the log independently, and says where to look.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console

from immutablelog.cli.options import open_ledger
from immutablelog.cli.serve import bootstrap, check_port_free
from immutablelog.ledger import LedgerConfig

DEMO_SERVICE = "demo-shop"


def _start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "immutablelog",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--log-format",
                "text",
            ],
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"the server exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise click.ClickException(f"the server did not start on port {port}; see {log}")


def build_shop(audit: Any) -> Any:
    """A small Flask app whose requests are what an auditor would want to see."""
    from flask import Flask, abort, g, jsonify, request

    app = Flask("demo_shop")
    app.logger.disabled = True  # /boom fails on purpose; its traceback is not news
    audit.init_app(app)

    @app.get("/")
    def home() -> Any:
        return jsonify({"shop": "open"})

    @app.post("/login")
    def login() -> Any:
        g.imtbl_event_name = "auth.login"
        if request.get_json(silent=True, force=True) != {"user": "alice", "password": "s3cret"}:
            return jsonify({"error": "invalid credentials"}), 401
        return jsonify({"ok": True})

    @app.post("/checkout")
    def checkout() -> Any:
        g.imtbl_event_name = "payment.checkout.initiated"
        g.imtbl_actor = {"id": "alice", "role": "customer"}
        return jsonify({"status": "ok", "order": 7})

    @app.get("/items/<int:item>")
    def item(item: int) -> Any:
        abort(404)

    @app.delete("/invoices/<int:invoice>")
    def delete_invoice(invoice: int) -> Any:
        audit.record("invoice.deleted", kind="warning", invoice=invoice, reason="duplicate")
        return "", 204

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("inventory service timed out")

    return app


def send_traffic(app: Any) -> int:
    """A morning at the shop: each request becomes one audit event."""
    client = app.test_client()
    client.get("/")
    client.post("/login", json={"user": "alice", "password": "hunter2"})  # 401, redacted
    client.post("/login", json={"user": "alice", "password": "s3cret"})
    client.post("/checkout?token=abc123", json={"cart": [1, 2]})  # token redacted
    client.get("/items/42")  # 404
    client.delete("/invoices/7")  # plus a custom event
    client.get("/boom")  # an unhandled exception: one event, not two
    return 7


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _own_command() -> str:
    """How to run ``immutablelog`` again from where the demo was started, as it was started
    (``.venv/bin/immutablelog`` needs no activated venv), else through this interpreter."""
    invoked = sys.argv[0]
    if Path(invoked).name == "immutablelog":
        return shlex.quote(invoked)
    return f"{shlex.quote(sys.executable)} -m immutablelog"


def _where_to_look(
    console: Console,
    url: str,
    keys: dict[str, str],
    log_key: str,
    data_dir: Path,
    keep_running: bool,
) -> None:
    """Commands that work as printed, pasted into another terminal while the server runs."""
    command = _own_command()
    state = shlex.quote(str(data_dir / "verify-state.json"))
    if keep_running:
        console.print(
            f"\n[bold]Where to look[/bold] (the server at {url} keeps running until "
            "Ctrl-C; paste these into another terminal)"
        )
    else:
        console.print(
            "\n[bold]Where to look[/bold] (the server has stopped; start it again on this log "
            "first, then paste these into another terminal)"
        )
        port = url.rpartition(":")[2]
        console.print(
            f"   {command} serve --data-dir {shlex.quote(str(data_dir))} --port {port}",
            markup=False,
        )
    lines = [
        f"export IMMUTABLELOG_URL={url} IMMUTABLELOG_READ_KEY={keys['read']}",
        'curl -s -H "Authorization: Bearer $IMMUTABLELOG_READ_KEY" "$IMMUTABLELOG_URL/v1/events"',
        f"{command} verify --log-key '{log_key}' --state {state}",
        f"{command} export --out log.jsonl",
        f"{command} tail",
    ]
    for line in lines:
        console.print(f"   {line}", markup=False)
    console.print(f"   (ingest key, for sending events: {keys['ingest']})", markup=False)


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo log here (default: a new temporary directory).",
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--keep-running/--exit",
    default=True,
    show_default=True,
    help="Leave the server up afterwards, for the printed commands (Ctrl-C to stop), "
    "or stop it when the demo ends.",
)
def demo(data_dir: Path | None, port: int, keep_running: bool) -> None:
    """Run the server, an instrumented Flask app and the verifier, end to end."""
    from immutablelog.flask import ImmutableLogAudit
    from immutablelog.verify import LogClient, render_human, verify_remote

    console = Console(highlight=False, soft_wrap=True)
    # A process manager's SIGTERM (or a closed terminal) ends the demo through `finally`,
    # which stops the server child, instead of leaving it running on its own.
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _exit_on_signal)
    # Another server on the port would answer the health check in the child's place.
    check_port_free("127.0.0.1", port)
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="immutablelog-demo-"))
    with open_ledger(LedgerConfig(data_dir=data_dir)) as ledger:
        keys = dict(bootstrap(ledger))
        if not keys:
            ingest, _ = ledger.create_api_key("default", frozenset({"ingest"}), "demo ingest")
            read, _ = ledger.create_api_key("default", frozenset({"read"}), "demo read")
            keys = {"ingest": ingest, "read": read}
    url = f"http://127.0.0.1:{port}"
    server_log = data_dir / "server.log"
    console.print(f"[bold]1.[/bold] Starting the ledger server on {url} (data: {data_dir})")
    server = _start_server(data_dir, port, server_log)
    try:
        console.print(f"[bold]2.[/bold] Running an instrumented Flask app ({DEMO_SERVICE})")
        audit = ImmutableLogAudit(
            api_key=keys["ingest"], api_url=url, service_name=DEMO_SERVICE, env="demo"
        )
        app = build_shop(audit)
        sent = send_traffic(app)
        delivered = audit.flush(timeout=30, app=app)
        stats = audit.stats(app)
        console.print(
            f"   {sent} requests and 1 custom event; delivered: {stats.sent}, "
            f"all flushed: {'yes' if delivered else 'NO'}"
        )
        audit.close(timeout=10)

        console.print("[bold]3.[/bold] What the log recorded")
        read_headers = {"Authorization": f"Bearer {keys['read']}"}
        page = httpx.get(
            f"{url}/v1/events",
            params={"service": DEMO_SERVICE, "order": "asc"},
            headers=read_headers,
            timeout=30,
        ).json()
        for event in page["events"]:
            console.print(f"   {event['index']:>3} {event['type']:<8} {event['event_name']}")
        secret_leaked = any(
            "hunter2" in e["payload"] or "abc123" in e["payload"] for e in page["events"]
        )
        console.print(f"   secrets in the log: {'[red]YES[/red]' if secret_leaked else 'none'}")

        console.print("[bold]4.[/bold] Verifying the log independently")
        log_key = httpx.get(f"{url}/v1/log-key", timeout=10).text.strip()
        with LogClient(url, keys["read"]) as client:
            report = verify_remote(
                client, state_path=data_dir / "verify-state.json", pinned_key=log_key
            )
        render_human(report, console)

        if report.exit_code != 0 or secret_leaked or not delivered:
            raise click.ClickException("the demo did not end intact")
        _where_to_look(console, url, keys, log_key, data_dir, keep_running)
        if keep_running:
            with contextlib.suppress(KeyboardInterrupt):
                server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(30)
