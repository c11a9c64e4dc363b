"""Failures a user causes with an argument (a server that does not answer, a file that cannot
be written) as a one-line error naming what failed, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import httpx


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Requests to the server at ``url``: a network failure names the server."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writing ``path`` (or a file beside it): a missing directory, no permission or a full
    disk names the file."""
    try:
        yield
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
