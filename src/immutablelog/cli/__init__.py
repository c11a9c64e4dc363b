"""The ``immutablelog`` command line: one module per command group."""

from __future__ import annotations

import click

from immutablelog import __version__
from immutablelog.cli.demo import demo
from immutablelog.cli.export import export
from immutablelog.cli.keys import keys
from immutablelog.cli.serve import serve
from immutablelog.cli.tail import tail
from immutablelog.cli.tenants import tenants
from immutablelog.cli.verify import prove, verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="immutablelog")
def main() -> None:
    """ImmutableLog: a tamper-evident audit log you run yourself."""


main.add_command(serve)
main.add_command(tenants)
main.add_command(keys)
main.add_command(verify)
main.add_command(prove)
main.add_command(export)
main.add_command(tail)
main.add_command(demo)

__all__ = ["main"]
