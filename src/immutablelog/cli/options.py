"""Options shared by every command that opens a ledger."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from immutablelog.ledger import (
    SIGNING_KEY_ENV,
    Ledger,
    LedgerConfig,
    LedgerError,
    StorageError,
)

F = TypeVar("F", bound=Callable[..., Any])


def ledger_options(func: F) -> F:
    """``--data-dir`` and ``--database-url``, defaulting to their environment variables."""
    func = click.option(
        "--database-url",
        envvar="IMMUTABLELOG_DATABASE_URL",
        show_envvar=True,
        default=None,
        help="PostgreSQL URL; without it the SQLite file in --data-dir is used.",
    )(func)
    func = click.option(
        "--data-dir",
        envvar="IMMUTABLELOG_DATA_DIR",
        show_envvar=True,
        default="immutablelog-data",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Where the ledger and its signing key live.",
    )(func)
    return func


def config_for(data_dir: Path, database_url: str | None, **more: Any) -> LedgerConfig:
    # Every local command signs (tenants and keys are recorded in the log), so every one
    # honours the key file that `serve --signing-key` reads from the environment too.
    if more.get("signing_key_file") is None and os.environ.get(SIGNING_KEY_ENV):
        more["signing_key_file"] = Path(os.environ[SIGNING_KEY_ENV])
    return LedgerConfig(data_dir=data_dir, database_url=database_url or None, **more)


@contextmanager
def open_ledger(config: LedgerConfig) -> Iterator[Ledger]:
    """Open the ledger, turning its refusals into clean command-line errors."""
    try:
        ledger = Ledger.open(config)
    except (LedgerError, StorageError, ValueError, OSError) as exc:
        raise click.ClickException(f"cannot open the ledger: {exc}") from None
    try:
        yield ledger
    except (LedgerError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        ledger.close()
