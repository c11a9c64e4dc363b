"""``immutablelog serve``: run the API on uvicorn."""

from __future__ import annotations

import errno
import json
import logging
import logging.config
import os
import socket
import sys
import tempfile
from pathlib import Path

import click

from immutablelog.cli.options import config_for, ledger_options, open_ledger
from immutablelog.ledger import (
    COUNT_MATCHES_ENV,
    COUNT_TIMEOUT_ENV,
    DEFAULT_TENANT,
    SIGNING_KEY_ENV,
    Ledger,
)
from immutablelog.ledger.storage import COUNT_MATCHES, COUNT_SECONDS
from immutablelog.witness.client import WitnessEndpoint


def bootstrap(ledger: Ledger) -> list[tuple[str, str]]:
    """On an empty ledger, create the default tenant with one ingest and one read key."""
    if ledger.tenants():
        return []
    ledger.create_tenant(DEFAULT_TENANT)
    created = []
    for scope in ("ingest", "read"):
        secret, _ = ledger.create_api_key(
            DEFAULT_TENANT, frozenset({scope}), label=f"first {scope} key"
        )
        created.append((scope, secret))
    return created


def check_port_free(host: str, port: int) -> None:
    """Bind the address as uvicorn will (SO_REUSEADDR), to fail before any side effect."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
            reason = "is already in use" if taken else f"cannot be used: {exc.strerror}"
            raise click.ClickException(
                f"port {port} on {host} {reason}; pick another with --port"
            ) from None


def _check_witnesses(witnesses: tuple[tuple[str, str], ...], quorum: int | None) -> None:
    for url, key in witnesses:
        try:
            WitnessEndpoint.parse(url, key)
        except ValueError as exc:
            raise click.BadParameter(f"{url} {key}: {exc}", param_hint="--witness") from None
    if quorum is not None and quorum > len(witnesses):
        raise click.BadParameter(
            f"{quorum} exceeds the {len(witnesses)} witnesses given", param_hint="--witness-quorum"
        )


def _announce(
    first_keys: list[tuple[str, str]], verifier_key: str, url: str, data_dir: Path, *, as_json: bool
) -> None:
    """The first keys (shown once), the log's verifier key and where it serves.

    With JSON logs these are log lines too, so that every line the server writes is JSON.
    """
    if as_json:
        log = logging.getLogger("immutablelog.serve")
        if first_keys:
            log.warning(
                "created tenant '%s'; these keys are shown once",
                DEFAULT_TENANT,
                extra={"tenant": DEFAULT_TENANT, **{f"{s}_key": k for s, k in first_keys}},
            )
        log.info("log verifier key: %s", verifier_key, extra={"verifier_key": verifier_key})
        log.info("serving on %s", url, extra={"url": url, "data_dir": str(data_dir.resolve())})
        return
    if first_keys:
        click.echo(f"Created tenant '{DEFAULT_TENANT}'. These keys are shown once:")
        for scope, secret in first_keys:
            click.echo(f"  {scope + ' key:':12} {secret}")
    click.echo(f"Log verifier key: {verifier_key}")
    click.echo(f"Serving on {url}  (data: {data_dir.resolve()})", err=True)


@click.command()
@ledger_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="API processes; they share the ledger safely.",
)
@click.option(
    "--log-name",
    default="immutablelog",
    show_default=True,
    help="The log's name (checkpoint origin prefix); fixed when the ledger is created.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "json", "text"]),
    help="json: one JSON object per line, every line; auto: text on a terminal, else json.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option(
    "--idempotency-retention",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0),
    envvar="IMMUTABLELOG_IDEMPOTENCY_RETENTION_HOURS",
    show_envvar=True,
    help="Hours during which a repeated Idempotency-Key answers the original event.",
)
@click.option(
    "--signing-key",
    default=None,
    envvar=SIGNING_KEY_ENV,
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The log's Ed25519 key file (default: DATA_DIR/log-signing.key, created 0600).",
)
@click.option(
    "--public-tiles",
    "public_tiles",
    multiple=True,
    metavar="TENANT",
    help="Publish this tenant's tlog-tiles checkpoint and hash tiles without a key "
    "(entries still need one). Repeatable.",
)
@click.option(
    "--read-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar="IMMUTABLELOG_READ_TIMEOUT",
    help="Seconds a client has to send a request's headers (6x that for its body); 408 after.",
)
@click.option(
    "--count-timeout",
    default=COUNT_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    envvar=COUNT_TIMEOUT_ENV,
    help="Seconds one GET /v1/event-counts may take (422 count_too_broad after).",
)
@click.option(
    "--count-matches",
    default=COUNT_MATCHES,
    show_default=True,
    type=click.IntRange(min=1),
    envvar=COUNT_MATCHES_ENV,
    help="Entries holding the words that one GET /v1/event-counts with q looks at, newest "
    'first (if older ones hold them: "complete": false).',
)
@click.option(
    "--metrics-token",
    default=None,
    envvar="IMMUTABLELOG_METRICS_TOKEN",
    help="A secret that /metrics callers present as a Bearer token to see per-tenant series.",
)
@click.option(
    "--witness",
    "witnesses",
    multiple=True,
    nargs=2,
    metavar="URL KEY",
    help="A C2SP tlog-witness to cosign each new checkpoint: its URL and verifier key. Repeatable.",
)
@click.option(
    "--witness-interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between rounds of asking the witnesses (at most one checkpoint each).",
)
@click.option(
    "--witness-quorum",
    default=None,
    type=click.IntRange(min=1),
    help="Cosignatures the tlog-tiles checkpoint needs (default: every witness).",
)
def serve(
    data_dir: Path,
    database_url: str | None,
    host: str,
    port: int,
    workers: int,
    log_name: str,
    log_level: str,
    log_format: str,
    access_log: bool,
    idempotency_retention: float,
    signing_key: Path | None,
    public_tiles: tuple[str, ...],
    read_timeout: float,
    count_timeout: float,
    count_matches: int,
    metrics_token: str | None,
    witnesses: tuple[tuple[str, str], ...],
    witness_interval: float,
    witness_quorum: int | None,
) -> None:
    """Serve the ImmutableLog API (ingest, checkpoints, proofs) on HTTP."""
    import uvicorn

    from immutablelog.server.logs import logging_config
    from immutablelog.server.metrics import METRICS_TOKEN_ENV
    from immutablelog.server.protocol import READ_TIMEOUT_ENV, ApiHttpProtocol

    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    log_config = logging_config(log_level, log_format)
    logging.config.dictConfig(log_config)
    logging.captureWarnings(True)
    config = config_for(data_dir, database_url, log_name=log_name, signing_key_file=signing_key)
    try:
        # Before anything is created or shown once: a bad option or a taken port must not
        # cost the first keys.
        _check_witnesses(witnesses, witness_quorum)
        check_port_free(host, port)
        with open_ledger(config) as ledger:
            first_keys = bootstrap(ledger)
            stored_name = ledger.log_name
            verifier_key = ledger.verifier_key()
    except click.ClickException as exc:
        if log_format != "json":
            raise
        logging.getLogger("immutablelog.serve").error(exc.format_message())
        raise SystemExit(exc.exit_code) from None
    _announce(
        first_keys, verifier_key, f"http://{host}:{port}", data_dir, as_json=log_format == "json"
    )

    # Worker processes build their own app from these, each opening the shared ledger.
    os.environ["IMMUTABLELOG_DATA_DIR"] = str(data_dir.resolve())
    os.environ["IMMUTABLELOG_LOG_NAME"] = stored_name
    os.environ["IMMUTABLELOG_IDEMPOTENCY_RETENTION_HOURS"] = str(idempotency_retention)
    os.environ["IMMUTABLELOG_PUBLIC_TILES"] = ",".join(public_tiles)
    os.environ[READ_TIMEOUT_ENV] = str(read_timeout)
    os.environ[COUNT_TIMEOUT_ENV] = str(count_timeout)
    os.environ[COUNT_MATCHES_ENV] = str(count_matches)
    if metrics_token:
        os.environ[METRICS_TOKEN_ENV] = metrics_token
    if witnesses:
        os.environ["IMMUTABLELOG_WITNESSES"] = json.dumps([list(pair) for pair in witnesses])
        os.environ["IMMUTABLELOG_WITNESS_INTERVAL"] = str(witness_interval)
        if witness_quorum is not None:
            os.environ["IMMUTABLELOG_WITNESS_QUORUM"] = str(witness_quorum)
    if database_url:
        os.environ["IMMUTABLELOG_DATABASE_URL"] = database_url
    if signing_key:
        os.environ[SIGNING_KEY_ENV] = str(signing_key.resolve())
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="immutablelog-metrics-")
    uvicorn.run(
        "immutablelog.server.app:app_from_env",
        factory=True,
        http=ApiHttpProtocol,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config,
        access_log=access_log,
        timeout_graceful_shutdown=30,
        server_header=False,
    )
