"""``immutablelog tenants``: create and list tenants."""

from __future__ import annotations

from pathlib import Path

import click

from immutablelog.cli.keys import columns
from immutablelog.cli.options import config_for, ledger_options, open_ledger


@click.group()
def tenants() -> None:
    """Manage tenants (one append-only log each)."""


@tenants.command("create")
@click.argument("name")
@ledger_options
def create(name: str, data_dir: Path, database_url: str | None) -> None:
    """Create tenant NAME with an empty, signed log."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        tenant = ledger.create_tenant(name)
    click.echo(tenant.name)


@tenants.command("list")
@ledger_options
def list_(data_dir: Path, database_url: str | None) -> None:
    """List tenants with the size of their logs."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        rows = [
            [tenant.name, str(ledger.checkpoint(tenant).size), tenant.created_at]
            for tenant in ledger.tenants()
        ]
    # Plain columns, as keys list: a table cut names to fit the terminal, and the name is
    # what every --tenant takes.
    for line in columns(["TENANT", "ENTRIES", "CREATED"], rows):
        click.echo(line)


@tenants.command("set-retention")
@click.argument("name")
@click.option("--days", type=click.IntRange(1, 36_500), default=None, help="Days to keep values.")
@click.option("--forever", is_flag=True, help="Remove the policy: keep values for good.")
@ledger_options
def set_retention(
    name: str, days: int | None, forever: bool, data_dir: Path, database_url: str | None
) -> None:
    """Keep tenant NAME's erasable values (payload, actor, extra meta) --days N days: a
    running server's sweep then erases older ones, recording each sweep in the log."""
    if (days is None) == (not forever):
        raise click.UsageError("give --days N or --forever")
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        ledger.set_retention(ledger.tenant(name), days)
    click.echo(f"{name}: values kept {'for good' if forever else f'{days} days'}")
