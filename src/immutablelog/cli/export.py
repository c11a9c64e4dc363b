"""``immutablelog export``: download the log as a verifiable bundle or CSV."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TransferSpeedColumn,
)

from immutablelog._counted import counted
from immutablelog.cli.errors import reaching, writing
from immutablelog.cli.remote import client, fail_on_error, server_options


@click.command()
@server_options
@click.option(
    "--format",
    "kind",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="jsonl: a bundle `verify --bundle` checks offline.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the export ('-' for standard output).",
)
def export(url: str, key: str, kind: str, out: Path) -> None:
    """Stream the whole signed log to a file, in constant memory."""
    to_stdout = str(out) == "-"
    with (
        reaching(url),
        writing(out),
        client(url, key) as http,
        http.stream("GET", "/v1/export", params={"format": kind}) as response,
    ):
        if response.status_code >= 400:
            response.read()
            fail_on_error(response)
        size = int(response.headers.get("x-tree-size", "0"))
        if to_stdout:
            stdout = sys.stdout.buffer
            for chunk in response.iter_bytes():
                stdout.write(chunk)
            return
        partial = out.with_name(out.name + ".partial")
        columns: list[ProgressColumn] = [
            TextColumn("exporting"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
        ]
        with partial.open("wb") as file, Progress(*columns, transient=True) as progress:
            task = progress.add_task("export", total=None)
            for chunk in response.iter_bytes():
                file.write(chunk)
                progress.update(task, advance=len(chunk))
        partial.replace(out)  # never leave a truncated export under the final name
    click.echo(f"exported {counted(size, 'entry', 'entries')} to {out}", err=True)
