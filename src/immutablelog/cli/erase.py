"""``immutablelog erase`` and ``immutablelog erasures export``: erase events' values, save
the list of erasures, and re-apply it to a restored backup.

Erasing needs the ledger (``--data-dir`` / ``--database-url``) or a running server and an
admin key (``--url`` with ``--key``). A backup taken before an erasure still holds the
erased values: after restoring it, and before serving it, ``erase --replay FILE`` with the
list saved by ``erasures export`` erases them again (each replayed erasure is recorded anew).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import click

from immutablelog._counted import counted
from immutablelog.cli.errors import reaching, writing
from immutablelog.cli.options import config_for, ledger_options, open_ledger
from immutablelog.cli.remote import client, fail_on_error
from immutablelog.entry import EntryError
from immutablelog.erasure import MAX_REASON_CHARS, check_reason
from immutablelog.ledger import Ledger, Tenant
from immutablelog.ledger.erasing import ErasureOutcome, ErasureRefused, record_json

ERASURES_FORMAT: Final = "immutablelog-erasures/1"


def _remote_options(func: Any) -> Any:
    func = click.option(
        "--key",
        envvar="IMMUTABLELOG_ADMIN_KEY",
        show_envvar=True,
        default=None,
        help="An API key with the admin scope (with --url).",
    )(func)
    return click.option(
        "--url", default=None, help="A running server to ask, instead of the ledger itself."
    )(func)


def _report(outcome: dict[str, Any]) -> None:
    click.echo(json.dumps(outcome))
    click.echo(
        f"erased the values of {counted(outcome['erased'], 'event')}; recorded in entries "
        f"{outcome['records'] or 'none (nothing left to erase)'}",
        err=True,
    )


@click.command()
@click.option("--tenant", default="default", show_default=True)
@click.option("--id", "ids", multiple=True, help="An event id (repeat for several).")
@click.option("--actor", default=None, help="Erase every event of this actor (data subject).")
@click.option("--reason", default=None, help="Why (kept in the log for good: say why, not whom).")
@click.option(
    "--replay",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Re-apply the erasures listed by `erasures export` (to a restored backup).",
)
@_remote_options
@ledger_options
def erase(
    tenant: str,
    ids: tuple[str, ...],
    actor: str | None,
    reason: str | None,
    replay: Path | None,
    url: str | None,
    key: str | None,
    data_dir: Path,
    database_url: str | None,
) -> None:
    """Erase the values (payload, actor, extra meta) of events, keeping every proof.

    Give --id (repeatable) or --actor, with --reason; or --replay FILE.
    """
    if replay is not None:
        if ids or actor or url:
            raise click.UsageError("--replay goes alone, against the ledger (not --url)")
        with open_ledger(config_for(data_dir, database_url)) as ledger:
            _replay(ledger, ledger.tenant(tenant), replay)
        return
    if bool(ids) == (actor is not None):
        raise click.UsageError("give --id (one or more) or --actor")
    if reason is None:
        raise click.UsageError("--reason is required")
    body: dict[str, Any] = {"reason": reason, **({"actor": actor} if actor else {"ids": ids})}
    if url is not None:
        if not key:
            raise click.UsageError("--url needs --key (an admin key)")
        with reaching(url), client(url, key) as http:
            response = http.post("/v1/erasures", json=body, params={"tenant": tenant})
        fail_on_error(response)
        _report(response.json())
        return
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        found = ledger.tenant(tenant)
        try:
            if actor is not None:
                outcome = ledger.erasures.erase_actor(found, actor, reason, "cli")
            else:
                outcome = ledger.erasures.erase_ids(found, list(ids), reason, "cli")
        except ErasureRefused as exc:
            raise click.ClickException(exc.message) from None
    _report(outcome.as_dict())


def _replay(ledger: Ledger, tenant: Tenant, path: Path) -> None:
    try:
        listing = json.loads(path.read_text("utf-8"))
        if listing.get("format") != ERASURES_FORMAT:
            raise ValueError(f"not a {ERASURES_FORMAT} file")
        items = listing["erasures"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    if listing.get("origin") not in (None, ledger.origin(tenant)):
        raise click.ClickException(
            f"{path} lists the erasures of {listing['origin']}, not {ledger.origin(tenant)}"
        )
    total = 0
    for item in items:
        try:
            ranges = [(int(start), int(end)) for start, end in item["ranges"]]
            when, why, who = str(item["at"]), str(item["reason"]), str(item["by"])
            reason = check_reason(f"replay of erasure {item['index']}: {why}"[:MAX_REASON_CHARS])
        except (KeyError, TypeError, ValueError, EntryError) as exc:
            raise click.ClickException(f"{path}: a malformed erasure ({exc})") from None
        indexes = [i for start, end in ranges for i in range(start, end)]
        _check_same_log(ledger, tenant, ranges, when)
        outcome: ErasureOutcome = ledger.erasures.erase(tenant, indexes, reason, f"replay:{who}")
        total += outcome.erased
    click.echo(f"replayed {len(items)} erasures: {total} values erased again", err=True)


def _check_same_log(ledger: Ledger, tenant: Tenant, ranges: list[tuple[int, int]], at: str) -> None:
    """Refuse to replay over entries that cannot be the erased ones: an erased entry was
    received before its erasure, so one received later was appended after the restore."""
    for start, end in ranges:
        for stored in ledger.entries(tenant, start, end):
            if stored.received_at > at:
                raise click.ClickException(
                    f"entry {stored.index} was received after the erasure of it ({at}): this "
                    "log has diverged from the one the erasures were exported from; replay "
                    "right after restoring, before serving the copy"
                )


@click.group()
def erasures() -> None:
    """The erasures a log records."""


@erasures.command("export")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tenant", default="default", show_default=True)
@_remote_options
@ledger_options
def export_erasures(
    destination: Path,
    tenant: str,
    url: str | None,
    key: str | None,
    data_dir: Path,
    database_url: str | None,
) -> None:
    """Save every erasure the log records (indexes, when, why, by whom; never values) to
    DESTINATION, for `erase --replay` after restoring a backup."""
    if url is not None:
        if not key:
            raise click.UsageError("--url needs --key (an admin key)")
        with reaching(url), client(url, key) as http:
            response = http.get("/v1/erasures", params={"tenant": tenant})
        fail_on_error(response)
        body = response.json()
        origin, items = body["origin"], body["erasures"]
    else:
        with open_ledger(config_for(data_dir, database_url)) as ledger:
            found = ledger.tenant(tenant)
            origin = ledger.origin(found)
            items = [record_json(r) for r in ledger.erasures.index.records(found.id)]
    listing = {"format": ERASURES_FORMAT, "origin": origin, "erasures": items}
    with writing(destination):
        destination.write_text(json.dumps(listing, indent=1) + "\n", "utf-8")
    click.echo(f"saved {len(items)} erasures of {origin} to {destination}", err=True)
