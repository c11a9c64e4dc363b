"""The ``immutablelog`` command group and its subcommands."""

from __future__ import annotations

import click

from immutablelog import __version__
from immutablelog.cli.backup import backup
from immutablelog.cli.config import config_option
from immutablelog.cli.demo import demo
from immutablelog.cli.erase import erase, erasures
from immutablelog.cli.export import export
from immutablelog.cli.keys import keys
from immutablelog.cli.log_key import log_key
from immutablelog.cli.serve import serve
from immutablelog.cli.tail import tail
from immutablelog.cli.tenants import tenants
from immutablelog.cli.tiles import tiles
from immutablelog.cli.verify import prove, verify
from immutablelog.cli.viewer_links import viewer_links
from immutablelog.cli.witness import witness


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="immutablelog")
@config_option
def cli() -> None:
    """ImmutableLog: a tamper-evident audit log you run yourself."""


cli.add_command(serve)
cli.add_command(tenants)
cli.add_command(keys)
cli.add_command(log_key)
cli.add_command(viewer_links)
cli.add_command(verify)
cli.add_command(prove)
cli.add_command(export)
cli.add_command(tail)
cli.add_command(backup)
cli.add_command(demo)
cli.add_command(tiles)
cli.add_command(witness)
cli.add_command(erase)
cli.add_command(erasures)
