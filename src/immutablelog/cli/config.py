"""``--config FILE``: the command line's options from a TOML file, one table per command.

.. code-block:: toml

    [serve]
    port = 8080
    data-dir = "/var/lib/immutablelog"

    [keys.create]
    tenant = "billing"

A value given on the command line wins, then the option's environment variable, then the
file, then the default (click's ``default_map``). Names are the options' long names, with
``-`` or ``_``; a name no command has is an error, so a typo never passes silently.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

CONFIG_ENV = "IMMUTABLELOG_CONFIG"


def load_config(command: click.Command, path: Path) -> dict[str, Any]:
    """The ``default_map`` for ``command`` from the TOML file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    return config_from_text(command, text, str(path))


def config_from_text(command: click.Command, text: str, source: str) -> dict[str, Any]:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{source} is not valid TOML: {exc}") from None
    return _defaults(command, table, source, [])


def _defaults(
    command: click.Command, table: dict[str, Any], source: str, where: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    subcommands = command.commands if isinstance(command, click.Group) else {}
    # An option's long name (``--json``, ``--data-dir``) -> its parameter (``as_json``, …).
    options = {
        opt.lstrip("-").replace("-", "_"): param.name
        for param in command.params
        if isinstance(param, click.Option) and param.name and param.expose_value
        for opt in param.opts
        if opt.startswith("--")
    }
    for key, value in table.items():
        name = options.get(key.replace("-", "_"))
        if key in subcommands and isinstance(value, dict):
            out[key] = _defaults(subcommands[key], value, source, [*where, key])
        elif name is not None and name != "help":
            out[name] = value
        else:
            setting = ".".join([*where, key])
            raise click.BadParameter(f"{source}: no command or option {setting!r}")
    return out


def config_option(func: Any) -> Any:
    """``--config FILE`` (``$IMMUTABLELOG_CONFIG``) on the command group."""

    def apply(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
        if value is not None:
            ctx.default_map = load_config(ctx.command, value)

    return click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=apply,
        help="A TOML file of option values, one table per command ([serve], [keys.create]…).",
    )(func)
