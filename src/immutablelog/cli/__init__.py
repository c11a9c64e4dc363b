"""The ``immutablelog`` command line: one module per command group.

The command group is imported only inside :func:`main`, so that an install without the
``cli`` extra (the SDK alone) answers with the extra to install rather than a traceback.
"""

from __future__ import annotations

import sys

from immutablelog._extras import missing_extra_hint


def main() -> None:
    """The console script: run the command group, turning a missing extra into one line."""
    try:
        from immutablelog.cli.commands import cli

        cli()
    except ModuleNotFoundError as exc:
        hint = missing_extra_hint(exc)
        if hint is None:
            raise
        print(f"Error: {hint}", file=sys.stderr)
        sys.exit(1)


__all__ = ["main"]
