"""``immutablelog viewer-links``: create, list and revoke viewer links (docs/VIEWER.md)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import click

from immutablelog.cli.keys import columns, minute
from immutablelog.cli.options import config_for, ledger_options, open_ledger
from immutablelog.ledger import viewer_links as links

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _lifetime(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """``90s``, ``30m``, ``12h`` or ``7d``."""
    number, unit = value[:-1], value[-1:]
    if unit not in _UNITS or not number.isascii() or not number.isdigit():
        raise click.BadParameter("a number and a unit: 90s, 30m, 12h or 7d")
    return timedelta(seconds=int(number) * _UNITS[unit])


def _filters(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in value:
        name, sep, text = item.partition("=")
        if not sep or name in found:
            raise click.BadParameter(f"{item!r}: NAME=VALUE, each name once")
        found[name] = text
    return found


@click.group("viewer-links")
def viewer_links() -> None:
    """Read-only viewer tokens bound to a filter of one tenant's events, that expire."""


@viewer_links.command("create")
@click.option("--tenant", default="default", show_default=True)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    required=True,
    callback=_filters,
    help="NAME=VALUE, repeatable: service, env, type, event_name (a trailing * is a prefix), "
    "request_id, actor, since, until.",
)
@click.option("--expires-in", required=True, callback=_lifetime, help="e.g. 90s, 30m, 12h, 7d.")
@click.option("--label", default=None, help="A note to recognise the link by.")
@ledger_options
def create(
    tenant: str,
    filters: dict[str, str],
    expires_in: timedelta,
    label: str | None,
    data_dir: Path,
    database_url: str | None,
) -> None:
    """Create a link and print its token, alone on one line. It cannot be shown again:
    open the viewer at ``<server>/#token=<token>``."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        try:
            token, record = links.create(ledger, ledger.tenant(tenant), filters, expires_in, label)
        except links.LinkError as exc:
            raise click.UsageError(exc.message) from None
    click.echo(token)
    click.echo(
        f"created {record.prefix}… for tenant {record.tenant}, expires {record.expires_at}; "
        "store it now, it is not shown again",
        err=True,
    )


@viewer_links.command("list")
@click.option("--tenant", default=None, help="Only this tenant's links.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@ledger_options
def list_(tenant: str | None, as_json: bool, data_dir: Path, database_url: str | None) -> None:
    """List links by prefix, filter and state (never the tokens themselves)."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        records = links.links(ledger, None if tenant is None else ledger.tenant(tenant))
    described = [links.describe(r) for r in records]
    if as_json:
        for item in described:
            click.echo(json.dumps(item))
        return
    rows = [
        [
            d["prefix"],
            d["tenant"],
            " ".join(f"{k}={v}" for k, v in d["filter"].items()),
            minute(d["expires_at"]),
            minute(d["revoked_at"]),
            d["label"] or "",
        ]
        for d in described
    ]
    for line in columns(["PREFIX", "TENANT", "FILTER", "EXPIRES", "REVOKED", "LABEL"], rows):
        click.echo(line)


@viewer_links.command("revoke")
@click.argument("prefix")
@ledger_options
def revoke(prefix: str, data_dir: Path, database_url: str | None) -> None:
    """Revoke the link whose listed prefix is PREFIX; it stops working at once."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        try:
            record = links.revoke(ledger, prefix)
        except links.LinkError as exc:  # a prefix nothing has: as `keys revoke`, not a usage error
            raise click.ClickException(exc.message) from None
    click.echo(f"revoked {record.prefix} ({record.tenant}) at {record.revoked_at}")
