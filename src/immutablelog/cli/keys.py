"""``immutablelog keys``: create, list and revoke API keys."""

from __future__ import annotations

import json
from pathlib import Path

import click

from immutablelog.cli.options import config_for, ledger_options, open_ledger
from immutablelog.ledger import keys as key_format


def _scopes(ctx: click.Context, param: click.Parameter, value: str) -> frozenset[str]:
    try:
        return key_format.parse_scopes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def keys() -> None:
    """Manage API keys (shown once, stored only as a hash)."""


@keys.command("create")
@click.option("--tenant", default="default", show_default=True)
@click.option(
    "--scope",
    "scopes",
    default="ingest",
    show_default=True,
    callback=_scopes,
    help="Comma-separated: ingest, read, admin.",
)
@click.option("--label", default=None, help="A note to recognise the key by.")
@ledger_options
def create(
    tenant: str, scopes: frozenset[str], label: str | None, data_dir: Path, database_url: str | None
) -> None:
    """Create a key and print it, alone on one line. It cannot be shown again."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        secret, record = ledger.create_api_key(tenant, scopes, label)
    click.echo(secret)
    click.echo(
        f"created {record.prefix}… for tenant {record.tenant} "
        f"({','.join(sorted(record.scopes))}); store it now, it is not shown again",
        err=True,
    )


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@ledger_options
def list_(tenant: str | None, as_json: bool, data_dir: Path, database_url: str | None) -> None:
    """List keys by prefix, scopes and state (never the keys themselves)."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        records = ledger.api_keys(tenant)
    if as_json:
        for r in records:
            click.echo(
                json.dumps(
                    {
                        "prefix": r.prefix,
                        "tenant": r.tenant,
                        "scopes": sorted(r.scopes),
                        "label": r.label,
                        "created_at": r.created_at,
                        "last_used_at": r.last_used_at,
                        "revoked_at": r.revoked_at,
                    }
                )
            )
        return
    rows = [
        [
            r.prefix,
            r.tenant,
            ",".join(sorted(r.scopes)),
            minute(r.created_at),
            minute(r.last_used_at),
            minute(r.revoked_at),
            r.label or "",
        ]
        for r in records
    ]
    for line in columns(
        ["PREFIX", "TENANT", "SCOPES", "CREATED", "LAST USED", "REVOKED", "LABEL"], rows
    ):
        click.echo(line)


def minute(timestamp: str | None) -> str:
    """``2026-12-07T11:25:59.879215Z`` as ``2026-12-07 11:25``; ``--json`` has it whole."""
    return timestamp[:16].replace("T", " ") if timestamp else "-"


def columns(header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned plain columns at their natural width: an identifier is never cut to fit a
    terminal (the prefix is what ``keys revoke`` takes); a long line wraps instead."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


@keys.command("revoke")
@click.argument("prefix")
@ledger_options
def revoke(prefix: str, data_dir: Path, database_url: str | None) -> None:
    """Revoke the key whose listed prefix is PREFIX; it stops working at once."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        record = ledger.revoke_api_key(prefix)
    click.echo(f"revoked {record.prefix} ({record.tenant}) at {record.revoked_at}")
