"""Options and an HTTP client for commands that talk to a running server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx

F = TypeVar("F", bound=Callable[..., Any])


def server_options(func: F) -> F:
    """``--url`` and ``--key`` (a read key), defaulting to their environment variables."""
    func = click.option(
        "--key",
        envvar="IMMUTABLELOG_READ_KEY",
        show_envvar=True,
        required=True,
        help="An API key with the read scope.",
    )(func)
    func = click.option(
        "--url",
        envvar="IMMUTABLELOG_URL",
        show_envvar=True,
        default="http://127.0.0.1:8080",
        show_default=True,
        help="The ImmutableLog server.",
    )(func)
    return func


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def fail_on_error(response: httpx.Response) -> None:
    """Turn an error answer into a clean command-line error with the server's message."""
    if response.status_code < 400:
        return
    try:
        message = response.json().get("message", response.text)
    except ValueError:
        message = response.text[:200]
    raise click.ClickException(f"server answered {response.status_code}: {message}")
