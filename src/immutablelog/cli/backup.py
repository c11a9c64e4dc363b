"""``immutablelog backup``: a consistent copy of a SQLite ledger, taken while the server runs.

SQLite's online backup API copies the database as of one moment (the copy holds exactly the
commits made before it began, never half of one), while the server goes on writing. The copy
is checked (``PRAGMA integrity_check``) before the command reports success. The search file
is derived and not copied; the signing key is a secret kept apart, and not copied either.
PostgreSQL ledgers are backed up with PostgreSQL's own tools (``pg_dump``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click

from immutablelog.cli.errors import writing
from immutablelog.cli.options import ledger_options


@click.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@ledger_options
def backup(destination: Path, data_dir: Path, database_url: str | None) -> None:
    """Copy the ledger (DATA_DIR/ledger.db) to DESTINATION, consistently, while it is in use."""
    if database_url:
        raise click.ClickException(
            "backup copies a SQLite ledger; back up PostgreSQL with pg_dump or its base backups"
        )
    source_path = data_dir / "ledger.db"
    if not source_path.is_file():
        raise click.ClickException(f"no ledger at {source_path}")
    if destination.exists():
        raise click.ClickException(f"{destination} exists; backup never overwrites a file")
    partial = destination.with_name(destination.name + ".partial")
    with writing(destination):
        partial.unlink(missing_ok=True)
        partial.touch(mode=0o600)  # the log's content is as private as the ledger itself
    source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)  # one step: a snapshot of one moment
            (verdict,) = target.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise click.ClickException(f"the copy failed its integrity check: {verdict}")
        finally:
            target.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise click.ClickException(f"cannot back up {source_path}: {exc}") from None
    finally:
        source.close()
    partial.replace(destination)
    click.echo(
        f"backed up {source_path} to {destination} ({destination.stat().st_size} bytes). "
        "The signing key (log-signing.key) is not in it: keep a copy of it apart.",
        err=True,
    )
