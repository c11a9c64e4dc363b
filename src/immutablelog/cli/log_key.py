"""``immutablelog log-key``: the log's signing keys, and rotating them without breaking proofs."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import click

from immutablelog.checkpoint import NoteError, Verifier
from immutablelog.cli.keys import columns, minute
from immutablelog.cli.options import config_for, ledger_options, open_ledger
from immutablelog.entry import timestamp
from immutablelog.ledger.key_history import signing_keys
from immutablelog.ledger.ledger import MIN_TRANSITION

_DURATION = re.compile(r"([0-9]{1,7})([smhd])\Z", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TRANSITION = timedelta(days=366)


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    match = _DURATION.match(value)
    if match is None:
        raise click.BadParameter("give a number and a unit: s, m, h or d (e.g. 7d, 12h)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_TRANSITION.total_seconds():
        raise click.BadParameter(f"at most {MAX_TRANSITION.days} days")
    if seconds < MIN_TRANSITION.total_seconds():
        raise click.BadParameter("at least 1m, so that verifiers and witnesses see both keys")
    return timedelta(seconds=seconds)


def _verifier_key(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        Verifier(value.strip())
    except NoteError as exc:
        raise click.BadParameter(f"not a log verifier key: {exc}") from None
    return value.strip()


@click.group("log-key")
def log_key() -> None:
    """The log's signing keys: list them, make a new one, rotate to it."""


@log_key.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@ledger_options
def list_(as_json: bool, data_dir: Path, database_url: str | None) -> None:
    """The log's keys, oldest first: when each began and stops signing, and whether this
    host holds it."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        history = ledger.log_keys()
        now = timestamp()
        signing = {key.key for key in signing_keys(history, now)}
        held = {key.key: ledger.keyring.signer(key.key) is not None for key in history}
    if as_json:
        for key in history:
            click.echo(
                json.dumps(
                    {
                        "key": key.key,
                        "added_at": key.added_at,
                        "retired_at": key.retired_at,
                        "signing": key.key in signing,
                        "held_here": held[key.key],
                    }
                )
            )
        return
    rows = [
        [
            key.key,
            minute(key.added_at),
            minute(key.retired_at),
            "yes" if key.key in signing else "no",
            "yes" if held[key.key] else "no",
        ]
        for key in history
    ]
    for line in columns(["KEY", "ADDED", "RETIRES", "SIGNING", "HELD HERE"], rows):
        click.echo(line)


@log_key.command("generate")
@ledger_options
def generate(data_dir: Path, database_url: str | None) -> None:
    """Make a new key for this log in this host's key directory and print its verifier key.

    Nothing signs with it yet: copy the file to every other host's key directory, then
    run ``log-key rotate`` with the printed key.
    """
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        signer, path = ledger.keyring.generate()
    click.echo(signer.verifier_key())
    click.echo(
        f"wrote {path}; copy it to the key directory of every host that serves this log, "
        "then run: immutablelog log-key rotate KEY",
        err=True,
    )


@log_key.command("rotate")
@click.argument("new_key", required=False, callback=_verifier_key)
@click.option(
    "--transition",
    default="7d",
    show_default=True,
    callback=_duration,
    help="How long the old and the new key both sign (s, m, h or d; at least 1m).",
)
@ledger_options
def rotate(
    new_key: str | None, transition: timedelta, data_dir: Path, database_url: str | None
) -> None:
    """Start signing with NEW_KEY beside the current key, which retires after --transition.

    NEW_KEY is a verifier key made by ``log-key generate`` (its file must be in the key
    directory of every host); without it a new key is made here, which suits a log served
    by this host alone. The rotation is recorded in every tenant's log.
    """
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        if new_key is None:
            if len(signing_keys(ledger.log_keys(), timestamp())) > 1:
                ledger.rotate_log_key("", transition)  # refused: a rotation is under way
            signer, path = ledger.keyring.generate()
            new_key = signer.verifier_key()
            click.echo(f"made a new key in {path}", err=True)
        rotation = ledger.rotate_log_key(new_key, transition)
    click.echo(rotation.new_key)
    click.echo(
        f"signing with {rotation.old_key} and {rotation.new_key} until "
        f"{rotation.old_key_retires_at}; then with {rotation.new_key} alone. Give the new key "
        "to the log's verifiers and witnesses now",
        err=True,
    )


@log_key.command("finish")
@ledger_options
def finish(data_dir: Path, database_url: str | None) -> None:
    """End the rotation under way now: from the next checkpoint only the new key signs."""
    with open_ledger(config_for(data_dir, database_url)) as ledger:
        rotation = ledger.finish_rotation()
    click.echo(f"{rotation.old_key} retired at {rotation.old_key_retires_at}")
