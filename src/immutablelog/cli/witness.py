"""``immutablelog witness``: run a C2SP tlog-witness that cosigns other logs' checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from immutablelog.checkpoint import NoteError, Verifier

T = TypeVar("T")

_DATA_DIR = click.option(
    "--data-dir",
    envvar="IMMUTABLELOG_WITNESS_DATA_DIR",
    default="immutablelog-witness",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the witness keeps its key (witness.key) and state (witness.db).",
)
_NAME = click.option(
    "--name",
    envvar="IMMUTABLELOG_WITNESS_NAME",
    required=True,
    help="The witness's name, e.g. witness.example.com/w1 (its key is bound to it).",
)


@click.group()
def witness() -> None:
    """Witness other logs: cosign their checkpoints only if consistent with what was seen."""


@witness.command("key")
@_DATA_DIR
@_NAME
def key(data_dir: Path, name: str) -> None:
    """Print the witness's verifier key (creating the key on first use)."""
    from immutablelog.witness.server import WitnessConfig, load_cosigner

    click.echo(_cosigner(lambda: load_cosigner(WitnessConfig(data_dir, name, {}))).verifier_key())


@witness.command("serve")
@_DATA_DIR
@_NAME
@click.option(
    "--log",
    "logs",
    multiple=True,
    nargs=2,
    required=True,
    metavar="ORIGIN KEY",
    help="A log to witness: its checkpoint origin and its verifier key. Repeatable; "
    "several keys for one origin are all trusted.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--rate",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Requests per second per client address (429 beyond, after a burst of 5x).",
)
def serve(
    data_dir: Path, name: str, logs: tuple[tuple[str, str], ...], host: str, port: int, rate: float
) -> None:
    """Serve POST /add-checkpoint for the given logs."""
    import uvicorn

    from immutablelog.cli.serve import check_port_free
    from immutablelog.server.logs import logging_config
    from immutablelog.witness.server import WitnessConfig, create_witness_app

    trusted: dict[str, list[str]] = {}
    for origin, log_key in logs:
        try:
            Verifier(log_key)
        except NoteError as exc:
            raise click.BadParameter(f"{log_key!r}: {exc}", param_hint="--log") from None
        trusted.setdefault(origin, []).append(log_key)
    check_port_free(host, port)  # else uvicorn fails after "Witnessing … on" was printed
    config = WitnessConfig(data_dir, name, trusted, rate=rate, burst=max(1, int(rate * 5)))
    app = _cosigner(lambda: create_witness_app(config))
    click.echo(f"Witness key: {app.state.witness.cosigner.verifier_key()}")
    click.echo(f"Witnessing {len(trusted)} logs on http://{host}:{port}", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=logging_config("info", "text"),
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


def _cosigner(make: Callable[[], T]) -> T:
    try:
        return make()
    except (NoteError, OSError) as exc:
        raise click.ClickException(f"cannot load the witness key: {exc}") from None
