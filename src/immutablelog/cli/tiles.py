"""``immutablelog tiles``: the log as C2SP tlog-tiles static files."""

from __future__ import annotations

from pathlib import Path

import click

from immutablelog._counted import counted
from immutablelog.cli.options import config_for, ledger_options, open_ledger
from immutablelog.ledger import DEFAULT_TENANT
from immutablelog.tiles.sync import SyncError, sync_tiles


@click.group()
def tiles() -> None:
    """Publish a log as tlog-tiles static files."""


@tiles.command("sync")
@click.option(
    "--to",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write checkpoint and tile/ into (created if missing).",
)
@click.option("--tenant", default=DEFAULT_TENANT, show_default=True)
@ledger_options
def sync(directory: Path, tenant: str, data_dir: Path, database_url: str | None) -> None:
    """Write the tenant's checkpoint, hash tiles and entry bundles into DIRECTORY.

    Only what the log gained since the last run is written, and the checkpoint last, so a
    web server or CDN serving the directory always serves a complete, verifiable log.
    """
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        try:
            result = sync_tiles(ledger, ledger.tenant(tenant), directory)
        except SyncError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(
        f"{directory}: size {result.previous_size} -> {result.size}, "
        f"{counted(result.tiles_written, 'tile')} written"
    )
