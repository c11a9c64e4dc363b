"""``immutablelog tenants``: create and list tenants."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

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
        table = Table("tenant", "entries", "created")
        for tenant in ledger.tenants():
            table.add_row(tenant.name, str(ledger.checkpoint(tenant).size), tenant.created_at)
    Console().print(table)
